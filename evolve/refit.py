"""A law re-fitted on the selection folds (evolve.selection, step 2): its per-observation
errors there, the parameters of every fit, and what its fit on all train rows does beyond
the data (evolve.extrapolation), all through the run's sandbox."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from evolve.extrapolation import failure_words, probe_paths, warnings_of
from evolve.records import ProgramRecord
from evolve.scoring.scorer import group_jobs
from evolve.status import Status
from evolve.tasks import Task


def fold_row_errors(predictions: list[np.ndarray], truths: list[np.ndarray],
                    replicates: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per held-out observation, its share of the validation NMSE (weighted so the mean over all
    observations is the fold-mean NMSE the archive ranks by), and the NMSE of each fold.

    An observation is a row, or, with `replicates` (per fold, a label per row: Rows.replicate_labels),
    the rows of one fold at the same inputs taken together. Why: replicates share the law's
    error at their inputs (a law predicts them all alike, and they differ only by the run's
    noise), so counting three replicates as three independent rows would shrink the standard
    errors below (gap_and_noise) by up to sqrt(3): the pseudo-replication a cluster-robust
    standard error corrects. With no replicates (every input distinct) nothing changes: the
    paired standard error is then the per-row one exactly. With replicates it is the
    cluster-robust one: each set's value is the mean m plus n_sets/n_rows times its rows'
    summed deviation from m, so the mean is unchanged and the paired spread of two laws'
    values is that of their per-set summed residuals (the CR0 estimator with the G/(G−1)
    correction)."""
    rows, labels, per_fold = [], [], []
    total = sum(len(t) for t in truths)
    for k, (prediction, truth) in enumerate(zip(predictions, truths)):
        truth = truth.reshape(len(truth), -1)
        prediction = np.asarray(prediction, dtype=float).reshape(truth.shape)
        var = np.var(truth, axis=0)
        norm = np.where(var > 1e-9, var, 1.0)  # as the official metric: a tiny normaliser is left out
        err = np.mean((prediction - truth) ** 2 / norm, axis=1)
        per_fold.append(float(np.mean(err)))
        rows.append(err * total / (len(err) * len(truths)))
        own = np.arange(len(err)) if replicates is None else np.unique(replicates[k], return_inverse=True)[1]
        labels.append(own + (labels[-1].max() + 1 if labels else 0))
    row_errors, label = np.concatenate(rows), np.concatenate(labels)
    mean = float(np.mean(row_errors))
    sums, sizes = np.bincount(label, weights=row_errors), np.bincount(label)
    return mean + len(sums) / len(row_errors) * (sums - sizes * mean), np.asarray(per_fold)


class Refit(NamedTuple):
    """A law re-fitted on the selection folds: its errors there, and the parameters of every
    fit (each fold's, then the fit on all train rows when asked for)."""

    errors: np.ndarray  # per observation
    fold_errors: np.ndarray
    params: tuple[dict, ...] = ()
    beyond: tuple[str, ...] = ()  # what the fit on all train rows does beyond the data against train (evolve.extrapolation)


def held_out_errors(run, record: ProgramRecord, task: Task, folds: list | None = None, all_train: bool = False) -> Refit | None:
    """Re-fit a law on each fold (the task's validation folds unless given; through
    `run(code, jobs, task) -> RunReport`, the scorer's sandbox) and return its
    per-observation and per-fold errors; None on failure. `all_train` also fits it on all
    train rows, the fit `best.py`, the API and export use, for its parameters and for what
    it predicts beyond the data (`Refit.beyond`; one sandbox run for both, and the plain fit
    again should the paths beyond fail it)."""
    predictions, truths, replicates, params = [], [], [], []
    for fit_rows, score_rows in folds if folds is not None else task.validation_folds():
        if not len(score_rows):
            return None
        jobs, truth = group_jobs(fit_rows, score_rows)
        replicates.append(score_rows.replicate_labels())
        report = run(record.code, jobs, task)
        if report.status != Status.OK:
            return None
        try:
            predictions.append(np.concatenate([report.predictions[g] for g in sorted(report.predictions)]))
        except (KeyError, ValueError):
            return None
        truths.append(truth)
        params.append(report.params)
        if predictions[-1].size != truth.size or not np.all(np.isfinite(predictions[-1])):
            return None
    beyond: list[str] = []
    if all_train:
        jobs, _ = group_jobs(task.train, task.train)
        paths = probe_paths(task)
        asked = [dataclasses.replace(job, X_predict=paths[job.group][0] if job.group in paths else job.X_predict[:1]) for job in jobs]
        report = run(record.code, asked, task)
        if report.status == Status.OK:
            beyond = warnings_of(task, report.predictions, [p for _, probes in paths.values() for p in probes])
        elif paths:
            beyond = [failure_words(report.status)]
            report = run(record.code, [dataclasses.replace(job, X_predict=job.X_predict[:1]) for job in jobs], task)
        if report.status == Status.OK:
            params.append(report.params)
    return Refit(*fold_row_errors(predictions, truths, replicates), tuple(params), tuple(beyond))



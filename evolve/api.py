"""The Python API: run, open and use a law from a notebook.

    import evolve
    run = evolve.run("sft_scaling_law", iterations=100, seed=0, run_dir="runs/sft", quiet=True)
    run = evolve.open_run("runs/sft")          # read-only
    run.programs()                              # a pandas DataFrame, one row per program
    law = run.best.fit()                        # refit each group on all its train rows
    law.predict(X, group); law.interval(X, group, level=0.9)
    law.sympy(group); law.latex(group); law.export("law.py"); law.optimal(compute=1e22, group=g)

A law is candidate code written by a model, so every fit and prediction here runs in the
same sandbox as scoring (`trusted=True` runs it in this process instead, for code you wrote
yourself). Nothing here writes to a run's archive.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from evolve.allocation import optimal_allocation, size_and_data_features  # noqa: F401 - size_and_data_features is part of the API
from evolve.config import ScorerConfig, run_config_from_dict
from evolve.extrapolation import extrapolation_warnings
from evolve.errors import IntervalWarning, LawError
from evolve.intervals import MIN_RESAMPLES, calibration_folds, calibration_key, calibration_scores, fit_many, held_out_fits, load_scores, multipliers, refit_limit, save_scores, within_observed_sign
from evolve.loop import run_evolution
from evolve.program import code_key
from evolve.records import ProgramRecord
from evolve.scoring.in_sandbox import GroupJob, RunReport
from evolve.warm_scorer import close_scorers, shared_scorer  # noqa: F401 - part of the API
from evolve.status import Status
from evolve.store.rundir import open_read_only, returned_law, run_task
from evolve.tasks import Task
from evolve.text import name_some

BOOTSTRAP_RESAMPLES = 30
CACHE_FOLDER = "cache"  # in a run's folder: interval calibrations, safe to delete
def rows_needed(level: float) -> int:
    """The fewest calibration scores m with ⌈(m+1)·level⌉ ≤ m (as conformal_multiplier
    counts), found near level/(1 − level) rather than by counting up to it."""
    start = max(1, math.floor(level / (1 - level)) - 2)
    return next(m for m in itertools.count(start) if math.ceil((m + 1) * level) <= m)


def run(task: str, iterations: int = 50, seed: int | None = None, run_dir: str | Path | None = None,
        quiet: bool = True, **settings: Any) -> "Run":
    """Evolve laws for `task`, the same as `evolve run` (settings as in a TOML file:
    e.g. proposer="offline", archive={"islands": 2}, scorer={"workers": 2})."""
    data = {"task": str(task), "iterations": iterations, "seed": seed, **settings}
    if run_dir is not None:
        data["run_dir"] = str(run_dir)
    progress = None
    if not quiet:
        from evolve.cli.progress import RunProgress

        progress = RunProgress()
    summary = run_evolution(run_config_from_dict({k: v for k, v in data.items() if v is not None}), progress=progress)
    return open_run(summary.run_dir)


def open_run(path: str | Path) -> "Run":
    """A finished (or running) run, read-only."""
    with open_read_only(path) as archive:
        task = run_task(archive)
        records = archive.programs(order="id")
        scorer_settings = (archive.get_meta("config") or {}).get("scorer", {})
        returned = returned_law(archive) if archive.get_meta("selection") else None
    return Run(Path(path), task, records, scorer_settings, returned.id if returned is not None else None)


@dataclasses.dataclass
class Run:
    path: Path
    task: Task
    records: list[ProgramRecord]
    scorer_settings: dict
    returned_id: int | None = None  # the law the run returned (best.py), when it chose one

    def programs(self, formulas: bool | str = "returned"):
        """Every program as a pandas DataFrame (failures included), in id order.

        `formula` is the shown formula (as `archive show` and the report show it: first group,
        fitted constants in, checked, rounded): by default of the law the run returned (its
        best.py; one trace in the sandbox, seconds), with `formulas=True` of every program
        (seconds each), with False of none; None where not traced or not recoverable.
        `description` is what the proposer said the law is (the offline grammar's own
        one-line form), unchecked."""
        import pandas as pd

        if not (formulas is True or formulas is False or formulas == "returned"):
            raise LawError(f"formulas must be True, False or 'returned', not {formulas!r}")
        shown = {}
        if formulas:
            from evolve.report.formula import formulas_of_records

            traced = [r for r in self.records if r.ok and (formulas is True or r.id == self.returned_id)]
            shown = formulas_of_records(traced, self.task) if traced else {}
        rows = []
        for r in self.records:
            rows.append({
                "id": r.id, "iteration": r.iteration, "island": r.island, "parent_id": r.parent_id,
                "proposer": r.proposer, "model": r.model, "status": str(r.validation.status),
                "n_params": r.n_params, "val_r2": r.validation.metrics.r2 if r.ok else None,
                "test_r2": r.test.metrics.r2 if r.test is not None and r.test.ok else None,
                "complexity": r.complexity, "explanation": r.explanation,
                "formula": "; ".join(shown[r.id].text) if shown.get(r.id) else None,
                "description": r.extra.get("law"), "key": code_key(r.code),
            })
        return pd.DataFrame(rows)

    def test_by_group(self, program_id: int | None = None):
        """Per group, how a program (default: the law the run returned) did on test, as a
        pandas DataFrame, worst first: rows, mean and largest |error|/|y|, and the group's
        own R² (None below 3 rows). Empty for a program not scored on test (only the run's
        top laws and its seeds are, when it ends). For reporting: nothing chose on it."""
        import pandas as pd

        ident = self.returned_id if program_id is None else program_id
        record = self.law(ident).record if ident is not None else self.best_by_validation.record
        scores = record.test.by_group if record.test is not None else {}
        frame = pd.DataFrame([{"group": g, **values} for g, values in scores.items()],
                             columns=["group", "rows", "r2", "mean_relative_error", "max_relative_error"])
        return frame.sort_values("mean_relative_error", ascending=False, ignore_index=True)

    @property
    def best(self) -> "Law":
        """The law the run returned, the one in its best.py: chosen from train alone by
        evolve.selection when the run ended (validation with a margin for luck, fewer
        parameters within noise, cancelling coefficients refused; test is never read). A
        run still going, or stopped before choosing, gives `best_by_validation`."""
        if self.returned_id is not None:
            return self.law(self.returned_id)
        return self.best_by_validation

    @property
    def best_by_validation(self) -> "Law":
        """The program with the highest validation R², with no margin for luck."""
        ok = [r for r in self.records if r.ok]
        if not ok:
            raise LawError(f"{self.path}: no program scored")
        return self.law(max(ok, key=lambda r: (r.r2, -(r.id or 0))).id)

    def __repr__(self) -> str:
        scored = sum(r.ok for r in self.records)
        return f"<evolve.Run {str(self.path)!r}: task {self.task.name}, {len(self.records)} programs ({scored} scored), law {self.returned_id}>"

    def law(self, program_id: int) -> "Law":
        found = [r for r in self.records if r.id == program_id]
        if not found:
            raise LawError(f"no program {program_id} in {self.path}")
        return Law(found[0], self.task, ScorerConfig(workers=2, timeout_s=float(self.scorer_settings.get("timeout_s", 60.0)),
                                                     memory_mb=int(self.scorer_settings.get("memory_mb", 4096))),
                   run_name=self.path.resolve().name, cache_dir=self.path / CACHE_FOLDER)


@dataclasses.dataclass
class Law:
    """One program of a run, usable as a law: fit, predict, intervals, formulas, export."""

    record: ProgramRecord
    task: Task
    scorer_config: ScorerConfig = ScorerConfig(workers=1)
    trusted: bool = False
    params: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    run_name: str = ""  # the run's folder name, for an exported file's header
    cache_dir: Path | None = None  # where interval calibrations are kept between sessions (in the run's folder)
    _scores: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)  # resamples -> (grown, base) calibration scores
    _held_out: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)  # resamples -> the refits they come from
    _formulas: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)  # shown formula by group
    _failed_batches: int = dataclasses.field(default=0, init=False, repr=False, compare=False)  # sandbox batches that failed

    def __repr__(self) -> str:
        fitted = f", fitted on {len(self.params)} group(s)" if self.params else ""
        where = f" of run {self.run_name!r}" if self.run_name else ""
        return f"<evolve.Law program {self.record.id}{where}: {self.record.n_params} parameters per group, validation R² {self.record.r2:.4f}{fitted}>"

    @property
    def code(self) -> str:
        return self.record.code

    @property
    def id(self) -> int | None:
        return self.record.id

    @property
    def groups(self) -> list[str]:
        """The task's groups, each fitted on its own train rows."""
        return self.task.train.group_names()

    # ---------------------------------------------------------------- running the program

    def _run(self, jobs: list[GroupJob], timeout_s: float | None = None) -> RunReport:
        """The sandbox's report of the jobs (predictions and fitted parameters per job)."""
        scorer = shared_scorer(dataclasses.replace(self.scorer_config, isolate=not self.trusted))
        report = scorer.run(self.code, jobs, self.task, timeout_s)
        if report.status != Status.OK:
            raise LawError(f"program {self.record.id}: {report.status}: {report.message.strip().splitlines()[-1] if report.message.strip() else ''}")
        return report

    def _group_rows(self, group: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.task.train.groups == group
        if not mask.any():
            check_groups(self.task, [group])
        return self.task.train.X[mask], self.task.train.y[mask]

    def _as_matrix(self, X) -> np.ndarray:
        if hasattr(X, "columns"):  # a DataFrame: take the task's feature columns by name
            missing = [f for f in self.task.features if f not in X.columns]
            if missing:
                raise LawError(f"missing feature column(s): {', '.join(missing)}")
            X = X[list(self.task.features)].to_numpy(dtype=float)
        X = np.atleast_2d(np.asarray(X, dtype=float))
        if X.shape[1] != len(self.task.features):
            raise LawError(f"X has {X.shape[1]} columns; the task's features are {', '.join(self.task.features)}")
        if not np.isfinite(X).all():
            raise LawError("X has values that are not finite")
        return X

    def _shape(self, predictions: np.ndarray) -> np.ndarray:
        predictions = np.asarray(predictions, dtype=float)
        return predictions[:, 0] if predictions.ndim == 2 and predictions.shape[1] == 1 else predictions

    # ---------------------------------------------------------------- the API

    def fit(self) -> "Law":
        """Fit each group on all its train rows (in the sandbox); `params` holds the result."""
        jobs = []
        for g in self.task.train.group_names():
            X_fit, y_fit = self._group_rows(g)
            jobs.append(GroupJob(g, X_fit, y_fit, X_fit[:1]))
        params = {g: np.asarray(p, dtype=float) for g, p in self._run(jobs).params.items() if p is not None}
        return dataclasses.replace(self, params=params)

    def predict(self, X, group: str | Any = None) -> np.ndarray:
        """Predictions for rows X (array of shape (n, features) or a DataFrame with the
        feature columns) of `group` (a name, or one name per row; may be left out when the
        task has one group), the law fitted on each group's train rows: (n,) or (n, targets)."""
        X = self._as_matrix(X)
        names = self._row_groups(group, len(X))
        jobs = [GroupJob(g, *self._group_rows(g), X[names == g]) for g in sorted(set(names.tolist()))]
        predictions = self._run(jobs).predictions
        out = np.empty((len(X), len(self.task.targets)))
        for job in jobs:
            out[names == job.group] = np.asarray(predictions[job.group], dtype=float).reshape(len(job.X_predict), -1)
        return self._shape(out)

    def _one_group(self, group: str | None) -> str:
        """`group`, or the task's only group when it is left out (a task made from a CSV
        with no group column has one, `all_data`)."""
        if group is not None:
            return group
        names = sorted(set(self.task.train.groups.tolist()))
        if len(names) != 1:
            raise LawError(f"the task has {len(names)} groups: name one ({', '.join(map(str, names[:5]))}{', ...' if len(names) > 5 else ''})")
        return names[0]

    def _row_groups(self, group, n: int) -> np.ndarray:
        group = self._one_group(group) if group is None else group
        names = np.array([group] * n, dtype=object) if isinstance(group, str) else np.asarray(group, dtype=object)
        if names.shape != (n,):
            raise LawError(f"group must be one name or one name per row ({n} rows)")
        return names

    def interval(self, X, group: str | Any = None, level: float = 0.9, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[np.ndarray, np.ndarray]:
        """A prediction interval at `level` for rows X of `group` (a group name, or one name
        per row): (low, high), each shaped as `predict` returns.

        Method (evolve.intervals has the details, and how it was chosen): around the
        prediction of the law fitted on all the group's train rows, a half-width
        max(q₁·d(x)·(1 + reach), q₀·d(x)) with d(x) = sqrt(spread² + s²): the spread of
        `resamples` bootstrap refits (rows drawn with replacement) at x, the fit's residual
        standard deviation s (n − p degrees of freedom), and reach = how far x lies beyond
        the group's train rows in spans of them (0 inside; along every feature, in log space
        for positive ones), so the interval widens as x leaves the data even for a law the
        bootstrap cannot move. q₁ and q₀ are calibrated on train alone by split conformal
        over the task's rolling-origin validation folds: each fold fits on the smaller rows
        and predicts the held-out rows that extend the scale, d and reach are computed there
        the same way, and q₁ (q₀) is the ⌈(m+1)·level⌉-th smallest of the m scores
        |y − ŷ|/(d·(1 + reach)) (|y − ŷ|/d), per target, pooled over groups and folds. The
        q₀·d floor keeps the interval at a small reach from being narrower than validation's
        errors support when validation extrapolated further. Test rows are never read.
        Assumptions: held-out errors are exchangeable with the new points' (a law that
        extrapolates worse beyond train than validation showed inside it is not covered);
        distinct configurations within a group (each with its replicate rows, drawn
        together) are exchangeable for the bootstrap; refits the law fails on are
        left out; reach sees each feature's range, not products of features (a point inside
        every feature's range that extends N·D gets no growth). With too few calibration
        rows for the level (or none) the level is not guaranteed: the interval is then no
        narrower than normal errors of scale d would need, and an IntervalWarning says so (as
        it does when fewer refits than asked succeeded). A bound past zero on the side no train value of the target lies (a negative loss)
        is cut at zero, unless the law predicts that side itself (`within_observed_sign`).
        The calibration is kept on this Law object and, for a run's law, in the run's
        `cache/` folder, so later calls (and later sessions) cost only the group's own refits."""
        if not 0 < level < 1:
            raise LawError("level must be between 0 and 1")
        X = self._as_matrix(X)
        names = self._row_groups(group, len(X))
        problems = {g: (*self._group_rows(g), X[names == g]) for g in sorted(set(names.tolist()))}
        n_targets = len(self.task.targets)
        fitted = fit_many(problems, self._batch, resamples, n_targets, self.scorer_config.workers)
        missing = sorted(set(problems) - set(fitted))
        if missing:
            self._run([GroupJob(missing[0], *problems[missing[0]])])  # raises the program's own error
            raise LawError(f"program {self.record.id}: the fit of group {missing[0]!r} failed (it passed when tried again: a flaky "
                           "program or a busy machine); ask again")
        short = sorted((fit.refits, g) for g, fit in fitted.items() if fit.refits < resamples)
        if short:
            warnings.warn(IntervalWarning(
                f"group {short[0][1]!r}: the interval rests on {short[0][0]} of {resamples} bootstrap refits (the law failed on "
                f"resampled rows, and once it failed more often than not the rest were not asked"
                f"{'; too few to measure a spread, so noise only' if short[0][0] < MIN_RESAMPLES else ''})"), stacklevel=2)
        scores = self._score_arrays(resamples)
        calibrated = multipliers(*scores, level)
        if not calibrated.enough:
            warnings.warn(IntervalWarning(
                f"the {level:.10g} interval is calibrated on {len(scores[0])} validation row(s), fewer than the {rows_needed(level)} "
                "its level needs: its level is not guaranteed (it is no narrower than normal errors would need)"), stacklevel=2)
        low, high = np.empty((len(X), n_targets)), np.empty((len(X), n_targets))
        for g, fit in fitted.items():
            half = calibrated.half_width(fit)
            low[names == g], high[names == g] = within_observed_sign(fit.center - half, fit.center + half, fit.center, self.task.train.y)
        return self._shape(low), self._shape(high)

    def calibration_scores(self, resamples: int = BOOTSTRAP_RESAMPLES) -> np.ndarray:
        """The validation scores |y − ŷ|/(d·(1 + reach)) that calibrate `interval` (rows, targets)."""
        return self._score_arrays(resamples)[0]

    def _score_arrays(self, resamples: int) -> tuple[np.ndarray, np.ndarray]:
        """The calibration's scores with and without growth: computed once per law (minutes
        on a task with many groups), kept on this object and, for a run's law, in the run's
        folder under a key of everything they depend on, so the next session reads them."""
        if resamples not in self._scores:
            n_targets = len(self.task.targets)
            settings = (self.scorer_config.timeout_s, self.scorer_config.memory_mb, self.trusted)  # they decide which refits fail
            key = calibration_key(self.code, self.task, self.record.n_params or 0, resamples, settings) if self.cache_dir else ""
            path = self.cache_dir / f"interval-{key}.npz" if self.cache_dir else None
            pair = load_scores(path, n_targets) if path is not None else None
            if pair is None:
                failed_before = self._failed_batches
                held = self._calibration(resamples)
                pair = (calibration_scores(held, n_targets), calibration_scores(held, n_targets, base=True))
                if path is not None and self._failed_batches == failed_before:  # a calibration missing refits is not kept
                    save_scores(path, *pair)
            self._scores[resamples] = pair
        return self._scores[resamples]

    def _calibration(self, resamples: int) -> list:
        if resamples not in self._held_out:
            def counted(jobs: list[GroupJob]):
                result = self._batch(jobs)
                self._failed_batches += result is None  # a refit lost: this calibration is not kept on disk
                return result

            self._held_out[resamples] = held_out_fits(calibration_folds(self.task, self.record.n_params or 0), counted, resamples,
                                                      len(self.task.targets), self.scorer_config.workers)
        return self._held_out[resamples]

    def _batch(self, jobs: list[GroupJob]):
        """Predictions and parameters of a batch of jobs, or None when the program fails on it."""
        try:
            report = self._run(jobs, self._refit_limit())
        except LawError:
            return None
        return report.predictions, report.params

    def _refit_limit(self) -> float | None:
        """One batch of interval refits' time limit (evolve.intervals.refit_limit)."""
        return refit_limit(float(getattr(self.record.validation, "seconds", 0.0) or 0.0), float(self.scorer_config.timeout_s))

    def formula(self, group: str | None = None):
        """The law of `group` as shown everywhere (evolve.report.formula.ShownFormula): traced
        from the code, fitted constants in, checked against the program on the group's rows,
        idle guards dropped; `.expressions` keep every digit, `.text` / `.latex` are rounded."""
        from evolve.report.formula import FormulaCase, shown_formulas

        group = self._one_group(group)
        law = self if group in self.params else self.fit()
        if group not in law.params:
            self._group_rows(group)  # an unknown group is named as such
            raise LawError(f"no numeric fitted parameters for group {group!r}")
        case = FormulaCase(self.code, group, law.params[group].tolist(), self._group_rows(group)[0])
        cache_key = (group, tuple(case.params))
        if cache_key not in self._formulas:  # sympy, latex and export ask for the same one: trace once
            self._formulas[cache_key] = shown_formulas([case], self.task, self.scorer_config)[0]
        shown = self._formulas[cache_key]
        if shown is None:
            raise LawError(f"program {self.record.id}: its formula could not be recovered and checked")
        return shown

    def sympy(self, group: str | None = None):
        """The law as a sympy expression in the task's feature names with the group's fitted
        constants in, every digit kept (a list for several targets); checked against the
        program's own predictions on the group's rows, else a LawError. A name that is not a
        Python identifier becomes one (evolve.symbolic.symbol_names: 'N params' → N_params).
        The expression is parsed here from the text the bounded display work returned
        (evolve.report.bounded), under the same whitelist and bounds as every formula text;
        that work returns only texts it has parsed again within 2 s (`parses_quickly`)."""
        from evolve.formula_display import parse_checked

        try:
            expressions = [parse_checked(text, self.task.features, 0) for text in self.formula(group).expressions]
        except (ValueError, TypeError, SyntaxError) as exc:
            raise LawError(f"program {self.record.id}: its formula does not parse as arithmetic ({exc})") from None
        return expressions[0] if len(expressions) == 1 else expressions

    def latex(self, group: str | None = None):
        """The shown formula as LaTeX (numbers rounded for reading only; a list for several targets)."""
        latex = list(self.formula(group).latex)
        return latex[0] if len(latex) == 1 else latex

    def export(self, path: str | Path) -> Path:
        """A standalone program file: numpy and scipy only, no evolve import (the fitting
        helpers the law uses are copied in), with this law's fitted parameters and its
        formula (as `formula` shows it, for the first group) in a header."""
        from evolve.report.export import standalone_program

        path = Path(path)
        try:
            formula = self.formula(sorted(self.params)[0] if self.params else self.groups[0])
        except LawError:
            formula = None  # the file stands without it
        path.write_text(standalone_program(self.record, self.task, self.params or None, run_name=self.run_name, formula=formula))
        return path

    def extrapolation_warnings(self) -> list[str]:
        """What the law, fitted on each group's train rows, does beyond the data that goes
        against them (evolve.extrapolation): its trend reversed along a scale feature, a
        sign no train value has, no finite prediction; up to 100x the largest train value.
        Empty when it keeps them. A warning, never a fault of the law: check the law's
        physics before trusting such predictions."""
        scorer = shared_scorer(dataclasses.replace(self.scorer_config, isolate=not self.trusted))
        return extrapolation_warnings(lambda jobs: scorer.run(self.code, jobs, self.task), self.task)

    def optimal(self, compute: float, group: str | None = None, points: int = 241, size: str | None = None, data: str | None = None) -> dict[str, float]:
        """The compute-optimal model size and data under C ≈ 6·N·D: the (N, D) on that curve
        with the lowest predicted loss (first target), searched over tokens per parameter
        from 1/100 of the group's smallest train ratio to 100 times its largest (the lowest
        interior minimum; evolve.allocation says why). Applies to laws whose task has a
        model-size and a data feature (by name: params/N/model_size, tokens/D/data, or
        named by `size` and `data`, e.g. size="Model Size", data="Training Tokens"); other
        features are held at their values in the group's largest train run (by N·D), as in
        the report's iso-loss plot. `at_search_edge` (no interior minimum: the answer is an
        end of the range searched), `lower_at_edge` (the law falls lower towards an end: it
        extrapolates there), `within_data` (N and D inside the group's train rows) and
        `negative_loss` (below zero where every train value is not) say how far to trust it."""
        n_index, d_index = size_and_data_features(self.task.features, size, data)
        if not compute > 0:
            raise LawError("compute must be positive")
        group = self._one_group(group)
        X_fit, y_fit = self._group_rows(group)
        return optimal_allocation(lambda X: self.predict(X, group), compute, X_fit, y_fit.reshape(len(X_fit), -1)[:, 0],
                                  n_index, d_index, points)


def check_groups(task: Task, groups, where: str = "") -> None:
    """Refuse, in one line, groups the task's train rows do not have (`where`: a prefix
    naming the input they came from)."""
    unknown = sorted(set(groups) - set(task.train.group_names()))
    if unknown:
        word = "group" if len(unknown) == 1 else "groups"
        raise LawError(f"{where}unknown {word} {name_some([repr(g) for g in unknown], 5)} (the task's groups: {name_some(task.train.group_names())})")

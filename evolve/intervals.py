"""Prediction intervals of a law: bootstrap refits, calibrated by split conformal on the
task's validation folds (held-out extrapolation inside train).

The method, and why:
- The law is fitted on rows R and asked about points P. Its error at a point has two
  parts: how unsure the fit is there (parameter uncertainty, which grows as P leaves the
  range of R) and how far the data stray from any fit (noise and misspecification).
- The first is measured by refitting on bootstrap resamples of R (pairs bootstrap: rows
  drawn with replacement, so a resample may lack the largest rows and extrapolates further,
  as it should) and taking the spread of their predictions at P. The scale of a point is
  d(P) = sqrt(spread² + s²/n), with s the fit's residual standard deviation on R (n − p
  degrees of freedom) and n = |R|: s²/n, the standard error of the fit's level, is a floor
  for laws the bootstrap cannot move (fixed coefficients, a resample-proof fit).
  Why not spread² + s² (the textbook prediction variance): the calibration below fits on
  fewer rows than the final law. Both terms of d shrink as rows are added, as the error of
  an extrapolation does; a noise term s² that does not would carry the larger errors of the
  smaller validation fits over to the final law unchanged.
- How many scales d wide the interval must be is not assumed (no normal quantile): it is
  calibrated where the answer is known without touching test, on the task's validation
  folds. Each fold fits on the smaller rows of train and predicts the held-out rows that
  extend the scale, exactly what an interval beyond train is asked to do. Each held-out
  row gives a score |y − ŷ| / d; the interval's multiplier is the ⌈(m+1)·level⌉-th smallest
  of the m scores (split conformal, per target, pooled over groups and folds).
- Assumptions: held-out scores are exchangeable with the scores of the new points (the
  new points extrapolate about as far, in units of d, as validation did; d widens with the
  bootstrap spread when they go further); a resample the law fails on is left out.
  With fewer scores than the level needs (⌈(m+1)·level⌉ > m), the largest is used and the
  interval's level is not guaranteed; with no validation rows at all, errors are assumed
  normal with scale d.

Nothing here runs candidate code: `api.Law` hands in a function that runs the fits in the
sandbox. Resamples use a fixed seed per group, so an interval is the same on every call, whatever
other groups are asked about with it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from evolve.scoring.in_sandbox import GroupJob
from evolve.tasks import Rows

RESAMPLE_SEED = 0
MIN_RESAMPLES = 5  # fewer successful refits than this: no spread is measured (noise only)

# runs one batch of jobs (distinct groups) in the sandbox: {group: predictions}, params {group: list}, or None on failure
BatchRunner = Callable[[list[GroupJob]], "tuple[dict[str, np.ndarray], dict[str, list | None]] | None"]


@dataclass(frozen=True)
class Fitted:
    """One group fitted on some rows, asked about points: prediction, spread and noise scale."""

    center: np.ndarray  # (n, targets) prediction of the fit on all the rows
    spread: np.ndarray  # (n, targets) standard deviation of the bootstrap refits' predictions
    noise: np.ndarray  # (targets,) the fit's residual scale on its own rows
    n_fit: int  # rows the fit had

    def scale(self) -> np.ndarray:
        d = np.sqrt(self.spread**2 + self.noise[None, :] ** 2 / max(1, self.n_fit))
        floor = 1e-12 * np.maximum(np.abs(self.center), 1e-300)  # an exact fit: never divide by zero
        return np.maximum(d, floor)


def fit_many(problems: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], run_batch: BatchRunner, resamples: int,
             n_targets: int, threads: int = 1) -> dict[str, Fitted]:
    """Fit each group's (X_fit, y_fit) and its bootstrap resamples, predicting X_points.

    One sandbox batch per resample covers every group (groups are distinct in a batch, so
    a law-API program sees its own group names); a failed batch loses that resample only.
    Groups whose plain fit fails are missing from the result.
    """
    draws = {g: np.random.default_rng([RESAMPLE_SEED, zlib.crc32(g.encode())]) for g in problems}  # per group: the same
    center_jobs = [GroupJob(g, X, y, np.concatenate([P, X])) for g, (X, y, P) in problems.items()]
    batches = [center_jobs]
    for _ in range(max(0, int(resamples))):
        jobs = []
        for g, (X, y, P) in problems.items():
            index = draws[g].integers(0, len(X), len(X))
            jobs.append(GroupJob(g, X[index], y[index], P))
        batches.append(jobs)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(run_batch, batches))
    if results[0] is None:
        return {}
    centers, params = results[0]
    fitted = {}
    for g, (X, y, P) in problems.items():
        if g not in centers:
            continue
        both = np.asarray(centers[g], dtype=float).reshape(len(P) + len(X), n_targets)
        boots = [np.asarray(r[0][g], dtype=float).reshape(len(P), n_targets) for r in results[1:] if r is not None and g in r[0]]
        spread = np.std(np.stack(boots), axis=0, ddof=1) if len(boots) >= MIN_RESAMPLES else np.zeros((len(P), n_targets))
        n_params = len(params.get(g) or []) / max(1, n_targets)
        fitted[g] = Fitted(both[: len(P)], spread, noise_scale(both[len(P):], y.reshape(len(X), n_targets), n_params), len(X))
    return fitted


def noise_scale(predicted: np.ndarray, actual: np.ndarray, n_params: float) -> np.ndarray:
    """Residual standard deviation per target over n − p degrees of freedom (at least one)."""
    residual = predicted - actual
    dof = max(1.0, len(actual) - n_params)
    return np.sqrt(np.sum(residual**2, axis=0) / dof)


@dataclass(frozen=True)
class HeldOut:
    """One group's held-out rows of one validation fold, with the fold's fit there."""

    fold: int
    fitted: Fitted
    actual: np.ndarray  # (n, targets)

    def scores(self) -> np.ndarray:
        return np.abs(self.actual - self.fitted.center) / self.fitted.scale()


def held_out_fits(folds: list[tuple[Rows, Rows]], run_batch: BatchRunner, resamples: int, n_targets: int,
                  threads: int = 1) -> list[HeldOut]:
    """Every fold's fit (and bootstrap refits) on its fit rows, at its held-out rows, per group."""
    found = []
    for k, (fit_rows, held_rows) in enumerate(folds):
        problems = {}
        for g in held_rows.group_names():
            fit_mask, held_mask = fit_rows.groups == g, held_rows.groups == g
            if fit_mask.any() and held_mask.any():
                problems[g] = (fit_rows.X[fit_mask], fit_rows.y[fit_mask], held_rows.X[held_mask])
        for g, fitted in fit_many(problems, run_batch, resamples, n_targets, threads).items():
            found.append(HeldOut(k, fitted, held_rows.y[held_rows.groups == g].reshape(-1, n_targets)))
    return found


def calibration_scores(held_out: list[HeldOut], n_targets: int) -> np.ndarray:
    """|y − ŷ| / d of every held-out validation row (all groups, all folds): (m, targets)."""
    return np.concatenate([h.scores() for h in held_out]) if held_out else np.zeros((0, n_targets))


def conformal_multiplier(scores: np.ndarray, level: float) -> tuple[np.ndarray, bool]:
    """Per target, the ⌈(m+1)·level⌉-th smallest score; and whether m was enough for it
    (if not, the largest score, and the level is not guaranteed)."""
    m = len(scores)
    if m == 0:  # no validation rows to calibrate on: assume normal errors of scale d
        from scipy.stats import norm

        return np.full(scores.shape[1], float(norm.ppf(0.5 + level / 2))), False
    k = math.ceil((m + 1) * level)
    ordered = np.sort(scores, axis=0)
    return ordered[min(k, m) - 1], k <= m

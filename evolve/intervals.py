"""Prediction intervals of a law: bootstrap refits and residual noise, widened with the
distance beyond the fit rows, calibrated by split conformal on the task's rolling-origin
validation folds (held-out extrapolation inside train).

The method, and why:
- The law is fitted on rows R and asked about points P. Its error at a point has two
  parts: how unsure the fit is there (parameter uncertainty, which grows as P leaves the
  range of R) and how far the data stray from any fit (noise and misspecification).
- The first is measured by refitting on bootstrap resamples of R (pairs bootstrap: rows
  drawn with replacement, so a resample may lack the largest rows and extrapolates further,
  as it should) and taking the spread of their predictions at P; the second by s, the
  fit's residual standard deviation on R (n − p degrees of freedom). The scale of a point is
      d(P) = sqrt(spread² + s²) · (1 + reach(P)),
  the textbook prediction scale times a growth term: reach is how far P lies outside the
  box of R's features, in spans of R (0 inside; in log space for positive features;
  `extrapolation_reach`). Misspecification, which the bootstrap cannot see (a law with
  fixed exponents, or one that bends wrongly beyond the data), shows as errors that grow
  with distance; the growth term makes the interval widen beyond the data even for a law
  the bootstrap cannot move. Linear in reach is the simplest such growth; its rate is what
  the calibration below measures.
- How many scales d wide the interval must be is not assumed (no normal quantile): it is
  calibrated where the answer is known without touching test, on the task's validation
  folds. Each fold fits on the smaller rows of train and predicts the held-out rows that
  extend the scale, exactly what an interval beyond train is asked to do. Each held-out
  row gives a score |y − ŷ| / d (d and reach computed for that fold's fit); the interval's
  multiplier is the ⌈(m+1)·level⌉-th smallest of the m scores (split conformal, per
  target, pooled over groups and folds).
- How it was chosen (train only; the test table was not used): bench/interval_proxy.py
  cuts a pseudo-test from each task's train the way test is cut (train's largest rows
  along the axis test extends, test's share of the rows), calibrates on the rest's folds
  and measures pseudo-test coverage at levels 0.8 and 0.9 on all eight tasks, plus a
  nested check (calibrate on deeper folds, cover the first). Of the candidates
  (bench/results/interval_proxy.md: the previous sqrt(spread² + s²/n), with and without
  the growth term, the textbook scale, a noise proportional to ŷ for positive targets,
  noise only, relative error; on the task's folds or also the deeper cuts
  evolve.selection re-fits on), the rule fixed beforehand took, among those that widen
  with reach, the smallest pseudo-test plus nested error (mean |coverage − level|):
  this one, 0.110 + 0.046 (its ŷ-proportional-noise variant 0.119 + 0.044; the previous
  scale times (1 + reach) 0.129 + 0.084). The previous scale itself, sqrt(spread² + s²/n),
  did worse on both measures than the textbook sqrt(spread² + s²) (0.115 + 0.076 vs
  0.107 + 0.058): s²/n leaves out the noise a new point has however many rows the fit had.
  The deeper folds tied with the task's folds (0.110 + 0.046 both) at up to four times
  the refits (sft: 4 folds instead of 1), so the task's folds are used
  (`calibration_folds(deep=False)`).
- Assumptions: held-out scores are exchangeable with the scores of the new points (the
  error grows about linearly with reach, at the rate validation showed; a law that
  extrapolates worse beyond train than inside it, more than validation showed, is not
  covered); rows within a group are exchangeable for the bootstrap; a resample the law
  fails on is left out; reach is 0 along a feature the fit rows hold constant (no span
  to measure in), so a point that differs only there gets no growth. With fewer scores than the level needs (⌈(m+1)·level⌉ > m), the
  largest is used and the interval's level is not guaranteed; with no validation rows at
  all, errors are assumed normal with scale d.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from evolve.scoring.in_sandbox import GroupJob
from evolve.tasks import Rows, Task

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
    reach: np.ndarray | None = None  # (n,) how far each point lies beyond the fit rows (extrapolation_reach)
    noise_relative: np.ndarray | None = None  # (targets,) residual scale of (y − ŷ)/ŷ, NaN if not positive; a candidate bench/interval_proxy.py measures, not used by scale()

    def scale(self) -> np.ndarray:
        """d(x) = sqrt(spread² + s²) · (1 + reach): the interval's half-width in multiplier units."""
        reach = np.zeros(len(self.center)) if self.reach is None else self.reach
        d = np.sqrt(self.spread**2 + self.noise[None, :] ** 2) * (1.0 + reach[:, None])
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
        on_rows, actual = both[len(P):], y.reshape(len(X), n_targets)
        noise = noise_scale(on_rows, actual, n_params)
        relative = relative_noise_scale(on_rows, actual, n_params)
        fitted[g] = Fitted(both[: len(P)], spread, noise, len(X), extrapolation_reach(X, P), relative)
    return fitted


def relative_noise_scale(predicted: np.ndarray, actual: np.ndarray, n_params: float) -> np.ndarray:
    """Per target, the residual scale of the relative error (y − ŷ)/ŷ over n − p degrees of
    freedom; NaN for a target whose rows or fitted values are not all positive."""
    positive = (actual > 0).all(axis=0) & (predicted > 0).all(axis=0)
    ratio = (actual - predicted) / np.where(predicted > 0, predicted, 1.0)
    dof = max(1.0, len(actual) - n_params)
    return np.where(positive, np.sqrt(np.sum(ratio**2, axis=0) / dof), np.nan)


def extrapolation_reach(X_fit: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Per point, how far it lies outside the fit rows' box, in units of the box: the
    largest over features of the distance beyond [min, max] divided by max − min (in log
    space for a feature positive in both; features the fit rows hold constant are skipped).
    0 inside the box; 1 one span beyond it."""
    reach = np.zeros(len(P))
    for j in range(X_fit.shape[1]):
        a, b = X_fit[:, j], P[:, j]
        if (a > 0).all() and (b > 0).all():
            a, b = np.log(a), np.log(b)
        low, high = a.min(), a.max()
        if high - low <= 1e-12 * max(1.0, abs(high)):
            continue
        reach = np.maximum(reach, np.maximum(0.0, np.maximum(b - high, low - b)) / (high - low))
    return reach


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


def calibration_folds(task: Task, n_params: int, deep: bool = False) -> list[tuple[Rows, Rows]]:
    """The rolling-origin folds the interval is calibrated on: the task's validation folds,
    and with `deep` also the further cuts of the same rule selection re-fits on (while every
    group keeps half its train rows and enough to fit the law: evolve.selection.selection_folds;
    measured as a candidate, not used: see the module docstring). n_params: the law's
    parameter count over all targets."""
    if not deep:
        return task.validation_folds()
    from evolve.selection import selection_folds

    return selection_folds(task, n_params // max(1, len(task.targets)))

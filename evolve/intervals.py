"""Prediction intervals of a law: bootstrap refits and residual noise, widened with the
distance beyond the fit rows, calibrated by split conformal on the task's rolling-origin
validation folds (held-out extrapolation inside train), never narrower than the interval
calibrated without the widening.

The method, and why:
- The law is fitted on rows R and asked about points P. Its error at a point has two
  parts: how unsure the fit is there (parameter uncertainty, which grows as P leaves the
  range of R) and how far the data stray from any fit (noise and misspecification).
- The first is measured by refitting on bootstrap resamples of R (pairs bootstrap: rows
  drawn with replacement, so a resample may lack the largest rows and extrapolates further,
  as it should; rows at the same inputs, the replicates of one configuration, are drawn
  together as one unit, since they are one independent observation of where the law runs,
  and a row bootstrap would count them as several and understate the spread) and taking the spread of their predictions at P
  (their interquartile range in standard deviations, `robust_spread`: a few refits that
  diverge must not own it); the second by s, the
  fit's residual standard deviation on R (n − p degrees of freedom). The textbook
  prediction scale of a point is d(P) = sqrt(spread² + s²).
- Misspecification, which the bootstrap cannot see (a law with fixed exponents, or one
  that bends wrongly beyond the data), shows as errors that grow with distance, so a
  second scale grows: d(P)·(1 + reach(P)), reach being how far P lies outside the box of
  R's features in spans of R (0 inside; in log space for positive features;
  `extrapolation_reach`). Linear in reach is the simplest such growth.
- How many scales wide the interval must be is not assumed (no normal quantile): it is
  calibrated where the answer is known without touching test, on the task's validation
  folds. Each fold fits on the smaller rows of train and predicts the held-out rows that
  extend the scale, what an interval beyond train is asked to do. Each held-out row gives
  two scores, |y − ŷ| / (d·(1 + reach)) and |y − ŷ| / d (d and reach computed for that
  fold's fit); q₁ and q₀ are the ⌈(m+1)·level⌉-th smallest of the m scores of each
  (split conformal, per target, pooled over groups and folds), and the half-width is
      max(q₁·d·(1 + reach), q₀·d).
  Each term alone covers the validation rows at the level; their maximum covers at least
  that. The floor q₀·d matters where validation extrapolated further than the asked point:
  a growth rate calibrated at large reach (moe's validation predicts three model sizes
  from two: reach up to 5) divides q₁ by that reach and made the interval at a small
  reach narrower than validation's errors support; the floor never lets it be narrower
  than the interval calibrated with no growth at all. The growth term still widens it as
  the asked point goes further than validation did.
- How it was chosen (train only; the test table was not used): bench/interval_proxy.py
  cuts a pseudo-test from each task's train the way test is cut (train's largest rows
  along the axis test extends, test's share of the rows), calibrates on the rest's folds
  and measures pseudo-test coverage at levels 0.8 and 0.9 on all eight tasks. Of 42
  candidates (bench/results/interval_proxy.md: folds = the task's validation folds, one
  distinct scale at a time along the validation column, or both; reach in spans of the fit
  rows, of the group's train rows, or also along products of two positive features; growth
  none, linear, or linear with this floor; absolute or ŷ-proportional noise), the rule
  written before measuring took, among those that widen with reach, the smallest
  pseudo-test error (mean |coverage − level|) with ties (0.005) to the fewest refits and
  the simplest: this one, 0.106 (round 3's linear growth without the floor 0.112; the
  one-scale-at-a-time folds 0.125 at best; no growth at all 0.106, not eligible).
  Round 6 (after a new user's interval at 4× beyond the data grew with the resamples, two
  diverging refits owning the standard deviation) compared the refits' spread as their
  standard deviation, their interquartile range in standard deviations, and the standard
  deviation of the refits within 5 robust standard deviations of their median: on the same
  pseudo-test, error 0.110, 0.075 and 0.081 for the chosen candidate (domain_mixture 0.45 /
  0.51 → 0.68 / 0.82), so the interquartile range is used.
  Round 5 measured a further scale, the disagreement of the run's next four distinct laws
  fitted on the same rows (misspecification seen as laws that part beyond the data): not
  adopted by the rule written before it was measured (error 0.160 against 0.110): it is not
  exchangeable between validation folds that fit on one scale, where laws part widely,
  and the asked points (moe covered 0.30).
- Assumptions: held-out scores are exchangeable with the scores of the new points (a law
  that extrapolates worse beyond train than validation showed inside it is not covered);
  distinct configurations (each with its replicates) within a group are exchangeable for
  the bootstrap; a resample the law fails on is left out; reach is 0 along a feature the fit rows hold constant (no span to measure in),
  so a point that differs only there gets no growth, and a point inside the box feature by
  feature gets none even when it extends a product of them (N·D). With fewer scores than
  the level needs (⌈(m+1)·level⌉ > m, or none) the level is not guaranteed: the multiplier
  is then the largest score, and never less than normal errors of scale d need.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evolve.scoring.in_sandbox import GroupJob
from evolve.table import replicate_labels
from evolve.tasks import Rows, Task

RESAMPLE_SEED = 0
MIN_RESAMPLES = 5  # fewer successful refits than this: no spread is measured (noise only)
# after this many failed resample batches, more than have succeeded, the rest are not asked: a program that stalls on
# resampled rows (repeated rows reach only the bootstrap) cost every batch its whole time
# limit, 45 minutes per `predict --interval` at the default limit (attack round 4)
MAX_FAILED_RESAMPLES = 3

# runs one batch of jobs (distinct groups) in the sandbox: {group: predictions}, params {group: list}, or None on failure
BatchRunner = Callable[[list[GroupJob]], "tuple[dict[str, np.ndarray], dict[str, list | None]] | None"]


@dataclass(frozen=True)
class Fitted:
    """One group fitted on some rows, asked about points: prediction, spread and noise scale."""

    center: np.ndarray  # (n, targets) prediction of the fit on all the rows
    spread: np.ndarray  # (n, targets) spread of the bootstrap refits' predictions (robust_spread)
    noise: np.ndarray  # (targets,) the fit's residual scale on its own rows
    n_fit: int  # rows the fit had
    reach: np.ndarray | None = None  # (n,) how far each point lies beyond the fit rows (extrapolation_reach)
    noise_relative: np.ndarray | None = None  # (targets,) residual scale of (y − ŷ)/ŷ, NaN if not positive; a candidate bench/interval_proxy.py measures, not used by scale()
    refits: int = 0  # bootstrap refits that succeeded (of the resamples asked)

    def base(self) -> np.ndarray:
        """d(x) = sqrt(spread² + s²), the textbook prediction scale (no growth term)."""
        d = np.sqrt(self.spread**2 + self.noise[None, :] ** 2)
        floor = 1e-12 * np.maximum(np.abs(self.center), 1e-300)  # an exact fit: never divide by zero
        return np.maximum(d, floor)

    def scale(self) -> np.ndarray:
        """d(x) · (1 + reach): the scale that grows beyond the fit rows."""
        reach = np.zeros(len(self.center)) if self.reach is None else self.reach
        return self.base() * (1.0 + reach[:, None])


def fit_many(problems: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], run_batch: BatchRunner, resamples: int,
             n_targets: int, threads: int = 1) -> dict[str, Fitted]:
    """Fit each group's (X_fit, y_fit) and its bootstrap resamples, predicting X_points.

    One sandbox batch per resample covers every group (groups are distinct in a batch, so
    a law-API program sees its own group names); a failed batch loses that resample only, until more fail than succeed
    (`run_until_failing`).
    Groups whose plain fit fails are missing from the result.
    """
    draws = {g: np.random.default_rng([RESAMPLE_SEED, zlib.crc32(g.encode())]) for g in problems}  # per group: the same
    units = {g: replicate_sets(X) for g, (X, _, _) in problems.items()}
    center_jobs = [GroupJob(g, X, y, np.concatenate([P, X])) for g, (X, y, P) in problems.items()]
    batches = [center_jobs]
    for _ in range(max(0, int(resamples))):
        jobs = []
        for g, (X, y, P) in problems.items():
            picked = draws[g].integers(0, len(units[g]), len(units[g]))
            index = np.concatenate([units[g][i] for i in picked] or [np.zeros(0, dtype=int)])
            jobs.append(GroupJob(g, X[index], y[index], P))
        batches.append(jobs)
    results = run_until_failing(run_batch, batches, max(1, threads))
    if results[0] is None:
        return {}
    centers, params = results[0]
    fitted = {}
    for g, (X, y, P) in problems.items():
        if g not in centers:
            continue
        both = np.asarray(centers[g], dtype=float).reshape(len(P) + len(X), n_targets)
        boots = [np.asarray(r[0][g], dtype=float).reshape(len(P), n_targets) for r in results[1:] if r is not None and g in r[0]]
        spread = robust_spread(np.stack(boots)) if len(boots) >= MIN_RESAMPLES else np.zeros((len(P), n_targets))
        n_params = len(params.get(g) or []) / max(1, n_targets)
        on_rows, actual = both[len(P):], y.reshape(len(X), n_targets)
        noise = noise_scale(on_rows, actual, n_params)
        relative = relative_noise_scale(on_rows, actual, n_params)
        fitted[g] = Fitted(both[: len(P)], spread, noise, len(X), extrapolation_reach(X, P), relative, len(boots))
    return fitted


REFIT_LIMIT_FACTOR = 10.0
REFIT_LIMIT_FLOOR_S = 5.0


def refit_limit(scoring_seconds: float, run_limit_s: float) -> float | None:
    """The time limit of one batch of refits: REFIT_LIMIT_FACTOR times what scoring the law
    on validation took (the same fits, on as many rows), at least REFIT_LIMIT_FLOOR_S, at
    most the run's own limit; None (the run's limit) when the scoring time is not known.
    A law slow only on the bootstrap's repeated rows that still succeeded just before the
    run's limit made every refit wait it out (attack round 6: 2 min 17 s for one `predict
    --interval` at a 5 s limit, 136 s for 10 resamples at 20 s): each such refit now fails at
    this limit, and after a few the refits stop (`run_until_failing`)."""
    if scoring_seconds <= 0:
        return None
    return min(run_limit_s, max(REFIT_LIMIT_FLOOR_S, REFIT_LIMIT_FACTOR * scoring_seconds))


IQR_PER_SD = 1.3489795  # the interquartile range of a normal distribution, in standard deviations


def robust_spread(predictions: np.ndarray) -> np.ndarray:
    """The spread of the bootstrap refits' predictions (resamples, points, targets): their
    interquartile range in standard-deviation units (the standard deviation where they are
    normal). A few refits that diverge far from the data (a resample that drops the rows
    holding an exponent, landing a fit at −51 where the others say 2.1) would own a standard
    deviation, and more resamples would then draw more of them: a new user's interval at 4×
    beyond the data grew from [−20, 24] to [−869, 873] to [−1141, 1145] with 10, 30 and 60
    resamples. Up to a quarter of the refits can diverge without moving this."""
    low, high = np.percentile(predictions, [25.0, 75.0], axis=0)
    return (high - low) / IQR_PER_SD


def run_until_failing(run_batch: BatchRunner, batches: list[list[GroupJob]], threads: int) -> list:
    """Each batch's result in order (None where it failed or was not asked), `threads` at a
    time; once MAX_FAILED_RESAMPLES batches after the first have failed, and more of them
    than have succeeded (or the first itself has failed), no more are asked. A law that
    fails now and then on a degenerate resample keeps its refits; one that fails on them
    all (a stall on repeated rows) stops costing time limits."""
    results: list = [None] * len(batches)
    queue = iter(enumerate(batches))
    failed = succeeded = 0
    with ThreadPoolExecutor(max_workers=threads) as pool:
        running: dict = {}
        while True:
            giving_up = failed >= MAX_FAILED_RESAMPLES and failed > succeeded
            while len(running) < threads and not giving_up and (item := next(queue, None)) is not None:
                running[pool.submit(run_batch, item[1])] = item[0]
            if not running:
                return results
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                index = running.pop(future)
                results[index] = future.result()
                if index == 0 and results[0] is None:  # the plain fit failing ends it: the refits would go unused
                    failed, succeeded = len(batches), 0
                elif index > 0:
                    failed, succeeded = failed + (results[index] is None), succeeded + (results[index] is not None)


def replicate_sets(X: np.ndarray) -> list[np.ndarray]:
    """The bootstrap's units: the row indices of each distinct input vector (its replicates),
    in order of first appearance; one row each when every input is distinct, so the draws are
    then those of a plain row bootstrap."""
    labels = replicate_labels(X)
    return [np.flatnonzero(labels == k) for k in range(int(labels.max()) + 1)] if len(labels) else []


def relative_noise_scale(predicted: np.ndarray, actual: np.ndarray, n_params: float) -> np.ndarray:
    """Per target, the residual scale of the relative error (y − ŷ)/ŷ over n − p degrees of
    freedom; NaN for a target whose rows or fitted values are not all positive."""
    positive = (actual > 0).all(axis=0) & (predicted > 0).all(axis=0)
    ratio = (actual - predicted) / np.where(predicted > 0, predicted, 1.0)
    dof = max(1.0, len(actual) - n_params)
    return np.where(positive, np.sqrt(np.sum(ratio**2, axis=0) / dof), np.nan)


def extrapolation_reach(X_fit: np.ndarray, P: np.ndarray, X_reference: np.ndarray | None = None,
                        products: bool = False) -> np.ndarray:
    """Per point, how far it lies outside the fit rows' box, in units of the reference rows'
    span (default: the fit rows themselves): the largest over directions of the distance
    beyond the fit rows' [min, max] divided by the reference rows' max − min. Directions are
    the features (in log space for a feature positive in all three), and with `products` also
    the product of every two such positive features (the sum of their logs: compute N·D, or
    data × model size), along which a point can leave the data while inside the box feature
    by feature. A direction the reference rows hold constant is skipped (no span to measure
    in). 0 inside the box; 1 one reference span beyond it."""
    reference = X_fit if X_reference is None else X_reference
    columns = []
    logged = []
    for j in range(X_fit.shape[1]):
        a, b, r = X_fit[:, j], P[:, j], reference[:, j]
        positive = bool((a > 0).all() and (b > 0).all() and (r > 0).all())
        if positive:
            a, b, r = np.log(a), np.log(b), np.log(r)
            logged.append(len(columns))
        columns.append((a, b, r))
    if products:
        for i, k in itertools.combinations(logged, 2):
            columns.append(tuple(columns[i][m] + columns[k][m] for m in range(3)))
    reach = np.zeros(len(P))
    for a, b, r in columns:
        span = r.max() - r.min()
        if span <= 1e-12 * max(1.0, abs(r.max())):
            continue
        reach = np.maximum(reach, np.maximum(0.0, np.maximum(b - a.max(), a.min() - b)) / span)
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
        """|y − ŷ| / (d·(1 + reach)): the scores of the growing scale."""
        return np.abs(self.actual - self.fitted.center) / self.fitted.scale()

    def base_scores(self) -> np.ndarray:
        """|y − ŷ| / d: the scores of the scale without growth (the floor's)."""
        return np.abs(self.actual - self.fitted.center) / self.fitted.base()


def held_out_fits(folds: list[tuple[Rows, Rows]], run_batch: BatchRunner, resamples: int, n_targets: int,
                  threads: int = 1) -> list[HeldOut]:
    """Every fold's fit (and bootstrap refits) on its fit rows, at its held-out rows, per group."""
    found = []
    for k, (fit_rows, held_rows) in enumerate(folds):
        for g, fitted in fit_many(fold_problems(fit_rows, held_rows), run_batch, resamples, n_targets, threads).items():
            found.append(HeldOut(k, fitted, held_rows.y[held_rows.groups == g].reshape(-1, n_targets)))
    return found


def fold_problems(fit_rows: Rows, held_rows: Rows) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per group with rows on both sides of a fold: (X_fit, y_fit, X_held) for `fit_many`."""
    problems = {}
    for g in held_rows.group_names():
        fit_mask, held_mask = fit_rows.groups == g, held_rows.groups == g
        if fit_mask.any() and held_mask.any():
            problems[g] = (fit_rows.X[fit_mask], fit_rows.y[fit_mask], held_rows.X[held_mask])
    return problems


def calibration_scores(held_out: list[HeldOut], n_targets: int, base: bool = False) -> np.ndarray:
    """|y − ŷ| / (d·(1 + reach)) of every held-out validation row (all groups, all folds),
    or |y − ŷ| / d with `base`: (m, targets)."""
    if not held_out:
        return np.zeros((0, n_targets))
    return np.concatenate([h.base_scores() if base else h.scores() for h in held_out])


@dataclass(frozen=True)
class Multipliers:
    """The calibrated interval: half-width max(q₁·d·(1 + reach), q₀·d) per target."""

    grown: np.ndarray  # (targets,) q₁, the conformal quantile of the growing scale's scores
    flat: np.ndarray  # (targets,) q₀, the conformal quantile of the scores without growth
    enough: bool  # whether there were enough scores for the level (else the largest were used)

    def half_width(self, fitted: Fitted) -> np.ndarray:
        return np.maximum(self.grown[None, :] * fitted.scale(), self.flat[None, :] * fitted.base())


def calibrate(held_out: list[HeldOut], n_targets: int, level: float) -> Multipliers:
    """Both multipliers by split conformal on the held-out validation rows."""
    return multipliers(calibration_scores(held_out, n_targets), calibration_scores(held_out, n_targets, base=True), level)


def multipliers(grown_scores: np.ndarray, base_scores: np.ndarray, level: float) -> Multipliers:
    """Both multipliers from the two score arrays (`calibration_scores`, with and without base)."""
    grown, enough = conformal_multiplier(grown_scores, level)
    flat, _ = conformal_multiplier(base_scores, level)
    return Multipliers(grown, flat, enough)


def conformal_multiplier(scores: np.ndarray, level: float) -> tuple[np.ndarray, bool]:
    """Per target, the ⌈(m+1)·level⌉-th smallest score; and whether m was enough for it.

    With too few scores for the level (none at all, or ⌈(m+1)·level⌉ > m) conformal
    certifies nothing, so the multiplier is no smaller than normal errors of scale d
    would need, nor than the largest score: a new user's 5-row task calibrated on three
    held-out rows, each predicted from a fit on two, got 0.016 and an interval a tenth
    of the law's own residuals, covering none of its rows."""
    from scipy.stats import norm

    normal = float(norm.ppf(0.5 + level / 2))
    m = len(scores)
    if m == 0:
        return np.full(scores.shape[1], normal), False
    k = math.ceil((m + 1) * level)
    ordered = np.sort(scores, axis=0)
    if k > m:
        return np.maximum(ordered[-1], normal), False
    return ordered[k - 1], True


def within_observed_sign(low: np.ndarray, high: np.ndarray, center: np.ndarray, train_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bounds kept on the side of zero where every train value of the target lies (a
    loss, a perplexity or an error rate is never below zero): (low, high) per target.

    A target whose train values are all ≥ 0 (and not all 0) gets low ≥ 0; all ≤ 0, high ≤ 0.
    Where the truth has that sign this never uncovers a point, it only drops bounds no
    such value can take (a law whose coefficients cancel gave a perplexity a negative
    lower bound). A target whose train values take both signs is left alone, and so is a
    point the law itself predicts on the other side of zero: clipping there would exclude
    the prediction, and the interval is the law's, so it shows what the law says.
    Assumption: the sign seen on every train row holds beyond train."""
    y = np.asarray(train_y, dtype=float).reshape(len(train_y), -1)
    low, high = low.copy(), high.copy()
    for j in range(y.shape[1]):
        sign = observed_sign(y[:, j])
        if sign > 0:
            keep = center[:, j] >= 0
            low[keep, j] = np.maximum(low[keep, j], 0.0)
        elif sign < 0:
            keep = center[:, j] <= 0
            high[keep, j] = np.minimum(high[keep, j], 0.0)
    return low, high


def observed_sign(values: np.ndarray) -> int:
    """+1 when every finite value is ≥ 0 and some > 0 (a loss), −1 when every one is ≤ 0 and
    some < 0, else 0 (both signs, or nothing but zeros)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size and (finite >= 0).all() and (finite > 0).any():
        return 1
    if finite.size and (finite <= 0).all() and (finite < 0).any():
        return -1
    return 0


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


CACHE_VERSION = 1  # part of every cache key: change it when the calibration's method changes


def calibration_key(code: str, task: Task, n_params: int, resamples: int, settings: tuple = ()) -> str:
    """What a calibration depends on, hashed: the method (this module's source, evolve's,
    numpy's and scipy's versions), the program, the resamples, the sandbox settings that
    decide which refits fail, and every row of every calibration fold (a task whose data
    changed gets a new key)."""
    import scipy

    from evolve import __version__

    digest = hashlib.sha256(Path(__file__).read_bytes())
    for part in (CACHE_VERSION, __version__, np.__version__, scipy.__version__, RESAMPLE_SEED, resamples,
                 settings, len(task.targets), code):
        digest.update(str(part).encode() + b"\0")
    for fold in calibration_folds(task, n_params):
        for rows in fold:
            digest.update(np.ascontiguousarray(rows.X, dtype=float).tobytes() + np.ascontiguousarray(rows.y, dtype=float).tobytes())
            digest.update("\0".join(map(str, rows.groups.tolist())).encode() + b"\1")
    return digest.hexdigest()[:32]


def load_scores(path: Path, n_targets: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The two score arrays of a cached calibration, or None (no file, or not one we wrote)."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            grown, base = np.asarray(saved["grown"], dtype=float), np.asarray(saved["base"], dtype=float)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return (grown, base) if grown.ndim == 2 and grown.shape == base.shape and grown.shape[1] == n_targets else None


def save_scores(path: Path, grown: np.ndarray, base: np.ndarray) -> None:
    """Keep a calibration for the next session (atomic; a folder that cannot be written is skipped:
    the cache saves minutes, it is never needed)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(partial, "wb") as handle:
            np.savez(handle, grown=grown, base=base)
        os.replace(partial, path)
    except OSError:
        pass

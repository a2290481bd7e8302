"""Which law a run returns: fit traded against complexity, decided from train alone.

The archive ranks laws by validation R², and a search that ranks hundreds of laws on a few
held-out rows finds laws that fit those rows by luck (issue 13: 150 offline iterations
ended worse on test than the plain power-law seed on 3 of 5 data sets; an uncapped
11-parameter law whose coefficients cancel beat the true 5-parameter law). The best
validation score is an optimistic estimate; differences smaller than the noise of the
held-out rows are not evidence. So at the end of a run:

1. Finalists: the best distinct laws by validation R², the seeds, and the best law of each
   parameter count (so a simpler law within noise of the best is on the list).
2. Refuse laws whose coefficients cancel (two of the largest fitted parameters huge
   relative to the target's scale, of opposite signs, summing to little: the law subtracts
   two big numbers to make a small one, which extrapolates like its ill-conditioning),
   and, on a task with no parameter cap, laws over the default cap from rows per group
   (`evolve.propose.grammar.default_param_cap`), unless they beat every clean finalist by
   more than two standard errors (evidence strong enough to keep them).
3. One-standard-error rule: re-score the finalists on the validation folds (cheap) to get
   each held-out row's normalised squared error; the noise of a law's gap to the best is
   the standard error of the paired per-row differences, or the fold-to-fold spread of
   the gap when it is larger (with three folds or more; two give one degree of freedom). Among the laws within one standard error of the best, take
   the fewest parameters (then the lower validation error).
4. The seed stands unless beaten by evidence that survives the search: a seed law (the
   field's prior, chosen before the data) is returned instead of the pick when the pick's
   validation gain over it is under z standard errors, z the one-sided 5% quantile
   Bonferroni-corrected for the number of distinct laws tried (3.4 for 150). The best of
   150 laws on a handful of held-out rows beats a fixed law by luck alone.

Every number here comes from train rows (the validation folds); test is never read. The
rule was fixed by these principles before any test figure was looked at; test figures in
bench/results/selection.md only measure it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from evolve.program import code_key
from evolve.propose.grammar import default_param_cap
from evolve.records import ProgramRecord
from evolve.scoring.scorer import group_jobs
from evolve.status import Status
from evolve.tasks import Task

TOP_FINALISTS = 12  # best distinct laws by validation R² re-scored at the end
MAX_FINALISTS = 30  # with the seeds and the best law of each parameter count
MIN_FOLDS_FOR_SPREAD = 3  # folds needed before their spread is read as noise
SE_MULTIPLIER = 1.0  # the classic one-standard-error rule
CANCEL_SCALE = 1000.0  # a coefficient this many times the target's scale is huge
CANCEL_SUM = 0.05  # ... and of opposite signs cancel when their sum is this small beside them


@dataclass(frozen=True)
class Choice:
    """The law chosen and why (stored in the run's metadata as `selection`)."""

    record: ProgramRecord
    reason: str
    finalists: int
    within_noise: tuple[int, ...] = ()
    refused: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {"id": self.record.id, "reason": self.reason, "finalists": self.finalists,
                "within_noise": list(self.within_noise), "refused": list(self.refused)}


def target_scale(task: Task) -> float:
    """The size of the target's values in train: what a sane coefficient is measured against."""
    y = np.asarray(task.train.y, dtype=float)
    return float(max(np.max(np.abs(y)), np.std(y), 1e-12))


def cancelling(params: dict[str, list[float] | None], scale: float) -> bool:
    """True when, in some group, the two largest fitted parameters are huge relative to the
    target's scale, of opposite signs, and their sum small beside them (c = -56302.5 with
    a = 56304.8): coefficients that cancel. Large coefficients of opposite signs that do not
    nearly sum to zero (a U-shape in a small-valued feature) are not flagged."""
    for values in params.values():
        if not values or len(values) < 2:
            continue
        p = np.asarray(values, dtype=float)
        if not np.all(np.isfinite(p)):
            return True
        order = np.argsort(-np.abs(p))
        a, b = p[order[0]], p[order[1]]
        if abs(b) >= CANCEL_SCALE * scale and np.sign(a) != np.sign(b) and abs(a + b) <= CANCEL_SUM * abs(a):
            return True
    return False


def distinct_ok(records: list[ProgramRecord]) -> list[ProgramRecord]:
    """Successful records, best validation R² first, one per program (by syntax-tree key)."""
    seen, out = set(), []
    for record in sorted((r for r in records if r.ok and r.code), key=lambda r: (-r.r2, r.id or 0)):
        key = code_key(record.code)
        if key not in seen:
            seen.add(key)
            out.append(record)
    return out


def finalists(records: list[ProgramRecord]) -> list[ProgramRecord]:
    """The best distinct laws, the seeds and the best law of each parameter count."""
    ranked = distinct_ok(records)
    chosen = ranked[:TOP_FINALISTS]
    by_count: dict[int | None, ProgramRecord] = {}
    for record in ranked:
        by_count.setdefault(record.n_params, record)
    extra = [r for r in ranked if r.proposer == "seed"] + sorted(by_count.values(), key=lambda r: -r.r2)
    for record in extra:
        if record not in chosen and len(chosen) < MAX_FINALISTS:
            chosen.append(record)
    return chosen


def fold_row_errors(predictions: list[np.ndarray], truths: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per held-out row, its share of the validation NMSE (weighted so the mean over all rows is
    the fold-mean NMSE the archive ranks by), and the NMSE of each fold."""
    rows, per_fold = [], []
    total = sum(len(t) for t in truths)
    for prediction, truth in zip(predictions, truths):
        truth = truth.reshape(len(truth), -1)
        prediction = np.asarray(prediction, dtype=float).reshape(truth.shape)
        var = np.var(truth, axis=0)
        norm = np.where(var > 1e-9, var, 1.0)  # as the official metric: a tiny normaliser is left out
        err = np.mean((prediction - truth) ** 2 / norm, axis=1)
        per_fold.append(float(np.mean(err)))
        rows.append(err * total / (len(err) * len(truths)))
    return np.concatenate(rows), np.asarray(per_fold)


def held_out_errors(run, record: ProgramRecord, task: Task) -> tuple[np.ndarray, np.ndarray] | None:
    """Re-fit a law on each validation fold (through `run(code, jobs, task) -> RunReport`,
    the scorer's sandbox) and return its per-row and per-fold errors; None on failure."""
    predictions, truths = [], []
    for fit_rows, score_rows in task.validation_folds():
        if not len(score_rows):
            return None
        jobs, truth = group_jobs(fit_rows, score_rows)
        report = run(record.code, jobs, task)
        if report.status != Status.OK:
            return None
        try:
            predictions.append(np.concatenate([report.predictions[g] for g in sorted(report.predictions)]))
        except (KeyError, ValueError):
            return None
        truths.append(truth)
        if predictions[-1].size != truth.size or not np.all(np.isfinite(predictions[-1])):
            return None
    return fold_row_errors(predictions, truths)


def gap_and_noise(a: tuple, b: tuple) -> tuple[float, float]:
    """How much worse law a's validation NMSE is than law b's, and the standard error of
    that gap: of the paired per-row differences, or of the fold gaps when that is larger
    (with three folds or more)."""
    diff = a[1] - b[1]
    row_se = float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    gaps = a[2] - b[2]  # a spread of two fold gaps has one degree of freedom: not an estimate
    fold_se = float(np.std(gaps, ddof=1) / np.sqrt(len(gaps))) if len(gaps) >= MIN_FOLDS_FOR_SPREAD else 0.0
    return float(np.mean(diff)), max(row_se, fold_se)


def best_of(candidates: list[tuple]) -> tuple:
    return min(candidates, key=lambda c: (float(np.mean(c[1])), c[0].id or 0))


def one_se_choice(candidates: list[tuple[ProgramRecord, np.ndarray, np.ndarray]]) -> tuple[ProgramRecord, tuple[int, ...]]:
    """Among (record, per-row errors, per-fold errors), the fewest-parameter law whose
    validation NMSE is within one standard error of the best's; ties by lower NMSE."""
    best = best_of(candidates)
    within = []
    for candidate in candidates:
        gap, noise = gap_and_noise(candidate, best)
        if gap <= SE_MULTIPLIER * noise:
            record = candidate[0]
            within.append((record.n_params if record.n_params is not None else 10**6, float(np.mean(candidate[1])), record.id or 0, record))
    within.sort(key=lambda t: t[:3])
    return within[0][3], tuple(t[3].id for t in within if t[3].id is not None)


def drop_suspects(scored: list[tuple], suspect: set[int]) -> list[tuple]:
    """Laws with cancelling coefficients or over the default cap stay in the running only
    when they beat every clean law by more than two standard errors (strong evidence);
    otherwise the clean laws are chosen from, since a suspect's edge is the kind of fit
    that does not extrapolate."""
    clean = [c for c in scored if id(c[0]) not in suspect]
    if not clean or len(clean) == len(scored):
        return scored
    gap, noise = gap_and_noise(best_of(clean), best_of(scored))
    return scored if gap > 2 * SE_MULTIPLIER * noise else clean


def search_margin(tried: int) -> float:
    """Standard errors an evolved law must beat the seed by: the one-sided 5% normal quantile
    corrected for the number of laws tried (Bonferroni). The best of many laws on a few
    held-out rows beats a fixed law by luck alone; a seed was chosen before the data."""
    return NormalDist().inv_cdf(1 - 0.05 / max(1, tried))


def seed_standing(scored: list[tuple], pick: tuple, tried: int) -> ProgramRecord | None:
    """The best seed law (fewest parameters on ties) when the pick does not beat it by the
    search margin, else None. Seeds are the prior laws of the field; a search displaces
    them only on evidence that survives the number of laws it tried."""
    seeds = [c for c in scored if c[0].proposer == "seed"]
    standing = []
    for candidate in seeds:
        gap, noise = gap_and_noise(candidate, pick)
        if gap <= search_margin(tried) * noise:
            standing.append(candidate)
    if not standing:
        return None
    return min(standing, key=lambda c: (float(np.mean(c[1])), c[0].n_params or 0, c[0].id or 0))[0]


def choose(records: list[ProgramRecord], task: Task, run) -> Choice | None:
    """The law a run returns (see the module docstring); None when no law succeeded.

    `run(code, jobs, task) -> RunReport` fits and predicts in the sandbox (Scorer.run).
    Reads the validation folds of train only: changing test.csv cannot change the choice."""
    pool = finalists(records)
    if not pool:
        return None
    scale = target_scale(task)
    cap = default_param_cap(task) if task.param_cap is None else None
    refused = [r for r in pool if cancelling(r.validation.params, scale) or (cap is not None and r.n_params is not None and r.n_params > cap * len(task.targets))]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="select") as executor:
        errors = list(executor.map(lambda r: held_out_errors(run, r, task), pool))
    scored = [(r, e[0], e[1]) for r, e in zip(pool, errors) if e is not None and np.all(np.isfinite(e[0]))]
    if not scored:
        return Choice(pool[0], "best validation R² (re-scoring the finalists failed)", len(pool))
    kept = drop_suspects(scored, {id(r) for r in refused})
    refused_ids = tuple(r.id for r in refused if r.id is not None and all(c[0] is not r for c in kept))
    record, within = one_se_choice(kept)
    best = best_of(scored)[0]
    if record is best:
        reason = "best validation error; no simpler law within one standard error"
    else:
        reason = f"fewest parameters ({record.n_params}) within one standard error of the best kept validation error (best overall: law {best.id}, {best.n_params} parameters)"
    seed = seed_standing(scored, next(c for c in scored if c[0] is record), len(distinct_ok(records)))
    if seed is not None and seed is not record:
        reason = f"the seed law (law {seed.id}, {seed.n_params} parameters) stands: the search's pick (law {record.id}) does not beat it by the margin {len(distinct_ok(records))} tried laws call for"
        record = seed
    if refused_ids:
        reason += f"; {len(refused_ids)} finalist(s) refused (cancelling coefficients or over the default cap, and not better by two standard errors)"
    return Choice(record, reason, len(pool), within, refused_ids)


def ordered_top(records: list[ProgramRecord], choice: Choice | None, k: int) -> list[ProgramRecord]:
    """The chosen law first, then the best distinct laws by validation R², k in all."""
    ranked = distinct_ok(records)
    if choice is None:
        return ranked[:k]
    rest = [r for r in ranked if code_key(r.code) != code_key(choice.record.code)]
    return [choice.record, *rest][: max(1, k)]


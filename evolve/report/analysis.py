"""What a run's programs say, before anything is drawn: the Pareto front, the distinct best,
the running best, failure counts, and the best law's fits on each split (run in the sandbox).

"The same program" is the syntax-tree key (`evolve.program.code_key`) here as everywhere.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from evolve.program import code_key
from evolve.records import ProgramRecord



def pareto_front(records: list[ProgramRecord]) -> list[ProgramRecord]:
    """Programs no other beats on both counts: fewer (or as many) fitted parameters and
    higher validation R². One per parameter count, fewest parameters first; copies of the
    same program (migrants, or code that differs only in layout) count once, as their first occurrence."""
    seen, candidates = set(), []
    for record in sorted(records, key=lambda r: r.id or 0):
        key = code_key(record.code)
        if record.ok and record.n_params is not None and key not in seen and math.isfinite(record.r2):
            seen.add(key)
            candidates.append(record)
    front, best = [], -math.inf
    for record in sorted(candidates, key=lambda r: (r.n_params, -r.r2, r.id or 0)):
        if record.r2 > best:
            front.append(record)
            best = record.r2
    return front


def distinct_best(records: list[ProgramRecord], k: int) -> list[ProgramRecord]:
    """The k best ok programs, one per distinct code (records come best first)."""
    seen, chosen = set(), []
    for record in records:
        key = code_key(record.code)
        if record.ok and key not in seen:
            seen.add(key)
            chosen.append(record)
        if len(chosen) >= k:
            break
    return chosen


def running_best(records: list[ProgramRecord]) -> tuple[list[int], list[float]]:
    """Best validation R² so far at each iteration that has programs."""
    by_iteration: dict[int, float] = {}
    for record in records:
        if record.ok:
            by_iteration[record.iteration] = max(by_iteration.get(record.iteration, -math.inf), record.r2)
    iterations, best, current = [], [], -math.inf
    for iteration in sorted(by_iteration):
        current = max(current, by_iteration[iteration])
        iterations.append(iteration)
        best.append(current)
    return iterations, best


def failure_counts(records: list[ProgramRecord]) -> list[tuple[str, int]]:
    counts = Counter(r.validation.status for r in records if not r.ok)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


@dataclass
class SplitFit:
    """The scored rows of one split in the scorer's order, with the law's predictions."""

    split: str
    X: np.ndarray
    actual: np.ndarray
    predicted: np.ndarray
    groups: np.ndarray
    r2: float


def split_fit(task, split: str, evaluation) -> SplitFit | None:
    """Pair Evaluation.predictions (sorted-group order) with the matching rows, as build_jobs orders them."""
    if not evaluation.ok or evaluation.predictions is None:
        return None
    _, rows = task.fit_and_score_rows(split)
    order = np.concatenate([np.flatnonzero(rows.groups == g) for g in rows.group_names()])
    predicted = np.asarray(evaluation.predictions, dtype=float).reshape(len(order), -1)
    return SplitFit(split, rows.X[order], rows.y[order], predicted, rows.groups[order], evaluation.metrics.r2)


def report_scorer_config(scorer_settings: dict):
    """The one sandbox setting of a report (the run's limits, two workers): every fit the
    report asks for shares one warm pool (api.shared_scorer)."""
    from evolve.config import ScorerConfig

    return ScorerConfig(workers=2, timeout_s=float(scorer_settings.get("timeout_s", 60.0)), memory_mb=int(scorer_settings.get("memory_mb", 4096)))


def score_best(record: ProgramRecord, task, scorer_settings: dict) -> tuple[dict[str, SplitFit], str]:
    """The best law's fits on train, validation and test, run in the sandbox; and a note on failures."""
    from evolve.warm_scorer import shared_scorer

    fits, notes = {}, []
    try:
        scorer = shared_scorer(report_scorer_config(scorer_settings))
        futures = {split: scorer.submit(record.code, task, split) for split in ("train", "validation", "test")}
        for split, future in futures.items():
            evaluation = future.result()
            fit = split_fit(task, split, evaluation)
            if fit is None:
                notes.append(f"{split}: {evaluation.status} {evaluation.message}".strip())
            else:
                fits[split] = fit
    except Exception as exc:  # noqa: BLE001 - a report without fit plots beats no report
        notes.append(f"the sandbox could not run the law: {type(exc).__name__}: {exc}")
    return fits, "; ".join(notes)


def front_test_r2(front: list[ProgramRecord], task, scorer_settings: dict | None) -> dict[int, float | None]:
    """Test R² of every program on the Pareto front, for reporting: the stored one, else
    (with `scorer_settings`, i.e. when the report may run code) scored now in the sandbox.
    Nothing chose these programs by it."""
    found = {r.id: (r.test.metrics.r2 if r.test is not None and r.test.ok else None) for r in front}
    missing = [r for r in front if r.test is None]
    if scorer_settings is None or not missing:
        return found
    from evolve.warm_scorer import shared_scorer

    try:
        scorer = shared_scorer(report_scorer_config(scorer_settings))
        futures = {r.id: scorer.submit(r.code, task, "test") for r in missing}
        for rid, future in futures.items():
            evaluation = future.result()
            found[rid] = evaluation.metrics.r2 if evaluation.ok else None
    except Exception:  # noqa: BLE001 - the table then shows — for those
        pass
    return found

"""The end of a run: choose the law it returns, score the top laws on test, write best.py.

All of it runs in the run's own warm pool, before the pool closes: the selection's re-fits
(the fits the search already made are taken from the scorer's memo, evolve.scoring.memo),
the test scoring, and the one check of best.py's formula. The loop calls it inside the block
that turns a Ctrl-C into an "interrupted" run, so a stop here stays resumable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from evolve.extrapolation import extrapolation_warnings
from evolve.program import code_key
from evolve.records import ProgramRecord
from evolve.report.best import write_best_program
from evolve.scoring.scorer import Scorer
from evolve.selection import choose, ordered_top
from evolve.store.database import Archive
from evolve.tasks import Task


def end_of_run(archive: Archive, task: Task, scorer: Scorer, top_k: int, run_dir: Path,
               phase: Callable[[str], None] = lambda text: None) -> list[ProgramRecord]:
    """The top laws, chosen law first, each with its test evaluation; best.py written.
    `phase` is told each step as it starts: together they take minutes, and a log that
    stops at one line for as long looks hung."""
    top = score_top_on_test(archive, task, scorer, top_k, phase)
    if top:
        phase("asking the chosen law beyond the data: does it keep train's trends?")
        said = extrapolation_warnings(lambda jobs: scorer.run(top[0].code, jobs, task), task)
        archive.set_meta("extrapolation", {"program": top[0].id, "warnings": said})
        phase("writing best.py: the chosen law's formula traced in the sandbox and checked against the program")
        write_best_program(run_dir, top[0], task, scorer)
    return top


def score_top_on_test(archive: Archive, task: Task, scorer: Scorer, top_k: int,
                      phase: Callable[[str], None] = lambda text: None) -> list[ProgramRecord]:
    """Choose the law the run returns, then re-score it and the next best distinct
    programs on test: for reporting only, after selection is over.

    The choice (`evolve.selection.choose`) reads train alone: the finalists are re-fitted
    on the selection folds, laws whose coefficients cancel are refused, and among the
    laws within one standard error of the lowest error there the fewest-parameter
    one is returned first (it becomes best.py). Test is scored only after the choice."""
    records = archive.programs(failed=False, order="r2")
    choice = choose(records, task, scorer.run_remembered)  # the search's own fits are not made again
    if choice is not None:
        archive.set_meta("selection", choice.to_dict())
    top = ordered_top(records, choice, top_k)
    references = seed_references(records, top)
    also = f" and the {len(references)} seed law(s) they are measured against" if references else ""
    phase(f"scoring the top {len(top)}{also} on test (for reporting only: the choice is made)")
    futures = [(r, scorer.submit(r.code, task, "test")) for r in [*top, *references]]
    scored = []
    for record, future in futures:
        evaluation = future.result()
        archive.set_test(record.id, evaluation)
        scored.append(dataclasses.replace(record, test=evaluation))
    return scored[: len(top)]


def seed_references(records: list[ProgramRecord], top: list[ProgramRecord]) -> list[ProgramRecord]:
    """The seed laws not among the top, one per distinct program: their test R² is what a
    user compares the returned law with (a new user had to export the seeds and score them
    by hand to see that a 3-parameter seed did as well as the 9-parameter law returned)."""
    shown = {code_key(r.code) for r in top}
    references = []
    for record in records:
        key = code_key(record.code)
        if record.proposer == "seed" and record.ok and key not in shown:
            shown.add(key)
            references.append(record)
    return references

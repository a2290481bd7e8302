"""`best.py`: the best law of a finished run, as a standalone program file (numpy and scipy
only) with its scores, fitted parameters and its formula as `archive show` and the report
show it; written by the one exporter."""

from __future__ import annotations

import os
from pathlib import Path

from evolve.records import ProgramRecord
from evolve.report.export import standalone_program
from evolve.report.formula import formulas_of_records
from evolve.store.rundir import BEST_PROGRAM_NAME
from evolve.tasks import Task


def write_best_program(run_dir: Path, best: ProgramRecord, task: Task, scorer=None) -> Path:
    """Write best.py; its formula is checked in `scorer` (the run's warm pool) when given.

    Written to a temporary name and renamed, so a stop mid-write leaves the old file or none."""
    path = run_dir / BEST_PROGRAM_NAME
    formula = formulas_of_records([best], task, scorer=scorer).get(best.id)  # None when it cannot be recovered: the file still stands
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(standalone_program(best, task, run_name=run_dir.name, formula=formula))
    os.replace(partial, path)
    return path

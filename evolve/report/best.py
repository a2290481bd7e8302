"""`best.py`: the best law of a finished run, as a standalone program file (numpy and scipy
only) with its scores, fitted parameters and its formula as `archive show` and the report
show it; written by the one exporter."""

from __future__ import annotations

from pathlib import Path

from evolve.records import ProgramRecord
from evolve.report.export import standalone_program
from evolve.report.formula import formulas_of_records
from evolve.store.rundir import BEST_PROGRAM_NAME
from evolve.tasks import Task


def write_best_program(run_dir: Path, best: ProgramRecord, task: Task) -> Path:
    path = run_dir / BEST_PROGRAM_NAME
    formula = formulas_of_records([best], task).get(best.id)  # None when it cannot be recovered: the file still stands
    path.write_text(standalone_program(best, task, run_name=run_dir.name, formula=formula))
    return path

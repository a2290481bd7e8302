"""`best.py`: the best law of a finished run, as a program file with its scores in a header."""

from __future__ import annotations

from pathlib import Path

from evolve.records import ProgramRecord
from evolve.store.rundir import BEST_PROGRAM_NAME
from evolve.tasks import Task


def write_best_program(run_dir: Path, best: ProgramRecord, task: Task) -> Path:
    """The best program as a standalone file, its scores and fitted parameters in a header."""
    lines = [
        f"# Best law of run {run_dir.name} on task {task.name} (program {best.id}).",
        f"# Validation R2 {best.validation.metrics.r2:.6f}"
        + (f"; test R2 {best.test.metrics.r2:.6f}" if best.test and best.test.ok else ""),
        f"# Fitted parameters per group (refit by fit_scaling_law on your data): n_params={best.n_params}",
    ]
    params = best.test.params if best.test and best.test.params else best.validation.params
    for group, values in sorted(params.items()):
        shown = "[" + ", ".join(f"{v:.6g}" for v in values) + "]" if values is not None else "(not numeric)"
        lines.append(f"#   {group}: {shown}")
    path = run_dir / BEST_PROGRAM_NAME
    path.write_text("\n".join(lines) + "\n" + best.code)
    return path

"""Formula extraction for `show` and the report: a job kind of the sandbox pool.

The tracing itself is `evolve.symbolic.trace_expressions`. It executes candidate code, so
each program's extraction runs in the sandbox (evolve.scoring.worker, docs/sandbox.md), in
a warm worker started with `--kind formula` (sympy imported and warmed up): per program a
fresh, fully isolated child traces the formula within the program's own deadline, so one
program cannot spoil or kill another's extraction. This process then evaluates the formula
text itself (formula_check: an `ast` whitelist, never sympify or eval) and keeps it only when
it reproduces the predictions the scorer made for the program (evolve.report.formula: the
program refitted as for its stored parameters, in the scoring sandbox, so the check cannot
be told from scoring); a job without them gets a formula marked unchecked.
"""

from __future__ import annotations

import json

import numpy as np

from evolve.config import ScorerConfig
from evolve.formula_numbers import Unsupported
from evolve.scoring.formula_check import formula_values
from evolve.scoring.frames import SandboxError
from evolve.symbolic import Formula, FormulaJob, agrees

SECONDS_PER_PROGRAM = 20.0
MEMORY_MB = 2048  # beyond what the warm worker already maps
SCRATCH_MB = 16  # the child's tmpfs (and largest file)
MAX_LINE_BYTES = 256 * 1024  # one serialized formula
MAX_LATEX_CHARS = 8_000  # what the report may typeset with mathtext; real formulas (MAX_OPS) stay far below


def formulas_isolated(jobs: list[FormulaJob], seconds_per_program: float = SECONDS_PER_PROGRAM, plan: str = "auto",
                      expected: list | None = None) -> list[Formula | None]:
    """Formulas for many programs, each traced in a sandboxed child of its own, and checked
    here against `expected`: per job, the (check rows, targets) predictions the scorer made
    for the program (evolve.report.formula.scorer_predictions). A job without them gets a
    formula marked unchecked.

    A program that hangs, crashes or lies gets None; the others are unaffected. When the
    formula sandbox cannot start, no program gets a formula."""
    if not jobs:
        return []
    expected = list(expected) if expected is not None else [None] * len(jobs)
    from evolve.scoring.pool import Sandbox

    config = ScorerConfig(workers=1, timeout_s=float(seconds_per_program), memory_mb=MEMORY_MB, max_output_mb=SCRATCH_MB)
    try:
        sandbox = Sandbox(config, plan=plan, kind="formula")
    except SandboxError:
        return [None] * len(jobs)
    with sandbox:
        return [checked_formula(sandbox.extract(job.to_dict(), seconds_per_program), job, predictions)
                for job, predictions in zip(jobs, expected)]


def checked_formula(answer: dict | None, job: FormulaJob, predictions=None) -> Formula | None:
    """The formula in a worker's answer, kept only if it reproduces `predictions` (the
    scorer's, on the job's check rows)."""
    if not isinstance(answer, dict) or answer.get("ok") is not True:
        return None
    expressions, latex = answer.get("expressions"), answer.get("latex")
    if not (is_texts(expressions, job.n_targets) and is_texts(latex, job.n_targets)):
        return None
    if any(len(text) > MAX_LATEX_CHARS for text in latex):
        return None
    if job.check_params is None or not job.check_rows or predictions is None:
        return Formula(tuple(expressions), tuple(latex), False)  # nothing to check against: shown unchecked
    rows = np.asarray(job.check_rows, dtype=float)
    try:
        expected = np.asarray(predictions, dtype=float).reshape(len(rows), job.n_targets)
        got = formula_values(expressions, job.features, rows, job.check_params)
    except (Unsupported, TypeError, ValueError, OverflowError, ZeroDivisionError, MemoryError):
        return None  # a formula that cannot be checked here is not shown
    if not np.all(np.isfinite(expected)) or not agrees(expected, got):
        return None
    return Formula(tuple(expressions), tuple(latex), True)


def parse_result(line: bytes, n_targets: int) -> Formula | None:
    """One serialized formula, checked strictly (it may come from a process that ran candidate code)."""
    if len(line) > MAX_LINE_BYTES:
        return None
    try:
        item = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(item, dict) or set(item) != {"expressions", "latex", "verified"}:
        return None
    texts = (item["expressions"], item["latex"])
    if not isinstance(item["verified"], bool) or not all(is_texts(t, n_targets) for t in texts):
        return None
    return Formula.from_dict(item)


def is_texts(value: object, count: int) -> bool:
    return isinstance(value, list) and len(value) == count and all(isinstance(v, str) for v in value)

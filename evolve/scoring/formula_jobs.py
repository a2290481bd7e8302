"""Formula extraction for `show` and the report: a job kind of the sandbox pool.

The tracing itself is `evolve.symbolic.trace_expressions`. It executes candidate code, so
each program's extraction runs in the sandbox (evolve.scoring.worker, docs/sandbox.md), in
a warm worker started with `--kind formula` (sympy imported and warmed up). Per program the
worker forks fresh, fully isolated children within one deadline: a fit child and a prediction
child exactly as scoring runs them (the program refitted on the rows its stored parameters
were fitted on, which must give those parameters, then the check rows predicted from what
the fit returned, in its own structure and dtypes), and a child that traces the formula.
This process then evaluates the formula text itself (formula_check: an `ast` whitelist,
never sympify or eval) and keeps it only when it reproduces those predictions; a job without
check or fit rows gets a formula marked unchecked. Each program has its own children and
deadline, so one program cannot spoil or kill another's extraction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from evolve.config import ScorerConfig
from evolve.scoring.formula_check import Unsupported, formula_values
from evolve.scoring.frames import SandboxError
from evolve.symbolic import Formula, FormulaJob, agrees

SECONDS_PER_PROGRAM = 20.0
MEMORY_MB = 2048  # beyond what the warm worker already maps
SCRATCH_MB = 16  # the child's tmpfs (and largest file)
MAX_LINE_BYTES = 256 * 1024  # one serialized formula
MAX_LATEX_CHARS = 8_000  # what the report may typeset with mathtext; real formulas (MAX_OPS) stay far below
MAX_CHECK_ROWS = 256


@dataclass(frozen=True)
class CheckedJob(FormulaJob):
    """A formula job that also carries the rows its parameters were fitted on: the worker
    refits there and predicts the check rows from what the fit returned, exactly as scoring
    does (same parameter structure and dtypes), so the check cannot be told from scoring."""

    fit_rows: list[list[float]] | None = None
    fit_targets: list[list[float]] | None = None
    group: str = ""  # the group's name, which a fit that takes `group` is given as in scoring

    def to_dict(self) -> dict:
        return {**super().to_dict(), "fit_rows": self.fit_rows, "fit_targets": self.fit_targets, "group": self.group}


def with_fit_rows(job: FormulaJob, task, split: str, group: str) -> CheckedJob:
    """`job` plus the rows of `group` its parameters were fitted on under `split` (for
    validation the first fold's, as the stored parameters and the scorer's cross-check)."""
    fit = task.fit_and_score_rows(split)[0] if split in ("validation", "test", "train") else task.train
    mask = fit.groups == group
    return CheckedJob(job.code, job.features, job.n_targets, job.n_params, job.check_params, job.check_rows,
                      fit.X[mask].tolist(), fit.y[mask].tolist(), str(group))


def job_for(record, task) -> CheckedJob | None:
    """The extraction job of a stored program, checked on the rows its parameters were scored
    on (the first group with numeric parameters), so the check sees what scoring saw."""
    from evolve.report.export import params_source

    if not record.ok or not record.code.strip():
        return None
    _, evaluation = params_source(record)
    scored = task.folds(evaluation.split)[0][1] if evaluation.split in ("validation", "test", "train") else task.train
    for group, params in sorted(evaluation.params.items()):
        rows = scored.X[scored.groups == group][:MAX_CHECK_ROWS]
        if params is not None and len(rows):
            job = FormulaJob(record.code, task.features, len(task.targets), len(params), list(params), rows.tolist())
            return with_fit_rows(job, task, evaluation.split, group)
    return None


def formulas_isolated(jobs: list[FormulaJob], seconds_per_program: float = SECONDS_PER_PROGRAM, plan: str = "auto") -> list[Formula | None]:
    """Formulas for many programs, each extracted and checked in sandboxed children of its own.

    A program that hangs, crashes or lies gets None; the others are unaffected. When the
    formula sandbox cannot start, no program gets a formula."""
    if not jobs:
        return []
    from evolve.scoring.pool import Sandbox

    config = ScorerConfig(workers=1, timeout_s=float(seconds_per_program), memory_mb=MEMORY_MB, max_output_mb=SCRATCH_MB)
    try:
        sandbox = Sandbox(config, plan=plan, kind="formula")
    except SandboxError:
        return [None] * len(jobs)
    with sandbox:
        return [checked_formula(sandbox.extract(job.to_dict(), seconds_per_program), job) for job in jobs]


def checked_formula(answer: dict | None, job: FormulaJob) -> Formula | None:
    """The formula in a worker's answer, kept only if it reproduces the program's predictions."""
    if not isinstance(answer, dict) or answer.get("ok") is not True:
        return None
    expressions, latex = answer.get("expressions"), answer.get("latex")
    if not (is_texts(expressions, job.n_targets) and is_texts(latex, job.n_targets)):
        return None
    if any(len(text) > MAX_LATEX_CHARS for text in latex):
        return None
    if job.check_params is None or not job.check_rows or answer.get("predictions") is None:
        return Formula(tuple(expressions), tuple(latex), False)  # nothing to check against: shown unchecked
    rows = np.asarray(job.check_rows, dtype=float)
    try:
        expected = np.asarray(answer.get("predictions"), dtype=float).reshape(len(rows), job.n_targets)
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

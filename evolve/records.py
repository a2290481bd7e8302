"""The record of one candidate program as the archive stores it and everyone else reads it."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from evolve.program import parse_python
from evolve.scoring.scorer import Evaluation


@dataclass(frozen=True)
class ProgramRecord:
    """A candidate (seed, child or failure) with its validation evaluation.

    `code` is the full program text. `test` is filled only at the end of a run, for
    reporting: selection never reads it. `id` is None until the archive stores it.
    """

    code: str
    validation: Evaluation
    iteration: int = 0
    island: int = 0
    parent_id: int | None = None
    proposer: str = "seed"  # seed, llm, offline
    model: str | None = None
    explanation: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation_seconds: float = 0.0
    edit_mode: str = ""
    test: Evaluation | None = None
    id: int | None = None
    cell: tuple[int, int] | None = None
    created_at: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.validation.ok

    @property
    def r2(self) -> float:
        """Validation R² used for ranking (−1 for failures)."""
        return self.validation.rank_r2

    @property
    def n_params(self) -> int | None:
        return self.validation.n_params

    @property
    def complexity(self) -> int:
        return code_complexity(self.code)


def code_complexity(code: str) -> int:
    """AST node count of the program: a size measure that ignores comments and formatting."""
    try:
        return sum(1 for _ in ast.walk(parse_python(code)))
    except SyntaxError:
        return 0

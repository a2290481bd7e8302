"""The one vocabulary of outcomes: every stored program, evaluation and proposal has one.

The values are the strings stored in run databases and JSON output, so a `Status` compares
equal to its string (`Status.OK == "ok"`) and old archives read unchanged. Each stage
produces only its own kinds: the code inside the sandbox reports program faults, the pool
adds the sandbox's verdicts, the scorer adds `over_cap`, and a proposal without code
carries one of the proposal kinds.
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    OK = "ok"
    # program faults, found by the code that runs the candidate inside the sandbox
    SYNTAX_ERROR = "syntax_error"
    MISSING_FUNCTION = "missing_function"
    EXCEPTION = "exception"
    NAN = "nan"
    WRONG_SHAPE = "wrong_shape"
    # the sandbox's verdicts on a candidate process
    TIMEOUT = "timeout"
    CRASH = "crash"
    MEMORY = "memory"
    # the scorer's verdict on a law that scored
    OVER_CAP = "over_cap"
    # a proposal that yielded no program to score
    NO_CODE = "no_code"
    DIFF_NOT_APPLIED = "diff_not_applied"
    UNAVAILABLE = "unavailable"

    __str__ = str.__str__
    __format__ = str.__format__

    @classmethod
    def parse(cls, value: str) -> "Status":
        """A stored or decoded status; an unknown one is a ValueError (the codec treats it as a crash)."""
        return cls(value)


CHILD_STATUSES = frozenset({Status.OK, Status.SYNTAX_ERROR, Status.MISSING_FUNCTION, Status.EXCEPTION, Status.NAN, Status.WRONG_SHAPE})
SANDBOX_STATUSES = frozenset({Status.TIMEOUT, Status.CRASH, Status.MEMORY})
PROPOSAL_STATUSES = frozenset({Status.NO_CODE, Status.DIFF_NOT_APPLIED, Status.SYNTAX_ERROR, Status.MISSING_FUNCTION, Status.UNAVAILABLE})
EVALUATION_FAILURES = frozenset(CHILD_STATUSES | SANDBOX_STATUSES | {Status.OVER_CAP}) - {Status.OK}

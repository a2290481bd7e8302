"""The contract between the loop and whoever writes child programs.

The offline proposer and the LLM proposer return the same thing (a full program text, or
the reason there is none, and why it was written), so the loop does not care which ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from evolve.propose.errors import LLMError
from evolve.records import ProgramRecord
from evolve.status import Status
from evolve.tasks import Task


@dataclass(frozen=True)
class ProposalRequest:
    task: Task
    parent: ProgramRecord
    inspirations: tuple[ProgramRecord, ...] = ()
    failures: tuple[ProgramRecord, ...] = ()  # recent failed children, so the proposer learns from them
    edit_mode: str = "diff"  # diff (SEARCH/REPLACE against the block) or full (rewrite the block)
    seed: int = 0  # per-request random seed: runs with a fixed seed are reproducible


@dataclass(frozen=True)
class Proposal:
    code: str | None  # the full child program, or None when there is no usable code
    explanation: str = ""
    proposer: str = ""
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    edit_mode: str = ""
    status: Status | None = None  # why code is None (no_code, diff_not_applied, syntax_error, ...); None with code
    message: str = ""  # the reason in words, for the archive and the next prompt
    extra: dict = field(default_factory=dict)


def built_from(request: ProposalRequest, proposal: Proposal) -> int | None:
    """The child's parent in the archive: the program the proposer says it built the child
    from (the offline grammar climbs from an inspiration when the parent is a law it cannot
    read or a generic seed, and sometimes writes a law fresh), else the request's parent."""
    if "built_from" in proposal.extra:
        named = proposal.extra["built_from"]
        return named if named is None or isinstance(named, int) else request.parent.id
    return request.parent.id


def propose_or_fail(proposer: "Proposer", request: ProposalRequest) -> Proposal:
    """The proposer's child, or a proposal without code saying why the proposer failed.

    A proposer reads programs a model wrote (the offline grammar reads a parent's LAW_SPEC
    back from its text): a fault it did not foresee costs that child, not the run and its
    hours (attack round 6 stopped an offline run with a traceback). The proposer's own
    errors for the user (LLMError: a refused key, a budget reached) still stop the run."""
    try:
        return proposer.propose(request)
    except LLMError:
        raise
    except Exception as exc:  # noqa: BLE001 - one child lost, recorded with the reason
        return Proposal(None, proposer=proposer.name, status=Status.NO_CODE,
                        message=f"the {proposer.name} proposer failed: {type(exc).__name__}: {exc}"[:500])


class Proposer(Protocol):
    name: str  # stored with every program it wrote
    duplicate_retries: int  # how often to ask again for a program already stored (0 where asking costs tokens)
    parallel_requests: int  # proposals worth having in flight at once (a model endpoint's concurrency)

    def preflight(self) -> None:
        """Fail fast, with a one-line error, when the proposer cannot work (no key, an
        unreachable endpoint, an unknown model): called before a run writes anything."""
        ...

    def propose(self, request: ProposalRequest) -> Proposal: ...

    def close(self) -> None: ...

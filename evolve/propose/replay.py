"""Replaying a run's recorded model replies: a deterministic LLM run without a model.

Every LLM proposal stores its raw reply and its request's seed. Run again with the same
task, settings and random seed, the loop makes the same requests, and this proposer
answers each with the reply recorded for its seed, so the run is reproduced exactly
(and can be re-scored, e.g. after a scorer change) at no token cost.
"""

from __future__ import annotations

import time
from pathlib import Path

from evolve.store.rundir import open_read_only
from evolve.propose.client import Completion
from evolve.propose.base import ProposalRequest
from evolve.propose.model import LLMProposer


class RecordedReplies:
    """Stands in for the LLM client: replies looked up by request seed, no network."""

    def __init__(self, replies: dict[int, dict]):
        self.replies = replies

    @classmethod
    def from_run(cls, run_dir: Path) -> "RecordedReplies":
        with open_read_only(run_dir) as archive:
            records = archive.programs(order="id")
        replies = {int(r.extra["request_seed"]): {"text": r.extra["reply"], "model": r.model or ""}
                   for r in records if r.proposer == "llm" and "reply" in r.extra and "request_seed" in r.extra}
        return cls(replies)

    def choose_model(self, rng=None) -> str:
        return "replay"

    def close(self) -> None:
        """Nothing to release."""


class ReplayProposer(LLMProposer):
    """The LLM proposer's splicing and bookkeeping, fed with recorded replies."""

    def __init__(self, run_dir: Path, parallel_requests: int = 1):
        super().__init__(RecordedReplies.from_run(run_dir), parallel_requests=parallel_requests)

    def reply(self, request: ProposalRequest, model: str, messages: list[dict] | None = None) -> Completion:
        recorded = self.client.replies.get(request.seed)
        if recorded is None:
            raise LookupError(f"no recorded reply for request seed {request.seed}")
        started = time.perf_counter()
        return Completion(recorded["text"], recorded["model"], 0, 0, time.perf_counter() - started, "stop")  # nothing spent

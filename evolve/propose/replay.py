"""Replaying a run's recorded model replies: a deterministic LLM run without a model.

Every LLM proposal stores its raw reply and its request's seed. Run again with the same
task, settings and random seed, the loop makes the same requests, and this proposer
answers each with the reply recorded for its seed, so the run is reproduced exactly
(and can be re-scored, e.g. after a scorer change) at no token cost.

Faithful means the reply is read as it was first read: in the prompt style it answered
(a compact prompt asked for the whole block, so its reply is spliced as a full rewrite
whatever the request's edit mode), with its finish reason (a reply cut at the token limit
says so in its failure message), and stored with the prompt it answered.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from evolve.store.rundir import open_read_only
from evolve.propose.client import Completion
from evolve.propose.base import ProposalRequest
from evolve.propose.model import LLMProposer
from evolve.propose.prompts import render_messages


class RecordedReplies:
    """Stands in for the LLM client: replies looked up by request seed, no network."""

    def __init__(self, replies: dict[int, dict]):
        self.replies = replies

    @classmethod
    def from_run(cls, run_dir: Path) -> "RecordedReplies":
        with open_read_only(run_dir) as archive:
            records = archive.programs(order="id")
        replies = {int(r.extra["request_seed"]): recorded_reply(r.extra, r.model)
                   for r in records if r.proposer == "llm" and "reply" in r.extra and "request_seed" in r.extra}
        return cls(replies)

    def get(self, seed: int) -> dict:
        recorded = self.replies.get(seed)
        if recorded is None:
            raise LookupError(f"no recorded reply for request seed {seed}")
        return recorded

    def choose_model(self, rng=None) -> str:
        return "replay"

    def close(self) -> None:
        """Nothing to release."""


def recorded_reply(extra: dict, model: str | None) -> dict:
    """What a replay needs of a stored LLM proposal. Runs stored before prompt styles were
    recorded used the full prompt."""
    return {"text": extra["reply"], "model": model or "", "prompt_style": extra.get("prompt_style") or "full",
            "finish_reason": extra.get("finish_reason", "stop"), "prompt": extra.get("prompt")}


class ReplayProposer(LLMProposer):
    """The LLM proposer's splicing and bookkeeping, fed with recorded replies."""

    def __init__(self, run_dir: Path, parallel_requests: int = 1, prompts_dir: Path | None = None):
        super().__init__(RecordedReplies.from_run(run_dir), prompts_dir, parallel_requests=parallel_requests)

    def fitting_reply(self, request: ProposalRequest, model: str) -> tuple[Completion, list[dict], str, ProposalRequest]:
        """The recorded reply with the prompt it answered, its style, and the request as that
        style shaped it (a compact prompt: a full rewrite of the parent alone)."""
        recorded = self.client.get(request.seed)
        style = recorded["prompt_style"]
        if style == "compact":
            request = dataclasses.replace(request, inspirations=(), failures=(), edit_mode="full")
        messages = recorded["prompt"] or render_messages(request, self.prompts_dir, style)
        return self.reply(request, model, messages), messages, style, request

    def reply(self, request: ProposalRequest, model: str, messages: list[dict] | None = None) -> Completion:
        recorded = self.client.get(request.seed)
        started = time.perf_counter()
        # nothing spent: no tokens
        return Completion(recorded["text"], recorded["model"], 0, 0, time.perf_counter() - started, recorded["finish_reason"])

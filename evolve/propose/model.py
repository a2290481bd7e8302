"""The language-model proposer: render the prompt, ask the model, splice its reply.

A reply that yields no scorable child is not an exception but a Proposal without code
and with the reason ("diff_not_applied: ..."), so the loop stores it as a failure and
later prompts show it. Only errors that make every further request pointless (a refused
key, an exhausted budget) propagate and stop the run.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from evolve.propose.client import Completion, ContextOverflow, LLMClient, LLMUnavailable
from evolve.propose.prompts import render_messages
from evolve.propose.base import Proposal, ProposalRequest
from evolve.propose.splice import SpliceError, reply_prose, splice
from evolve.status import Status

EXPLANATION_CHARS = 500


class LLMProposer:
    """Writes children with an OpenAI-compatible model through an LLMClient.

    It keeps no state between requests (the loop decides the edit mode, falling back to a
    full rewrite after a diff that did not apply), so seeded runs and replays agree.
    """

    name = "llm"

    duplicate_retries = 0  # every request costs tokens: a repeated program is scored from the cache instead

    def __init__(self, client: LLMClient, prompts_dir: Path | None = None, parallel_requests: int = 1):
        self.client = client
        self.parallel_requests = max(1, int(parallel_requests))
        self.prompts_dir = prompts_dir

    def propose(self, request: ProposalRequest) -> Proposal:
        model = self.client.choose_model(random.Random(request.seed))
        messages: list[dict] = []
        try:
            completion, messages = self.fitting_reply(request, model)
        except LLMUnavailable as exc:
            return Proposal(None, proposer=self.name, model=model, edit_mode=request.edit_mode, status=Status.UNAVAILABLE, message=str(exc))
        except LookupError as exc:  # a replay with no recorded reply for this request
            return Proposal(None, proposer=self.name, model=model, edit_mode=request.edit_mode, status=Status.NO_CODE, message=str(exc))
        base = Proposal(
            None,
            explanation=reply_prose(completion.text, EXPLANATION_CHARS),
            proposer=self.name,
            model=completion.model,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            seconds=completion.seconds,
            edit_mode=request.edit_mode,
            extra={"finish_reason": completion.finish_reason, "reply": completion.text, "request_seed": request.seed,
                   "prompt": [{"role": m["role"], "content": m["content"]} for m in messages]},
        )
        try:
            child = splice(request.parent.code, completion.text, request.edit_mode)
        except SpliceError as exc:
            return dataclasses.replace(base, status=exc.kind, message=splice_failure(exc, completion.finish_reason))
        return dataclasses.replace(base, code=child.program, edit_mode=child.edit_mode)

    def fitting_reply(self, request: ProposalRequest, model: str) -> tuple[Completion, list[dict]]:
        """The reply and the messages it answered: on a context overflow the prompt is
        shrunk (fewer inspirations and failures) and sent again; when even the smallest
        prompt does not fit, ContextOverflow stops the run with one line."""
        last: ContextOverflow | None = None
        for smaller in shrunk_requests(request):
            messages = render_messages(smaller, self.prompts_dir)
            try:
                return self.reply(smaller, model, messages), messages
            except ContextOverflow as exc:
                last = exc
        raise ContextOverflow(f"even the smallest prompt (parent only, no inspirations or failures) does not fit the model's context: {last}") from None

    def reply(self, request: ProposalRequest, model: str, messages: list[dict]) -> Completion:
        """The model's reply to the rendered messages (a replay overrides this)."""
        return self.client.complete(messages, model=model, seed=request.seed)

    def preflight(self) -> None:
        """The client's own check of the endpoint and model, where it has one."""
        check = getattr(self.client, "preflight", None)
        if check is not None:
            check()

    def close(self) -> None:
        """Release the client's HTTP connections; the proposer owns its client."""
        close = getattr(self.client, "close", None)
        if close is not None:
            close()


def shrunk_requests(request: ProposalRequest) -> list[ProposalRequest]:
    """The request, then smaller prompts: one inspiration and failure, then the parent alone."""
    steps = [request]
    for keep in (1, 0):
        smaller = dataclasses.replace(request, inspirations=request.inspirations[:keep], failures=request.failures[:keep])
        if (len(smaller.inspirations), len(smaller.failures)) != (len(steps[-1].inspirations), len(steps[-1].failures)):
            steps.append(smaller)
    return steps


def splice_failure(error: SpliceError, finish_reason: str | None) -> str:
    """The reason a reply gave no child, noting a reply cut off by the token limit (the usual cause of broken code)."""
    text = error.reason
    if finish_reason == "length":
        text += " (the reply was cut off at the token limit)"
    return text

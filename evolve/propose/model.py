"""The language-model proposer: render the prompt, ask the model, splice its reply.

A reply that yields no scorable child is not an exception but a Proposal without code
and with the reason ("diff_not_applied: ..."), so the loop stores it as a failure and
later prompts show it. Only errors that make every further request pointless (a refused
key, an exhausted budget) propagate and stop the run, and Cancelled (a Ctrl-C).

Prompt styles: "full" (the detailed prompt), "compact" (one instruction and the parent's
block, for small models; it always asks for the whole block) and "auto": the full prompt,
shrunk on a context overflow, then the compact one when even the smallest full prompt does
not fit; once the server has said (in /models or an overflow message) that its context is
under COMPACT_BELOW_TOKENS, the compact prompt straight away.
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
COMPACT_BELOW_TOKENS = 4096  # the full prompt is about 2,400 tokens, plus room for a reply
PROMPT_STYLES = ("auto", "full", "compact")


class LLMProposer:
    """Writes children with an OpenAI-compatible model through an LLMClient.

    It keeps no state between requests (the loop decides the edit mode, falling back to a
    full rewrite after a diff that did not apply), so seeded runs and replays agree.
    """

    name = "llm"

    duplicate_retries = 0  # every request costs tokens: a repeated program is scored from the cache instead

    def __init__(self, client: LLMClient, prompts_dir: Path | None = None, parallel_requests: int = 1, prompt_style: str = "auto"):
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt style {prompt_style!r} (choose from {', '.join(PROMPT_STYLES)})")
        self.client = client
        self.parallel_requests = max(1, int(parallel_requests))
        self.prompts_dir = prompts_dir
        self.prompt_style = prompt_style

    def propose(self, request: ProposalRequest) -> Proposal:
        model = self.client.choose_model(random.Random(request.seed))
        messages: list[dict] = []
        style = "full"
        try:
            completion, messages, style, request = self.fitting_reply(request, model)
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
                   "prompt_style": style, "usage_estimated": completion.usage_estimated, "cost_usd": self.cost_of(completion),
                   "prompt": [{"role": m["role"], "content": m["content"]} for m in messages]},
        )
        try:
            child = splice(request.parent.code, completion.text, request.edit_mode)
        except SpliceError as exc:
            return dataclasses.replace(base, status=exc.kind, message=splice_failure(exc, completion.finish_reason))
        return dataclasses.replace(base, code=child.program, edit_mode=child.edit_mode)

    def fitting_reply(self, request: ProposalRequest, model: str) -> tuple[Completion, list[dict], str, ProposalRequest]:
        """The reply, the messages it answered, their prompt style and the request they were
        rendered from: on a context overflow the prompt is shrunk (fewer inspirations and
        failures, then, in style auto, the compact prompt) and sent again; when even the
        smallest prompt does not fit, ContextOverflow stops the run with one line."""
        last: ContextOverflow | None = None
        for style, smaller in self.prompt_steps(request):
            if style == "full" and self.prompt_style == "auto" and self.context_is_small():
                continue  # an overflow (this request's or another's) named a context too small for any full prompt
            messages = render_messages(smaller, self.prompts_dir, style)
            try:
                return self.reply(smaller, model, messages), messages, style, smaller
            except ContextOverflow as exc:
                last = exc
        smallest = "the compact prompt" if self.prompt_style != "full" else "the parent alone, no inspirations or failures"
        raise ContextOverflow(f"even the smallest prompt ({smallest}) does not fit the model's context: {last}") from None

    def prompt_steps(self, request: ProposalRequest) -> list[tuple[str, ProposalRequest]]:
        """(style, request) to try in order, from the largest prompt to the smallest."""
        compact = [("compact", dataclasses.replace(request, inspirations=(), failures=(), edit_mode="full"))]
        if self.prompt_style == "compact" or (self.prompt_style == "auto" and self.context_is_small()):
            return compact
        full = [("full", smaller) for smaller in shrunk_requests(request)]
        return full + compact if self.prompt_style == "auto" else full

    def context_is_small(self) -> bool:
        """The server said its context is too small for the full prompt (in /models or an overflow)."""
        size = getattr(self.client, "context_size", None)
        return size is not None and size < COMPACT_BELOW_TOKENS

    def reply(self, request: ProposalRequest, model: str, messages: list[dict]) -> Completion:
        """The model's reply to the rendered messages (a replay overrides this)."""
        return self.client.complete(messages, model=model, seed=request.seed)

    def preflight(self) -> None:
        """The client's own check of the endpoint and model, where it has one."""
        check = getattr(self.client, "preflight", None)
        if check is not None:
            check()

    def cost_of(self, completion: Completion) -> float:
        """What the reply cost in USD at the configured prices (0 without prices)."""
        prices = getattr(self.client, "_prices", {}).get(completion.model, (0.0, 0.0))
        return (completion.prompt_tokens * prices[0] + completion.completion_tokens * prices[1]) / 1e6

    def cancel(self) -> None:
        """Stop every request in flight now (Ctrl-C): the server stops generating them."""
        cancel = getattr(self.client, "cancel", None)
        if cancel is not None:
            cancel()

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
    elif finish_reason == "timeout":
        text += " (the reply was cut off at the request timeout: a slow server needs a longer --request-timeout or a smaller --max-tokens)"
    return text

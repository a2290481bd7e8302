"""A blocking, thread-safe client for any OpenAI-compatible chat endpoint.

Works against OpenAI, vLLM, Ollama, llama.cpp server and LiteLLM: only
`POST {base_url}/chat/completions` is used. The `openai` package does the HTTP; its own
retries are off (`max_retries=0`) so that this module alone decides what is retried, how
long to wait, and which one-line message the user sees.

Choices made here (the loop and the LLM proposer rely on them):

* Retried, with exponential backoff plus jitter (Retry-After honoured, capped): HTTP 408,
  409, 429 and 5xx, connection errors, timeouts, and replies that are not valid JSON (a
  proxy or server hiccup; they usually pass on a second try). After `config.max_retries`
  retries: `LLMUnavailable`.
* Not retried: any other 4xx (400, 401, 403, 404, 422...): `LLMAuthError`, the run should
  stop because every further request would fail the same way.
* A reply with no choices or empty content is *not* an error: it returns a `Completion`
  with `text == ""`, and the proposer records an empty proposal.
* No models configured: the model is `$EVOLVE_MODEL`, else "gpt-4o-mini".
* Replies are streamed (`config.stream`), so a timeout or `cancel()` (Ctrl-C) closes the
  connection and the server stops generating (see evolve.propose.stream). A timed-out
  request is not resent: the same request would time out the same way. A stream still
  arriving at the timeout is a reply cut there (finish_reason "timeout", like "length" at
  max_tokens): a slow server is not down, and a reply it was writing is kept.
* Token counts come from the reply's `usage` (a stream's last chunk); when the server omits
  it the completion is counted as stream chunks (or characters / 4 for a plain reply), the
  prompt estimated as characters / 4, and the completion says `usage_estimated=True`.
  A stream that breaks off mid-generation (timeout, Ctrl-C) is billed too, under the usage's
  `cut_short` (estimated from the chunks received unless the server sent usage).
* `Completion.seconds` is the time holding a concurrency slot: waiting for a free slot is
  not generation time.
* Budgets are checked before each call (no request is sent once reached) and after it
  (the call that crosses the budget raises `BudgetExceeded`, with the paid-for completion
  attached as `exc.completion`).
* The API key never appears in messages or reprs: messages are redacted before raising.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
)

from evolve.config import ModelConfig
from evolve.propose.errors import Cancelled, ContextOverflow, LLMAuthError, LLMError, LLMUnavailable
from evolve.propose.endpoint import _retry_after, _root_cause, context_size_in, effective_concurrency, is_context_overflow, is_stale_connection, refusal_message, server_message
from evolve.propose.usage import ModelUsage, Usage  # noqa: F401 - re-exported: callers import them from here
from evolve.propose.stream import EmptyStream, OpenStreams, RawReply, StreamProgress, StreamTimeout, expire_stream, read_stream

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"
PLACEHOLDER_KEY = "not-needed"  # local servers (vLLM, Ollama) ignore the key but openai wants one
CHARS_PER_TOKEN = 4
RETRYABLE_STATUS = frozenset({408, 409, 429})
MAX_MESSAGE_CHARS = 240
STALE_WITHIN_S = 0.5  # a request failing this soon with "disconnected without a response" met a closed connection
TIMEOUT_FINISH = "timeout"  # finish_reason of a streamed reply cut at the request timeout


@dataclass(frozen=True)
class Completion:
    text: str
    model: str  # the model name that was requested (the key for prices and usage)
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # time spent on the request's attempts, holding a slot (waiting for a free slot excluded)
    finish_reason: str | None
    usage_estimated: bool = False  # True when the server sent no usage and tokens were estimated


class BudgetExceeded(LLMError):
    """The run's token or cost budget is reached; `completion` is the reply that crossed it."""

    def __init__(self, message: str, completion: Completion | None = None) -> None:
        super().__init__(message)
        self.completion = completion


class _Transient(Exception):
    """An attempt that failed in a way worth retrying; `retry_after` is the server's hint."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class LLMClient:
    """Sends chat requests to one OpenAI-compatible endpoint, with retries, budgets and usage.

    `retry_wait_s` is the first backoff (doubling each retry, plus up to as much jitter,
    at most `retry_wait_max_s`); `max_retry_after_s` caps a server's Retry-After. Tests
    set them tiny.
    """

    def __init__(
        self,
        config: ModelConfig,
        usage: Usage | None = None,
        budget_tokens: int | None = None,
        budget_usd: float | None = None,
        rng: random.Random | None = None,
        *,
        retry_wait_s: float = 1.0,
        retry_wait_max_s: float = 30.0,
        max_retry_after_s: float = 60.0,
    ) -> None:
        self.config = config
        self.usage = usage if usage is not None else Usage()
        self.budget_tokens = budget_tokens
        self.budget_usd = budget_usd
        self.retry_wait_s = retry_wait_s
        self.retry_wait_max_s = retry_wait_max_s
        self.max_retry_after_s = max_retry_after_s
        self._rng = rng if rng is not None else random.Random()
        self._rng_lock = threading.Lock()
        self._jitter = random.Random()  # backoff jitter must not consume the seeded model-choice rng
        self._names, self._weights = _ensemble(config)
        self._options_lock = threading.Lock()
        self._options: dict[str, dict[str, Any]] = {}  # per model: request fields it accepts
        self._no_stream_options: set[str] = set()  # models whose server refused stream_options
        self._prices = {m.name: (m.price_prompt_per_mtok, m.price_completion_per_mtok) for m in config.models}
        self._slots = threading.BoundedSemaphore(effective_concurrency(config))
        self._streams = OpenStreams()
        self.context_size: int | None = None  # the model's context in tokens, when the server says it
        self._told_no_usage = False
        self._api_key = _api_key(config)
        import openai  # here, not at module level: it takes seconds to import, and every `evolve` command loads this module

        self._client = openai.OpenAI(
            base_url=config.resolved_base_url(),
            api_key=self._api_key,
            max_retries=0,
            timeout=config.request_timeout_s,
        )
        self.base_url = str(self._client.base_url).rstrip("/")

    def __repr__(self) -> str:
        return f"LLMClient(base_url={self.base_url!r}, models={self._names!r})"

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        self._client.close()

    def cancel(self) -> None:
        """Stop every request now (Ctrl-C): streams in flight are closed, so the server stops
        generating them; requests waiting for a slot, and any sent later, raise Cancelled."""
        self._streams.cancel()

    def choose_model(self, rng: random.Random | None = None) -> str:
        """A model of the ensemble, drawn with probability proportional to its weight.

        Pass an rng seeded per request to make the choice independent of thread timing.
        """
        if len(self._names) == 1:
            return self._names[0]
        if rng is not None:
            return rng.choices(self._names, weights=self._weights, k=1)[0]
        with self._rng_lock:
            return self._rng.choices(self._names, weights=self._weights, k=1)[0]

    def check_budget(self) -> None:
        """Raise BudgetExceeded when the token or cost budget is reached."""
        if self.budget_tokens is not None and self.usage.total_tokens >= self.budget_tokens:
            raise BudgetExceeded(f"token budget reached: {self.usage.total_tokens} of {self.budget_tokens} tokens used")
        if self.budget_usd is not None and self.usage.cost_usd >= self.budget_usd:
            raise BudgetExceeded(f"cost budget reached: ${self.usage.cost_usd:.4f} of ${self.budget_usd:.4f} spent")

    def complete(self, messages: list[dict], model: str | None = None, seed: int | None = None) -> Completion:
        """One chat completion (`seed` sent when given); blocks, retries transient failures, records usage."""
        self.check_budget()
        model = model or self.choose_model()
        try:
            reply = self._with_retries(messages, model, seed)
        except Cancelled:
            raise
        except LLMError:
            self.usage.record_failure(model)
            raise
        completion = self._to_completion(reply, messages, model)
        self._record(completion)
        try:
            self.check_budget()
        except BudgetExceeded as exc:
            raise BudgetExceeded(str(exc), completion) from None
        return completion

    def _with_retries(self, messages: list[dict], model: str, seed: int | None = None) -> Any:
        retrying = Retrying(
            stop=stop_after_attempt(max(0, int(self.config.max_retries)) + 1),
            wait=self._wait,
            retry=retry_if_exception_type(_Transient),
            before_sleep=self._before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(self._attempt, messages, model, seed)
        except _Transient as exc:
            attempts = max(0, int(self.config.max_retries)) + 1
            raise LLMUnavailable(self._redact(f"{self.base_url} unavailable after {attempts} attempt(s): {exc.reason}")) from None

    def request_options(self, model: str) -> dict[str, Any]:
        """The sampling fields sent to a model: temperature and max_tokens, until the model
        refuses one of them (see adapt_options)."""
        with self._options_lock:
            default = {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens}
            return dict(self._options.setdefault(model, default))

    def adapt_options(self, model: str, detail: str) -> bool:
        """Newer OpenAI models refuse `max_tokens` (they take `max_completion_tokens`) and any
        temperature but the default. Adapt to such a 400 once per model; True when adapted."""
        with self._options_lock:
            options = self._options[model]
            if self.config.stream and "stream_options" in detail and model not in self._no_stream_options:
                self._no_stream_options.add(model)
                return True
            if "max_tokens" in options and "max_completion_tokens" in detail:
                options["max_completion_tokens"] = options.pop("max_tokens")
                return True
            if "temperature" in options and "temperature" in detail and ("unsupported" in detail.lower() or "not support" in detail.lower()):
                del options["temperature"]
                return True
        return False

    def _attempt(self, messages: list[dict], model: str, seed: int | None = None) -> Any:
        """One HTTP request, holding a concurrency slot; classifies every failure.

        A refused sampling field is dropped or renamed and the request sent again at once:
        that is a different request, not a retry, so it uses no retry or backoff.
        """
        import openai  # already loaded by the constructor

        while True:  # each adaptation removes a field, so this ends after at most two
            try:
                return self._send(messages, model, seed)
            except openai.BadRequestError as exc:
                if not self.adapt_options(model, server_message(exc)):
                    raise self._status_error(exc, model) from None
                log.info("model %s refused a sampling field; now sending %s", model, ", ".join(sorted(self.request_options(model))))

    def _send(self, messages: list[dict], model: str, seed: int | None = None) -> RawReply:
        import openai  # already loaded by the constructor

        extra = {} if seed is None else {"seed": int(seed) % 2**31}
        self._take_slot()
        try:
            started = time.monotonic()
            try:
                if self.config.stream:
                    try:
                        return self._resent_if_stale(self._streamed, messages, model, extra, started)
                    except EmptyStream:  # llama-cpp-python fails inside a stream: a plain request says why
                        log.info("%s sent an empty stream; asking again without streaming", self.base_url)
                return self._resent_if_stale(self._plain, messages, model, extra, started)
            except openai.BadRequestError as exc:
                if is_context_overflow(exc):
                    detail = server_message(exc)
                    self.context_size = context_size_in(detail) or self.context_size
                    raise ContextOverflow(self._redact(refusal_message(400, self.base_url, model, detail), limit=1000)) from None
                raise
            except (openai.APITimeoutError, StreamTimeout):  # not resent: the same request would time out again
                raise LLMUnavailable(f"{self.base_url} timed out after {self.config.request_timeout_s:g}s (not resent)") from None
            except openai.APIConnectionError as exc:
                if self._streams.cancelled.is_set():
                    raise Cancelled("the request was cancelled") from None
                raise _Transient(f"connection failed ({_root_cause(exc)})") from None
            except openai.APIStatusError as exc:
                raise self._status_error(exc, model) from None
            except json.JSONDecodeError as exc:  # the body claimed to be JSON but was not
                raise _Transient(f"invalid JSON in reply ({exc.msg})") from None
        finally:
            self._slots.release()

    def _resent_if_stale(self, send: Any, *args: Any) -> RawReply:
        """send(*args), once more at once when it went out on a kept-alive connection the
        server had closed (llama-cpp-python closes it after an empty stream). Not a retry: no
        wait, no count. Only a failure within STALE_WITHIN_S: a closed connection fails at
        once, while a server or proxy that drops a request it was answering fails later, and
        that goes to the counted retries (it may have generated, and billed, a reply)."""
        import openai  # already loaded by the constructor

        sent = time.monotonic()
        try:
            return send(*args)
        except openai.APIConnectionError as exc:
            if not is_stale_connection(exc) or self._streams.cancelled.is_set() or time.monotonic() - sent > STALE_WITHIN_S:
                raise
        log.info("%s had closed a kept-alive connection; sending on a new one", self.base_url)
        return send(*args)

    def _take_slot(self) -> None:
        """Wait for a free concurrency slot, giving up when the client is cancelled."""
        while not self._slots.acquire(timeout=0.1):
            if self._streams.cancelled.is_set():
                raise Cancelled("the request was cancelled before it was sent")
        if self._streams.cancelled.is_set():
            self._slots.release()
            raise Cancelled("the request was cancelled before it was sent")

    def _plain(self, messages: list[dict], model: str, extra: dict, started: float) -> RawReply:
        reply = self._client.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            **self.request_options(model),
            **extra,
        )
        if isinstance(reply, str):  # openai hands back the raw text of a non-JSON reply
            raise _Transient("reply is not JSON")
        text, finish_reason = _first_choice(reply)
        usage = getattr(reply, "usage", None)
        prompt, completion = getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
        if not isinstance(prompt, int) or not isinstance(completion, int):
            prompt, completion = None, None
        return RawReply(text, finish_reason, prompt, completion, time.monotonic() - started)

    def _streamed(self, messages: list[dict], model: str, extra: dict, started: float) -> RawReply:
        stream = self._client.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            **self.stream_options(model),
            **self.request_options(model),
            **extra,
        )
        progress = StreamProgress()
        deadline = started + float(self.config.request_timeout_s)
        # the deadline holds even when no chunk comes: llama-cpp-python sends its headers at
        # once and then a keep-alive comment every 15 s, so no read ever times out
        expired = threading.Event()
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), expire_stream, (expired, stream.response))
        timer.daemon = True
        with self._streams.track(stream.response):
            timer.start()
            try:
                return read_stream(stream, deadline, started, progress)
            except BaseException as exc:
                if isinstance(exc, StreamTimeout) or expired.is_set():
                    return self._cut_at_timeout(messages, model, progress, started)
                self._bill_cut_short(messages, model, progress)
                raise
            finally:
                timer.cancel()
                stream.close()  # a reply cut short closes its connection: the server stops generating

    def _cut_at_timeout(self, messages: list[dict], model: str, progress: StreamProgress, started: float) -> RawReply:
        """A stream still open at the request timeout. With text, the server is generating,
        only slowly: the reply so far is the reply, cut at the time limit as it would be at
        max_tokens (asked again, it would be cut the same way). Without, StreamTimeout."""
        if not progress.content_chunks:
            self._bill_cut_short(messages, model, progress)
            raise StreamTimeout
        log.info("%s: reply cut at the %gs request timeout after %d tokens", self.base_url,
                 self.config.request_timeout_s, progress.content_chunks)
        return progress.reply(started, TIMEOUT_FINISH)

    def _bill_cut_short(self, messages: list[dict], model: str, progress: StreamProgress) -> None:
        """Count the tokens of a stream that broke off (timeout, Ctrl-C, lost connection) once
        the server had begun answering: it evaluated the prompt and generated what was
        streamed, and bills both. Estimated unless a usage chunk came: the completion as the
        content chunks received, the prompt as characters / 4."""
        if not progress.chunks:
            return
        estimated = progress.prompt_tokens is None or progress.completion_tokens is None
        prompt = estimate_tokens(messages) if estimated else int(progress.prompt_tokens or 0)
        completion = progress.content_chunks if estimated else int(progress.completion_tokens or 0)
        price_prompt, price_completion = self._prices.get(model, (0.0, 0.0))
        self.usage.record_cut_short(model, prompt, completion, (prompt * price_prompt + completion * price_completion) / 1e6, estimated)
        log.info("a stream from %s broke off after %d tokens; counted (%s)", self.base_url, completion,
                 "estimated" if estimated else "server usage")

    def stream_options(self, model: str) -> dict[str, Any]:
        """`stream_options.include_usage`, until the model refuses the field (older servers)."""
        with self._options_lock:
            return {} if model in self._no_stream_options else {"stream_options": {"include_usage": True}}

    def _status_error(self, exc: openai.APIStatusError, model: str) -> Exception:
        status = exc.status_code
        detail = server_message(exc)
        if status in RETRYABLE_STATUS or status >= 500:
            return _Transient(f"HTTP {status}: {detail}", _retry_after(exc.response.headers))
        return LLMAuthError(self._redact(refusal_message(status, self.base_url, model, detail)))

    def _wait(self, state: RetryCallState) -> float:
        """Backoff: the server's Retry-After (capped) when given, else exponential with jitter."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), self.max_retry_after_s)
        doubling = self.retry_wait_s * 2 ** (state.attempt_number - 1)
        return min(doubling, self.retry_wait_max_s) + self._jitter.uniform(0, self.retry_wait_s)

    def _sleep(self, seconds: float) -> None:
        """The backoff between retries, cut short by cancel()."""
        if self._streams.cancelled.wait(seconds):
            raise Cancelled("the request was cancelled while waiting to retry")

    def _before_sleep(self, state: RetryCallState) -> None:
        self.usage.record_retry()
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.info("LLM request failed (%s); retry %d in %.2fs", self._redact(str(exc)), state.attempt_number, wait)

    def _to_completion(self, reply: RawReply, messages: list[dict], model: str) -> Completion:
        """The reply with its token counts: the server's usage, else counted (see the module doc)."""
        prompt, completion = reply.prompt_tokens, reply.completion_tokens
        estimated = prompt is None or completion is None
        if estimated and not self._told_no_usage:
            self._told_no_usage = True
            log.warning("%s sent no token usage: prompt tokens are estimated as characters / 4, completion tokens %s",
                        self.base_url, "counted as stream chunks" if completion is not None else "as characters / 4")
        prompt = estimate_tokens(messages) if prompt is None else prompt
        completion = _estimate(reply.text) if completion is None else completion
        return Completion(reply.text, model, prompt, completion, reply.seconds, reply.finish_reason, estimated)

    def _record(self, completion: Completion) -> None:
        price_prompt, price_completion = self._prices.get(completion.model, (0.0, 0.0))
        cost = (completion.prompt_tokens * price_prompt + completion.completion_tokens * price_completion) / 1e6
        self.usage.record_call(
            completion.model, completion.prompt_tokens, completion.completion_tokens, cost, completion.usage_estimated
        )

    def _redact(self, text: str, limit: int = 0) -> str:
        return redact(text, self._api_key, limit or MAX_MESSAGE_CHARS)

    def preflight(self) -> None:
        """GET {base_url}/models with a short timeout: a one-line error naming the URL when unreachable."""
        from evolve.propose.endpoint import check_endpoint

        check_endpoint(self)


def _ensemble(config: ModelConfig) -> tuple[list[str], list[float]]:
    """Model names and weights; with no models configured, $EVOLVE_MODEL or gpt-4o-mini."""
    if not config.models:
        return [os.environ.get("EVOLVE_MODEL") or DEFAULT_MODEL], [1.0]
    names = [m.name for m in config.models]
    weights = [float(m.weight) for m in config.models]
    if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
        raise LLMError(f"model weights must be non-negative with a positive sum, got {weights}")
    return names, weights


def _api_key(config: ModelConfig) -> str:
    key = config.resolved_api_key()
    if key:
        return key
    if config.resolved_base_url():
        return PLACEHOLDER_KEY
    raise LLMError("no API key: set OPENAI_API_KEY or [model] api_key, or run the offline proposer")


def _first_choice(reply: Any) -> tuple[str, str | None]:
    """Text and finish reason of the first choice; "" when there is none (not an error)."""
    choices = getattr(reply, "choices", None) or []
    if not choices:
        return "", None
    choice = choices[0]
    message = getattr(choice, "message", None)
    content = getattr(message, "content", None)
    return (content if isinstance(content, str) else ""), getattr(choice, "finish_reason", None)


def estimate_tokens(messages: list[dict]) -> int:
    """A rough prompt size for servers that report no usage: characters / 4."""
    return sum(_estimate(str(m.get("content") or "")) for m in messages)


def _estimate(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def redact(text: str, secret: str | None, limit: int = MAX_MESSAGE_CHARS) -> str:
    """One line, at most `limit` characters, with the key (and anything shaped like one) masked."""
    if secret and secret != PLACEHOLDER_KEY:
        text = text.replace(secret, "***")
    text = re.sub(r"\bsk-[A-Za-z0-9_\-*]{6,}", "sk-***", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."

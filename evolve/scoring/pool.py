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
import logging
import os
import pickle
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path


from evolve.config import ScorerConfig
from evolve.status import CHILD_STATUSES, SANDBOX_STATUSES, Status
from evolve.scoring.frames import (
    Expectation,
    FrameError,
    SandboxError,
    WorkerFailure,
    decode_report,
    read_message,
    send_message,
)
from evolve.scoring.in_sandbox import GroupJob, RunReport

STARTUP_TIMEOUT_S = 120.0  # a cold start imports numpy and scipy from disk
RESPONSE_GRACE_S = 15.0  # beyond timeout_s: the worker's own setup, kill and cleanup bounds
STOP_GRACE_S = 5.0
ABORT_GRACE_S = 1.0  # closing on an exception (Ctrl-C): idle workers exit on EOF, busy ones are killed
HELLO_CAP_BYTES = 65_536
FORMULA_REPLY_CAP_BYTES = 4 << 20
THREAD_PINNING = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                  "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS")
KEPT_PARENT_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",  # numpy may need them on some CPUs
                         "EVOLVE_SANDBOX_AUDIT_HOOK",  # "0" only in the kernel-layer attack tests
                         "EVOLVE_SANDBOX_NPROC",  # > 1 only in the cgroup attack tests
                         "EVOLVE_SANDBOX_CGROUPS",  # "0": no cgroup layers (tests of the fallback, benches)
                         "EVOLVE_SANDBOX_PIDNS")  # "0": no PID namespace (benches)
PLANS = ("auto", "root", "userns", "basic")
LOG = logging.getLogger("evolve.sandbox")
WARNED: set[str] = set()  # each fallback is logged once per process


# --------------------------------------------------------------------------- workers


def worker_environment(scratch_root: Path) -> dict[str, str]:
    """The whole environment of a worker: nothing from ours except two CPU-quirk variables."""
    package_root = Path(__file__).resolve().parents[2]  # the folder holding the evolve package
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
        """The serving process: as root, the child the started process forked into a PID
        namespace of its own (evolve.scoring.pidns); the started one otherwise."""
        return int(self.hello.get("pid") or self.process.pid)

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

    def ask_to_stop(self) -> None:
        """EOF on its stdin: an idle worker exits at once, a busy one after its request."""
        try:
            self.process.stdin.close()
        except OSError:
            pass

    def stop(self, deadline: float | None = None) -> None:
        """Ask politely, wait until `deadline` (STOP_GRACE_S from now by default), then kill;
        always reaps."""
        self.ask_to_stop()
        deadline = time.monotonic() + STOP_GRACE_S if deadline is None else deadline
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
        self.close_pipes()

    def kill(self) -> None:
        self.terminate()
        self.close_pipes()

    def terminate(self) -> None:
        """Kill its process group and reap it, leaving the pipes open: a thread still
        waiting on them sees EOF, never a closed (and perhaps reused) descriptor."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass

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

    def __init__(self, config: ScorerConfig, plan: str, kind: str = "score"):
        self.config = config
        self.kind = kind
        self.scratch_root = Path(tempfile.mkdtemp(prefix="evolve-sandbox-"))
        os.chmod(self.scratch_root, 0o711)
        self.env = worker_environment(self.scratch_root)
        self.plan = plan
        self.lock = threading.Lock()
        self.closed = False  # no new evaluation starts
        self.stopped = False  # shutdown is over: a slot released now has a dead worker
        self.workers: dict[int, WorkerProcess] = {}
        self.free: queue.Queue[int] = queue.Queue()

    def argv(self, slot: int) -> list[str]:
        limits = self.config
        return [
            sys.executable, "-m", "evolve.scoring.worker", "--slot", str(slot), "--plan", self.plan,
            "--scratch", str(self.scratch_root / f"slot-{slot}"), "--timeout", repr(float(limits.timeout_s)),
            "--memory-mb", str(int(limits.memory_mb)), "--max-output-mb", str(int(limits.max_output_mb)),
            "--kind", self.kind,
        ]

    def spawn(self, slot: int) -> WorkerProcess:
        (self.scratch_root / f"slot-{slot}").mkdir(mode=0o700, exist_ok=True)
        return WorkerProcess(slot, self.argv(slot), self.env, self.scratch_root)

    def start(self, count: int) -> None:
        """Start every worker at once and wait for all of them to say hello. Any failure on
        the way (a worker that does not say hello, a process that cannot be started, Ctrl-C)
        leaves nothing behind: the scratch folders of a start that failed at spawning used to
        stay in /tmp."""
        started: list[WorkerProcess] = []
        try:
            for slot in range(count):
                started.append(self.spawn(slot))
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            for worker in started:
                worker.wait_ready(deadline)
        except BaseException as exc:
            for worker in started:
                worker.kill()
            self.remove_scratch()
            if isinstance(exc, (WorkerFailure, OSError)):
                raise SandboxError(str(exc) if isinstance(exc, WorkerFailure) else f"a sandbox worker could not be started: {exc}") from None
            raise
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
        with self.lock:
            if not self.stopped:
                self.free.put(slot)
                return
        self.workers[slot].close_pipes()  # shut down while this thread held it: its pipes are this thread's to close

    def shutdown(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop every worker within one shared `grace_s`, not that long per worker.

        Only the pipes of idle workers are closed here (EOF, so they exit, then reaped). A
        worker still busy is waited for until the grace ends, then its process group is
        killed; the thread that holds it then reads EOF and closes its pipes itself. Closing a
        descriptor another thread is reading would let a new file take its number under it."""
        with self.lock:
            self.closed = True
            workers = dict(self.workers)
        deadline = time.monotonic() + grace_s
        idle = self.take_free()
        for slot in idle:
            workers[slot].ask_to_stop()
        busy = set(workers) - set(idle)
        while busy and deadline - time.monotonic() > 0:
            try:
                slot = self.free.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            busy.discard(slot)
            idle.append(slot)
            workers[slot].ask_to_stop()
        for slot in idle:
            workers[slot].stop(deadline)
        with self.lock:
            self.stopped = True
            late = self.take_free()  # released since the grace ended: idle, so their pipes are ours
        for slot in late:
            workers[slot].stop(deadline)
        for slot in busy - set(late):
            workers[slot].terminate()
        self.remove_scratch()

    def take_free(self) -> list[int]:
        """Every slot in the free queue now (no thread holds them)."""
        slots = []
        while True:
            try:
                slots.append(self.free.get_nowait())
            except queue.Empty:
                return slots

    def remove_scratch(self) -> None:
        shutil.rmtree(self.scratch_root, ignore_errors=True)


class Sandbox:
    """Warm, isolated, parallel execution of candidate programs.

    `run()` may be called from several threads; each call takes a free worker (blocking
    until one is free), so `config.workers` evaluations run at once. `layers` names the
    isolation layers in effect. `plan` forces a plan ("root", "userns", "basic") instead
    of the strongest that works ("auto"); tests use it to exercise the fallbacks.
    """

    def __init__(self, config: ScorerConfig = ScorerConfig(), plan: str = "auto", kind: str = "score"):
        if plan not in PLANS:
            raise ValueError(f"unknown sandbox plan {plan!r} (choose from {', '.join(PLANS)})")
        self.config = config
        self.pool = WorkerPool(config, plan, kind)
        self.pool.start(max(1, int(config.workers)))
        self._finalizer = weakref.finalize(self, self.pool.shutdown)
        hellos = [w.hello for w in self.pool.workers.values()]
        self.plan = hellos[0].get("plan", "?")
        self.layers = " | ".join(sorted({f"{h.get('plan', '?')}: {h.get('layers', '')}" for h in hellos}))
        self.missing_modules: tuple[str, ...] = tuple(hellos[0].get("missing", ()))
        note = str(hellos[0].get("cgroups") or "")
        if note and note not in WARNED:
            WARNED.add(note)
            LOG.warning("sandbox: no cgroup per candidate (%s)", note)

    def run(self, program_text: str, jobs: list[GroupJob], features: tuple[str, ...], targets: tuple[str, ...],
            timeout_s: float | None = None) -> RunReport:
        """Fit and predict every group of `jobs` in a fresh isolated child; never raises for
        anything the program does: failures come back as a RunReport status. `timeout_s`
        (at most the configured one) is what is left of the candidate's time."""
        budget = float(self.config.timeout_s) if timeout_s is None else min(float(timeout_s), float(self.config.timeout_s))
        if budget <= 0:
            return RunReport(Status.TIMEOUT, f"no result within {self.config.timeout_s:g} s (over all folds)")
        request = pickle.dumps(
            {"program": program_text, "jobs": list(jobs), "features": tuple(features), "targets": tuple(targets),
             "timeout_s": budget},
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        expected = Expectation.from_jobs(list(jobs), len(targets))
        try:
            slot = self.pool.acquire()
        except WorkerFailure as exc:
            return RunReport(Status.CRASH, f"sandbox unavailable: {exc}")
        try:
            return self.run_on(slot, request, expected)
        finally:
            self.pool.release(slot)

    def run_on(self, slot: int, request: bytes, expected: Expectation) -> RunReport:
        deadline = time.monotonic() + float(self.config.timeout_s) + RESPONSE_GRACE_S
        try:
            worker = self.delivered_to(slot, request, deadline)
        except WorkerFailure as exc:
            return RunReport(Status.CRASH, f"sandbox worker unavailable: {exc}")
        try:
            return decode_report(worker.receive(expected.frame_cap(), deadline), expected,
                                 CHILD_STATUSES | SANDBOX_STATUSES)
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
            return RunReport(Status.TIMEOUT, f"the sandbox worker did not answer within {self.config.timeout_s:g} s")
        return RunReport(Status.CRASH, f"the sandbox worker failed during the evaluation: {exc}")

    def extract(self, job: dict, timeout_s: float) -> dict | None:
        """A formula job (kind "formula" workers only): the worker's JSON answer, or None
        when the worker failed or did not answer in time (it is then replaced)."""
        request = pickle.dumps({"kind": "formula", "job": job, "timeout_s": float(timeout_s)},
                               protocol=pickle.HIGHEST_PROTOCOL)
        try:
            slot = self.pool.acquire()
        except WorkerFailure:
            return None
        try:
            deadline = time.monotonic() + min(float(timeout_s), float(self.config.timeout_s)) + RESPONSE_GRACE_S
            try:
                worker = self.delivered_to(slot, request, deadline)
                answer = json.loads(worker.receive(FORMULA_REPLY_CAP_BYTES, deadline))
            except (WorkerFailure, ValueError, RecursionError):
                if not self.pool.closed:
                    try:
                        self.pool.replace(slot)
                    except WorkerFailure:
                        pass
                return None
            return answer if isinstance(answer, dict) else None
        finally:
            self.pool.release(slot)

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers, by slot (tests and diagnostics)."""
        return [self.pool.workers[slot].pid for slot in sorted(self.pool.workers)]

    def template_pids(self) -> list[int]:
        """Process ids of the live workers' templates (scoring/template.py), by slot."""
        return [self.pool.workers[slot].hello.get("template") for slot in sorted(self.pool.workers)]

    def close(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop every worker (and so every child), reap them, remove the scratch folders.
        A worker still busy after `grace_s` is killed (a Ctrl-C passes a short one)."""
        if self._finalizer.detach() is not None:  # once, whoever closes first (this or the finalizer)
            self.pool.shutdown(grace_s)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


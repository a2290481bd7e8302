"""Formula extraction for `show` and the report, run under the sandbox's isolation.

The tracing itself is `evolve.symbolic.extract_formula`.

This executes candidate code, so `formulas_isolated` runs the extraction in a child process
under the same isolation as scoring (evolve.scoring.worker, docs/sandbox.md): a clean
environment, and after warming up, rlimits, network and mount namespaces, a chroot into
an empty tmpfs, the sandbox's slot uid, no_new_privs and the audit hook. Results come
back as JSON lines on a pipe, read with a deadline and a size cap and checked strictly.
`extract_formula` itself is what runs inside that process.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn


from evolve.scoring.pool import worker_environment
from evolve.symbolic import CHECK_ROWS, Formula, FormulaJob, extract_formula
from evolve.scoring.isolation import (
    EXIT_SETUP_FAILED,
    PR_SET_PDEATHSIG,
    RESULT_FD,
    ChildContext,
    IsolationError,
    allocate_uid,
    isolate_after_descriptors,
    kill_uid,
    prctl,
    step_audit_hook,
    step_descriptors,
)
from evolve.scoring.warm import preload
from evolve.scoring.worker import Worker, parse_args, write_all

SECONDS_PER_PROGRAM = 20.0
STARTUP_SECONDS = 60.0  # a cold child imports numpy, scipy and sympy, warms them up and probes the plan
MEMORY_MB = 2048  # beyond what the warm child already maps
SCRATCH_MB = 16  # the child's tmpfs (and largest file)
MAX_LINE_BYTES = 256 * 1024  # one result line; MAX_OPS keeps real ones far below
READY = "ready"


def job_for(record, task) -> FormulaJob | None:
    """The extraction job of a stored program, checked on its first group with numeric parameters."""
    from evolve.report.export import params_source

    if not record.ok or not record.code.strip():
        return None
    _, evaluation = params_source(record)
    for group, params in sorted(evaluation.params.items()):
        rows = task.train.X[task.train.groups == group][:CHECK_ROWS]
        if params is not None and len(rows):
            return FormulaJob(record.code, task.features, len(task.targets), len(params), list(params), rows.tolist())
    return None


def formulas_for(records: list, task) -> dict[int, Formula | None]:
    """Formulas of stored programs by id, extracted once per distinct code in isolation."""
    jobs = {r.id: job_for(r, task) for r in records}
    distinct = list({job.code: job for job in jobs.values() if job is not None}.values())
    found = dict(zip((j.code for j in distinct), formulas_isolated(distinct))) if distinct else {}
    return {rid: (found.get(job.code) if job is not None else None) for rid, job in jobs.items()}


# ---------------------------------------------------------------- isolation


def formulas_isolated(jobs: list[FormulaJob], seconds_per_program: float = SECONDS_PER_PROGRAM, plan: str = "auto") -> list[Formula | None]:
    """Formulas for many programs, extracted in sandboxed child processes.

    A program that hangs or kills its process gets None; the child is restarted after it
    for the remaining programs, so one bad program costs only its own formula. A child
    that never gets ready (sandbox setup failed) means no formula for any program.
    """
    results: list[Formula | None] = []
    remaining = list(jobs)
    with slot_uid() as slot:
        while remaining:
            done = run_child(remaining, seconds_per_program, plan, slot)
            if done is None:
                return results + [None] * len(remaining)
            results.extend(done)
            remaining = remaining[len(done):]
            if remaining:  # the next program stopped the child: give it no formula and go on
                results.append(None)
                remaining = remaining[1:]
    return results


@contextmanager
def slot_uid() -> Iterator[tuple[int, int] | None]:
    """As root, an unprivileged uid held (flock) for all our children, as a sandbox worker holds
    one: the children run as it, so killing that uid afterwards kills all they started."""
    if os.geteuid() != 0:
        yield None
        return
    try:
        uid, lock = allocate_uid()
    except IsolationError:
        yield None  # the child then falls back to a plan without a uid of its own
        return
    try:
        kill_uid(uid)  # leftovers of a holder that died
        yield uid, lock
    finally:
        os.close(lock)


def run_child(jobs: list[FormulaJob], seconds_per_program: float, plan: str, slot: tuple[int, int] | None) -> list[Formula | None] | None:
    """Start a sandboxed child on `jobs` and read its results; None when it never got ready.

    The child is killed when no new result arrives within `seconds_per_program` (plus the
    start-up time before the ready line), so a hanging program stops only itself. Then
    everything running under the slot uid is killed and the scratch folder removed.
    """
    root = Path(tempfile.mkdtemp(prefix="evolve-formula-"))
    (root / "slot").mkdir(mode=0o700)
    uid, lock = slot if slot is not None else (None, None)
    timeout = STARTUP_SECONDS + seconds_per_program * len(jobs)
    argv = [sys.executable, "-m", "evolve.scoring.formula_jobs", "--slot", "0", "--plan", plan, "--scratch", str(root / "slot"),
            "--timeout", repr(timeout), "--memory-mb", str(MEMORY_MB), "--max-output-mb", str(SCRATCH_MB)]
    payload = json.dumps({"jobs": [j.to_dict() for j in jobs], "uid": uid, "uid_lock_fd": lock}).encode()
    try:
        process = subprocess.Popen(  # no preexec_fn (unsafe with threads): the child locks itself down
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=root,
            env=worker_environment(root), start_new_session=True, close_fds=True, pass_fds=(lock,) if lock is not None else (),
        )
        try:
            send_payload(process, payload)
            lines = read_lines(process.stdout.fileno(), len(jobs) + 1, seconds_per_program)
        finally:
            kill_group(process)
            process.stdout.close()
            if uid is not None:
                kill_uid(uid)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if not lines or lines[0] != READY.encode():
        return None
    return [parse_result(line, job.n_targets) for line, job in zip(lines[1:], jobs)]


def send_payload(process: subprocess.Popen, payload: bytes) -> None:
    """The jobs on the child's stdin; it reads them all before anything else."""
    try:
        process.stdin.write(payload)
    except OSError:
        pass  # it died at start-up: read_lines sees EOF
    finally:
        try:
            process.stdin.close()
        except OSError:
            pass


def read_lines(fd: int, count: int, seconds_per_program: float) -> list[bytes]:
    """Up to `count` newline-terminated lines from the child's pipe, without blocking past
    the deadline (start-up for the first, then `seconds_per_program` per line) and without
    buffering more than MAX_LINE_BYTES of an unfinished line."""
    os.set_blocking(fd, False)
    lines: list[bytes] = []
    pending = b""
    deadline = time.monotonic() + STARTUP_SECONDS
    while len(lines) < count and len(pending) <= MAX_LINE_BYTES:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            continue
        if not chunk:
            break
        *complete, pending = (pending + chunk).split(b"\n")
        if complete:
            lines += complete
            deadline = time.monotonic() + seconds_per_program
    return lines[:count]


def parse_result(line: bytes, n_targets: int) -> Formula | None:
    """One result line, checked strictly: it comes from the process that ran candidate code."""
    if len(line) > MAX_LINE_BYTES:
        return None
    try:
        item = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(item, dict) or set(item) != {"expressions", "latex", "verified"}:
        return None
    texts = (item["expressions"], item["latex"])
    if not isinstance(item["verified"], bool) or not all(is_texts(t, n_targets) for t in texts):
        return None
    return Formula.from_dict(item)


def is_texts(value: object, count: int) -> bool:
    return isinstance(value, list) and len(value) == count and all(isinstance(v, str) for v in value)


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
    process.wait()


# ---------------------------------------------------------------- in the child

WARM_UP_PROGRAM = """import math
import numpy as np

def scaling_law_func(data_points, params):
    X = np.atleast_2d(np.asarray(data_points, dtype=float))
    a, b, c, d = params
    n = np.maximum(X[:, 0], 1.0) / 1e9
    core = a * np.power(n, -b) + np.exp(-c) * np.log(n + 1) + np.sqrt(np.abs(d)) * np.tanh(X[:, 1])
    return np.where(X[:, 1] > 2, core, np.clip(core, 0, None)) + math.log10(2) * np.minimum(d, 1)
"""


def warm_up_extraction() -> None:
    """Extract one built-in formula: sympy imports much lazily (functions, printers, lambdify),
    and those imports would fail inside the empty chroot."""
    rows = [[1e9, 1.0], [2e9, 4.0]]
    if extract_formula(FormulaJob(WARM_UP_PROGRAM, ("n", "k"), 1, 4, [0.5, 0.2, 1.0, 0.3], rows)) is None:
        print("formula warm-up failed", file=sys.stderr)


def lock_down(args: argparse.Namespace, request: dict, parent_pid: int) -> ChildContext:
    """Pick the plan as a sandbox worker does (probing it), with the parent's slot uid, then
    apply its layers to this process: results go to fd 3, every other fd is closed. The
    audit hook (which refuses fork) is left to each program's own fork."""
    worker = Worker(args, -1, -1)
    worker.uid, worker.uid_lock = request["uid"], request["uid_lock_fd"]
    worker.choose_plan()
    ctx = ChildContext(worker.plan, worker.scratch_for_run(), worker.limits, parent_pid, worker.uid, nproc=3)
    step_descriptors(ctx, os.dup(1))
    isolate_after_descriptors(ctx)
    return ctx


def extract_in_fork(item: dict, ctx: ChildContext) -> bytes:
    """One program's result line, from a fork of this child that runs only that program.

    The fork cannot reach the result pipe (it closes it before any candidate code runs) and
    answers on a pipe of its own, of which only the first line is read: a program can spoil
    its own formula, never forge the ones of the programs after it.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            os.close(RESULT_FD)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # not inherited across fork: die with this child
            step_audit_hook(ctx)
            formula = extract_formula(FormulaJob.from_dict(item))
            write_all(write_fd, (json.dumps(formula.to_dict() if formula else None) + "\n").encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    line = first_line(read_fd)
    os.close(read_fd)
    os.waitpid(pid, 0)
    return line + b"\n" if line else b"null\n"


def first_line(fd: int) -> bytes:
    """The first line on a pipe, read until its newline or end of file; a longer one than any
    real result is cut short (the parent then refuses it)."""
    data = b""
    while b"\n" not in data and len(data) <= MAX_LINE_BYTES:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0][: MAX_LINE_BYTES + 1]


def child_main() -> NoReturn:
    """Entry point of the child: read jobs, warm up, lock down, write one JSON line per job."""
    parent_pid = os.getppid()
    args = parse_args(sys.argv[1:])
    request = json.loads(sys.stdin.buffer.read())
    preload()  # what scoring preloads, so programs import the same modules here
    warm_up_extraction()
    try:
        ctx = lock_down(args, request, parent_pid)
    except (IsolationError, OSError, ValueError):
        os._exit(EXIT_SETUP_FAILED)
    write_all(RESULT_FD, (READY + "\n").encode())
    for item in request["jobs"]:
        write_all(RESULT_FD, extract_in_fork(item, ctx))
    os._exit(0)  # no exit handlers: nothing outside the chroot is reachable anyway


if __name__ == "__main__":
    child_main()

"""How the worker reads one child: its answer up to a cap and a deadline (`collect`), and the
RunReport for what it sent or how it ended (`classify`), and reaping what it left
(`reap_until_clean`). Nothing a child wrote is trusted before `decode_report` has checked it."""

from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass

from evolve.scoring.frames import Expectation, FrameError, decode_report, is_memory_failure
from evolve.scoring.in_sandbox import RunReport
from evolve.scoring.isolation import EXIT_MEMORY, EXIT_SETUP_FAILED, Limits, has_children_besides
from evolve.status import Status


@dataclass
class Outcome:
    """What the worker saw of one child: its bytes and how the wait ended."""

    data: bytes = b""
    timed_out: bool = False
    too_large: bool = False
    parent_gone: bool = False
    abandoned: bool = False  # closed its pipe without a result and kept running
    oom_killed: bool = False  # the kernel killed a process of its cgroup for memory
    wait_status: int | None = None


def collect(pid: int, read_fd: int, cap: int, deadline: float, parent_fd: int | None) -> Outcome:
    """Read the child's result until EOF, its exit, the cap, the deadline or our parent leaving."""
    outcome, chunks, size = Outcome(), [], 0
    pidfd = os.pidfd_open(pid)
    watched = [read_fd, pidfd] + ([parent_fd] if parent_fd is not None else [])
    try:
        while True:
            remaining = deadline - time.monotonic()
            ready = select.select(watched, [], [], max(0.0, remaining))[0] if remaining > 0 else []
            if not ready:
                outcome.timed_out = True
                break
            if parent_fd in ready:
                outcome.parent_gone = True
                break
            if read_fd in ready:
                chunk = os.read(read_fd, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > cap:
                    outcome.too_large = True
                    break
            elif pidfd in ready:
                size += drain(read_fd, chunks, cap - size)
                outcome.too_large = size > cap
                break
    finally:
        os.close(pidfd)
    outcome.data = b"".join(chunks)
    return outcome


def drain(read_fd: int, chunks: list[bytes], room: int) -> int:
    """Whatever an exited child left in the pipe, without waiting for writers it may have spawned."""
    os.set_blocking(read_fd, False)
    taken = 0
    while taken <= room:
        try:
            chunk = os.read(read_fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        taken += len(chunk)
    return taken


def status_without_result(wait_status: int | None, limits: Limits) -> RunReport:
    """Name what happened to a child that wrote nothing."""
    if wait_status is None:
        return RunReport(Status.CRASH, "the program's process could not be reaped")
    if os.WIFSIGNALED(wait_status):
        number = os.WTERMSIG(wait_status)
        if number == signal.SIGXCPU:
            return RunReport(Status.TIMEOUT, f"CPU time limit reached ({limits.timeout_s:g} s)")
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else str(number)
        return RunReport(Status.CRASH, f"the program's process was killed by {name}")
    code = os.WEXITSTATUS(wait_status)
    if code == EXIT_SETUP_FAILED:
        return RunReport(Status.CRASH, "sandbox setup failed in the program's process")
    if code == EXIT_MEMORY:
        return RunReport(Status.MEMORY, f"out of memory (limit {limits.memory_mb} MB)")
    return RunReport(Status.CRASH, f"the program's process exited with code {code} before returning a result")


def classify(outcome: Outcome, expected: Expectation, limits: Limits) -> RunReport:
    """The RunReport for a finished child; nothing it sent is trusted before decode_report."""
    if outcome.parent_gone:
        return RunReport(Status.CRASH, "the sandbox was closed during the evaluation")
    if outcome.oom_killed:
        return RunReport(Status.MEMORY, f"out of memory (limit {limits.memory_mb} MB for all its processes together)")
    if outcome.timed_out:
        return RunReport(Status.TIMEOUT, f"no result within {limits.timeout_s:g} s")
    if outcome.too_large:
        return RunReport(Status.CRASH, f"the program's process sent more than {expected.frame_cap()} bytes")
    if outcome.abandoned:
        return RunReport(Status.CRASH, "the program's process closed its result pipe without sending a result")
    if not outcome.data:
        return status_without_result(outcome.wait_status, limits)
    try:
        report = decode_report(outcome.data, expected)
    except FrameError as exc:
        return RunReport(Status.CRASH, f"the program's process sent an invalid result: {exc}")
    if is_memory_failure(report):
        return RunReport(Status.MEMORY, report.message)
    return report


def reap_children(spare: int | None = None) -> bool:
    """Reap every exited child; True when no child process remains but `spare` (the
    worker's template, as /proc numbers it)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return spare is not None and not has_children_besides(spare)


def reap_until_clean(bound: float, spare: int | None = None) -> bool:
    deadline = time.monotonic() + bound
    while not reap_children(spare):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True

"""The worker side of the sandbox: a warm process that forks one locked-down child per evaluation.

Started by evolve.scoring.pool as `python -m evolve.scoring.worker` with a clean environment.
The worker imports numpy/scipy once, warms up the lazy imports of common fitters, picks
the strongest isolation plan the kernel allows (probing it in a throwaway child), then
serves requests: fork, isolate the child, run `run_jobs`, read the child's result from a
pipe with a byte cap and a wall-clock deadline, validate it, kill whatever is left.
The worker never runs candidate code itself, so it stays trustworthy; it is a child
subreaper so every process a candidate leaves behind becomes its child and is reaped.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import gc
import grp
import importlib
import json
import os
import pickle
import pwd
import resource
import select
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from evolve.scoring.in_sandbox import RunReport, run_jobs
from evolve.scoring.pool import (
    REQUEST_CAP_BYTES,
    Expectation,
    FrameError,
    WorkerFailure,
    decode_report,
    encode_report,
    is_memory_failure,
    read_message,
    send_message,
)

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
CAPABILITY_VERSION_3 = 0x20080522

RESULT_FD = 3
EXIT_SETUP_FAILED = 211
EXIT_MEMORY = 212
EXIT_CRASH = 213
CHILD_NOFILE = 16
CHILD_NPROC = 8
UID_BASE, UID_COUNT = 61_000, 1_000
LOCK_DIRS = ("/run/lock/evolve-sandbox", "/tmp/evolve-sandbox-uids")
REAP_BOUND_S = 5.0
EXIT_GRACE_S = 1.0  # how long a child that closed its pipe without a result has to exit by itself
PROBE_TIMEOUT_S = 20.0

REQUIRED_MODULES = (
    "math", "cmath", "random", "statistics", "itertools", "functools", "collections", "operator",
    "warnings", "fractions", "decimal", "json", "re", "dataclasses", "typing", "copy", "heapq", "bisect",
    "traceback", "linecache", "tokenize", "inspect", "numpy", "numpy.linalg", "numpy.polynomial",
    "numpy.random", "scipy", "scipy.optimize", "scipy.special", "scipy.linalg", "scipy.stats",
    "scipy.interpolate", "scipy.integrate", "evolve.scoring.in_sandbox",
)
OPTIONAL_MODULES = ("evolve.fitting",)

BLOCKED_EVENT_PREFIXES = (
    "socket.", "subprocess.", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.system",
    "os.popen", "os.killpg", "os.link", "os.symlink", "os.chroot", "ctypes.", "pty.", "urllib.", "http.",
    "ftplib.", "smtplib.", "poplib.", "imaplib.", "nntplib.", "telnetlib.", "webbrowser.", "sqlite3.",
    "resource.setrlimit", "resource.prlimit", "gc.get_referrers", "gc.get_referents", "gc.get_objects",
    "sys.remote_exec",
)
PATH_EVENTS = {
    "open": (0,), "os.listdir": (0,), "os.scandir": (0,), "os.chdir": (0,), "os.mkdir": (0,),
    "os.rmdir": (0,), "os.remove": (0,), "os.rename": (0, 1), "os.replace": (0, 1), "os.truncate": (0,),
    "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,), "os.listxattr": (0,), "os.getxattr": (0,),
    "os.setxattr": (0,), "os.removexattr": (0,), "shutil.copyfile": (0, 1), "shutil.copymode": (0, 1),
    "shutil.copystat": (0, 1), "shutil.copytree": (0, 1), "shutil.rmtree": (0,), "shutil.move": (0, 1),
    "shutil.chown": (0,), "glob.glob": (0,), "tempfile.mkstemp": (0,), "tempfile.mkdtemp": (0,),
}

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.unshare.argtypes = [ctypes.c_int]


class IsolationError(RuntimeError):
    """A layer that could not be applied: the child must not run the program."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_mb: int
    max_output_mb: int


@dataclass(frozen=True)
class ChildContext:
    """Everything a forked child needs to lock itself down."""

    plan: str
    scratch: Path
    limits: Limits
    worker_pid: int
    uid: int | None = None  # the slot's own unprivileged uid (root plan)


# --------------------------------------------------------------------------- kernel calls


def check(result: int, what: str) -> None:
    if result != 0:
        raise IsolationError(f"{what}: {os.strerror(ctypes.get_errno())}")


def prctl(option: int, value: int) -> None:
    check(libc.prctl(option, value, 0, 0, 0), f"prctl({option})")


def as_bytes(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    check(libc.mount(as_bytes(source), as_bytes(target), as_bytes(fstype), flags, as_bytes(data)), f"mount {target}")


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_all_capabilities() -> None:
    """Empty effective, permitted and inheritable sets (the userns plan keeps its uid)."""
    header, data = CapHeader(CAPABILITY_VERSION_3, 0), (CapData * 2)()
    check(libc.capset(ctypes.byref(header), data), "capset")


def vm_size_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise IsolationError("cannot read VmSize")


def write_file(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


# --------------------------------------------------------------------------- isolation steps


def step_setsid(ctx: ChildContext) -> list[str]:
    os.setsid()
    return ["setsid"]


def step_descriptors(ctx: ChildContext, result_fd: int) -> list[str]:
    """stdin/stdout/stderr to /dev/null, the result pipe at fd 3, every other fd closed."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if result_fd != RESULT_FD:
        os.dup2(result_fd, RESULT_FD)
    os.closerange(RESULT_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    return ["closed_fds"]


def step_rlimits(ctx: ChildContext) -> list[str]:
    """CPU about the timeout, memory beyond what the worker already maps, small files and counts."""
    cpu = int(ctx.limits.timeout_s) + 2
    address_space = vm_size_bytes() + ctx.limits.memory_mb * 2**20
    output = ctx.limits.max_output_mb * 2**20
    for limit, soft, hard in (
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_CPU, cpu, cpu + 2),
        (resource.RLIMIT_FSIZE, output, output),
        (resource.RLIMIT_NOFILE, CHILD_NOFILE, CHILD_NOFILE),
        (resource.RLIMIT_NPROC, CHILD_NPROC, CHILD_NPROC),
        (resource.RLIMIT_AS, address_space, address_space),
    ):
        resource.setrlimit(limit, (soft, hard))
    return ["rlimits"]


def step_scratch(ctx: ChildContext) -> list[str]:
    os.chdir(ctx.scratch)
    os.environ["HOME"] = os.environ["TMPDIR"] = str(ctx.scratch)
    tempfile.tempdir = None
    return ["scratch_cwd"]


def step_namespaces(ctx: ChildContext) -> list[str]:
    """New network and mount namespaces (and a user namespace when not root)."""
    if ctx.plan == "root":
        check(libc.unshare(CLONE_NEWNET | CLONE_NEWNS), "unshare(net, mount)")
        return ["netns", "mntns"]
    uid, gid = os.getuid(), os.getgid()
    check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS), "unshare(user, net, mount)")
    write_file("/proc/self/setgroups", "deny")
    write_file("/proc/self/uid_map", f"{uid} {uid} 1")
    write_file("/proc/self/gid_map", f"{gid} {gid} 1")
    return ["userns", "netns", "mntns"]


def step_filesystem(ctx: ChildContext) -> list[str]:
    """A size-capped tmpfs on the scratch folder, then chroot into it: nothing else is visible."""
    mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    options = f"size={ctx.limits.max_output_mb}m,nr_inodes=4096,mode=0700"
    if ctx.uid is not None:
        options += f",uid={ctx.uid},gid={ctx.uid}"
    mount("tmpfs", str(ctx.scratch), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options)
    os.chroot(ctx.scratch)
    os.chdir("/")
    os.environ["HOME"] = os.environ["TMPDIR"] = "/"
    return ["tmpfs", "chroot"]


def step_identity(ctx: ChildContext) -> list[str]:
    """Root plan: become the slot's unprivileged uid. Userns plan: drop every capability."""
    if ctx.plan == "root":
        os.setgroups([])
        os.setgid(ctx.uid)
        os.setuid(ctx.uid)
        if os.getresuid() != (ctx.uid,) * 3 or os.getresgid() != (ctx.uid,) * 3:
            raise IsolationError("uid/gid change did not stick")
        return ["uid"]
    drop_all_capabilities()
    return ["no_caps"]


def step_parent_death(ctx: ChildContext) -> list[str]:
    """Die with the worker (set after the uid change, which clears it)."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != ctx.worker_pid:
        raise IsolationError("the worker is already gone")
    return []


def step_no_new_privs(ctx: ChildContext) -> list[str]:
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    return ["no_new_privs"]


def step_audit_hook(ctx: ChildContext) -> list[str]:
    install_audit_hook(os.getcwd())
    return ["audit_hook"]


def kernel_steps(plan: str) -> list[Callable[[ChildContext], list[str]]]:
    """The ordered steps after the descriptors: limits, scratch, then the plan's kernel layers."""
    steps = [step_rlimits, step_scratch]
    if plan in ("root", "userns"):
        steps += [step_namespaces, step_filesystem, step_identity]
    return steps + [step_parent_death, step_no_new_privs]


def isolate(ctx: ChildContext, result_fd: int) -> list[str]:
    """Apply every layer but the audit hook, in order; raise IsolationError on the first failure."""
    return step_setsid(ctx) + step_descriptors(ctx, result_fd) + isolate_after_descriptors(ctx)


def isolate_after_descriptors(ctx: ChildContext) -> list[str]:
    layers: list[str] = []
    for step in kernel_steps(ctx.plan):
        try:
            layers += step(ctx)
        except IsolationError:
            raise
        except (OSError, ValueError) as exc:
            raise IsolationError(f"{step.__name__}: {exc}") from None
    return layers


# --------------------------------------------------------------------------- audit hook


def install_audit_hook(scratch: str) -> None:
    """Second layer inside the interpreter: refuse network, processes, ctypes, signals to
    others and file access outside the scratch folder. Modules are already imported, so
    numpy and scipy keep working; a blocked call raises PermissionError."""
    root = os.path.normpath(scratch)
    own_pid = os.getpid()

    def inside(path: object) -> bool:
        if path is None or isinstance(path, int) or root == "/":
            return True
        try:
            text = os.fsdecode(os.fspath(path))
        except TypeError:
            return False
        full = os.path.normpath(os.path.join(os.getcwd(), text))
        return full == root or full.startswith(root + os.sep)

    def hook(event: str, args: tuple, blocked=BLOCKED_EVENT_PREFIXES, path_events=PATH_EVENTS) -> None:
        if event.startswith(blocked):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "os.kill" and args and args[0] != own_pid:
            raise PermissionError("sandbox: signals to other processes are not allowed")
        positions = path_events.get(event)
        if positions and not all(inside(args[i]) for i in positions if i < len(args)):
            raise PermissionError(f"sandbox: {event} outside the scratch folder is not allowed")

    sys.addaudithook(hook)


# --------------------------------------------------------------------------- in the child


def run_child(ctx: ChildContext, result_fd: int, request: dict) -> NoReturn:
    """Isolate, run the program, write one frame to fd 3, exit without cleanup handlers."""
    code = EXIT_SETUP_FAILED
    try:
        isolate(ctx, result_fd)
        step_audit_hook(ctx)
        code = EXIT_CRASH
        report = run_jobs(request["program"], request["jobs"], request["features"], request["targets"])
        write_all(RESULT_FD, encode_report(report))
        os.close(RESULT_FD)  # EOF now, not after the kernel has torn down our address space
        code = 0
    except MemoryError:
        code = EXIT_MEMORY
    except BaseException:  # noqa: BLE001, S110 - the exit code tells the worker; nothing may escape a fork
        pass
    os._exit(code)


def run_probe(ctx: ChildContext, result_fd: int) -> NoReturn:
    """Trusted code only: apply the plan, check its kernel layers really hold, report as JSON."""
    try:
        layers = step_setsid(ctx) + step_descriptors(ctx, result_fd)
    except BaseException:  # noqa: BLE001 - fd 3 may still be the worker's own pipe: say nothing
        os._exit(EXIT_SETUP_FAILED)
    try:
        layers += isolate_after_descriptors(ctx)
        verify_kernel_layers(ctx)
        layers += step_audit_hook(ctx)
        verify_audit_hook()
        message = {"ok": True, "layers": layers}
    except BaseException as exc:  # noqa: BLE001 - any failure means the plan is unusable
        message = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    try:
        write_all(RESULT_FD, json.dumps(message).encode())
    except OSError:
        pass
    os._exit(0)


def verify_kernel_layers(ctx: ChildContext) -> None:
    if ctx.plan in ("root", "userns"):
        interfaces = [name for _, name in socket.if_nameindex()]
        if interfaces != ["lo"]:
            raise IsolationError(f"network namespace still shows {interfaces}")
        if os.listdir("/"):
            raise IsolationError("chroot root is not empty")
    if ctx.plan == "root" and (os.getuid() != ctx.uid or os.geteuid() != ctx.uid):
        raise IsolationError("still running as the worker's uid")


def verify_audit_hook() -> None:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    except PermissionError:
        return
    raise IsolationError("the audit hook did not block socket creation")


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# --------------------------------------------------------------------------- in the worker


@dataclass
class Outcome:
    """What the worker saw of one child: its bytes and how the wait ended."""

    data: bytes = b""
    timed_out: bool = False
    too_large: bool = False
    parent_gone: bool = False
    abandoned: bool = False  # closed its pipe without a result and kept running
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


def wait_bounded(pid: int, bound: float) -> int | None:
    """The wait status of `pid` within `bound` seconds, or None."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        if not select.select([pidfd], [], [], bound)[0]:
            return None
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None
    finally:
        os.close(pidfd)


def reap_children() -> bool:
    """Reap every exited child; True when no child process remains at all."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False


def reap_until_clean(bound: float) -> bool:
    deadline = time.monotonic() + bound
    while not reap_children():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True


def kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid` from a short-lived helper that becomes that uid, so the
    kill is atomic with respect to their forks and touches nothing else."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            for _ in range(3):
                os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            os._exit(0)
        except BaseException:  # noqa: BLE001 - the exit code reports it to the worker
            os._exit(1)
        os._exit(0)
    if wait_bounded(pid, REAP_BOUND_S) is None:
        os.kill(pid, signal.SIGKILL)
        wait_bounded(pid, REAP_BOUND_S)


def kill_descendants() -> None:
    """SIGKILL every process below this one, found through /proc (plans without a slot uid)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    below, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - below
        below |= frontier
    for pid in below:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def allocate_uid() -> tuple[int, int]:
    """A free uid in 61000-61999, held with a flock for this worker's lifetime so concurrent
    sandboxes (tests, several runs) never share one and never kill each other's children."""
    lock_dir = lock_directory()
    for uid in range(UID_BASE, UID_BASE + UID_COUNT):
        if account_exists(uid):
            continue
        fd = os.open(lock_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return uid, fd
    raise IsolationError("every sandbox uid is in use")


def lock_directory() -> Path:
    for candidate in LOCK_DIRS:
        path = Path(candidate)
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022:
            return path
    raise IsolationError("no safe folder for the uid locks")


def account_exists(uid: int) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            continue
    return False


def status_without_result(wait_status: int | None, limits: Limits) -> RunReport:
    """Name what happened to a child that wrote nothing."""
    if wait_status is None:
        return RunReport("crash", "the program's process could not be reaped")
    if os.WIFSIGNALED(wait_status):
        number = os.WTERMSIG(wait_status)
        if number == signal.SIGXCPU:
            return RunReport("timeout", f"CPU time limit reached ({limits.timeout_s:g} s)")
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else str(number)
        return RunReport("crash", f"the program's process was killed by {name}")
    code = os.WEXITSTATUS(wait_status)
    if code == EXIT_SETUP_FAILED:
        return RunReport("crash", "sandbox setup failed in the program's process")
    if code == EXIT_MEMORY:
        return RunReport("memory", f"out of memory (limit {limits.memory_mb} MB)")
    return RunReport("crash", f"the program's process exited with code {code} before returning a result")


def classify(outcome: Outcome, expected: Expectation, limits: Limits) -> RunReport:
    """The RunReport for a finished child; nothing it sent is trusted before decode_report."""
    if outcome.parent_gone:
        return RunReport("crash", "the sandbox was closed during the evaluation")
    if outcome.timed_out:
        return RunReport("timeout", f"no result within {limits.timeout_s:g} s")
    if outcome.too_large:
        return RunReport("crash", f"the program's process sent more than {expected.frame_cap()} bytes")
    if outcome.abandoned:
        return RunReport("crash", "the program's process closed its result pipe without sending a result")
    if not outcome.data:
        return status_without_result(outcome.wait_status, limits)
    try:
        report = decode_report(outcome.data, expected)
    except FrameError as exc:
        return RunReport("crash", f"the program's process sent an invalid result: {exc}")
    if is_memory_failure(report):
        return RunReport("memory", report.message)
    return report


class Worker:
    """One warm worker: its slot, plan, uid and protocol pipes to the parent."""

    def __init__(self, args: argparse.Namespace, proto_in: int, proto_out: int):
        self.slot = args.slot
        self.scratch = Path(args.scratch)
        self.limits = Limits(args.timeout, args.memory_mb, args.max_output_mb)
        self.proto_in, self.proto_out = proto_in, proto_out
        self.requested_plan = args.plan
        self.plan = "basic"
        self.layers: list[str] = []
        self.uid: int | None = None
        self.uid_lock: int | None = None
        self.dirty = False  # something could not be cleaned up: stop after answering

    def context(self, scratch: Path) -> ChildContext:
        return ChildContext(self.plan, scratch, self.limits, os.getpid(), self.uid)

    def candidate_plans(self) -> list[str]:
        if self.requested_plan != "auto":
            return [self.requested_plan]
        return (["root"] if os.geteuid() == 0 else []) + ["userns", "basic"]

    def choose_plan(self) -> list[str]:
        """The first plan whose probe child succeeds; its errors are kept for the log."""
        errors = []
        for plan in self.candidate_plans():
            try:
                self.prepare_identity(plan)
                self.plan = plan
                self.layers = ["clean_env"] + self.probe()
                return errors
            except IsolationError as exc:
                errors.append(f"{plan}: {exc}")
        raise IsolationError("no sandbox plan works here: " + "; ".join(errors))

    def prepare_identity(self, plan: str) -> None:
        """The root plan needs a slot uid of its own; other plans must not hold one."""
        if plan == "root" and self.uid is None:
            self.uid, self.uid_lock = allocate_uid()
            kill_uid(self.uid)  # leftovers of a worker that died while holding this uid
            reap_children()
        elif plan != "root" and self.uid_lock is not None:
            os.close(self.uid_lock)
            self.uid, self.uid_lock = None, None

    def probe(self) -> list[str]:
        scratch = Path(tempfile.mkdtemp(prefix="probe-", dir=self.scratch))
        read_fd, write_fd = os.pipe()
        ctx = self.context(scratch)
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            run_probe(ctx, write_fd)
        os.close(write_fd)
        try:
            outcome = collect(pid, read_fd, 65_536, time.monotonic() + PROBE_TIMEOUT_S, None)
        finally:
            os.close(read_fd)
            self.finish(pid, timed_out=True)
            shutil.rmtree(scratch, ignore_errors=True)
        try:
            message = json.loads(outcome.data)
        except ValueError:
            raise IsolationError("the probe child reported nothing") from None
        if not message.get("ok"):
            raise IsolationError(str(message.get("error")))
        return list(message["layers"])

    def serve(self) -> None:
        """Answer requests until the parent closes our stdin (or cleanup failed)."""
        while not self.dirty:
            try:
                request = pickle.loads(read_message(self.proto_in, REQUEST_CAP_BYTES))  # trusted direction
            except WorkerFailure:
                return
            if not self.answer(request):
                return

    def answer(self, request: dict) -> bool:
        """Run one request in a fresh child and send its report; False once the parent is gone.

        When the child delivered a result, the reply goes out first and the kill, reap and
        cleanup follow, off the caller's clock; otherwise its exit status is the only clue
        and it is reaped first. Either way all is clean before the next request is read.
        """
        expected = Expectation.from_jobs(request["jobs"], len(request["targets"]))
        scratch = self.scratch_for_run()
        read_fd, write_fd = os.pipe()
        ctx = self.context(scratch)
        deadline = time.monotonic() + self.limits.timeout_s
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            run_child(ctx, write_fd, request)
        os.close(write_fd)
        outcome, reaped = Outcome(timed_out=True), False
        try:
            outcome = collect(pid, read_fd, expected.frame_cap(), deadline, self.proto_in)
            if outcome.parent_gone:
                return False
            if not outcome.data:  # its exit status is the only clue: wait briefly for a real exit
                grace = 0.0 if outcome.timed_out else min(EXIT_GRACE_S, max(0.0, deadline - time.monotonic()))
                exited = wait_bounded(pid, grace) if grace > 0 else None
                outcome.abandoned = exited is None and not outcome.timed_out
                outcome.wait_status, reaped = self.finish(pid, outcome.timed_out, exited), True
            send_message(self.proto_out, encode_report(classify(outcome, expected, self.limits)))
            return True
        except WorkerFailure:
            return False
        finally:
            os.close(read_fd)
            if not reaped:
                self.finish(pid, outcome.timed_out or outcome.parent_gone)
            self.release_scratch(scratch)

    def scratch_for_run(self) -> Path:
        """Namespaced plans mount a fresh tmpfs on one fixed, always empty mount point;
        the basic plan gets a new folder per evaluation."""
        if self.plan in ("root", "userns"):
            mount_point = self.scratch / "mnt"
            mount_point.mkdir(mode=0o700, exist_ok=True)
            return mount_point
        return Path(tempfile.mkdtemp(prefix="run-", dir=self.scratch))

    def release_scratch(self, scratch: Path) -> None:
        if self.plan not in ("root", "userns"):
            shutil.rmtree(scratch, ignore_errors=True)

    def finish(self, pid: int, timed_out: bool, status: int | None = None) -> int | None:
        """Kill the child's group, reap it, then make sure nothing it started survives.

        `status` is given when the child was already reaped; its pid may then belong to
        someone else, so only the sweep below (slot uid or descendants) runs."""
        if status is None:
            for kill in (os.killpg, os.kill):  # the group exists only once the child called setsid
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            status = wait_bounded(pid, REAP_BOUND_S)
        if self.uid is not None and timed_out:
            kill_uid(self.uid)
        for attempt in range(5):
            if reap_until_clean(0.05 if attempt == 0 else 0.5):
                return status
            self.kill_leftovers()
        self.dirty = not reap_until_clean(REAP_BOUND_S)
        return status

    def kill_leftovers(self) -> None:
        if self.uid is not None:
            kill_uid(self.uid)
        else:
            kill_descendants()

    def close(self, parent_pid: int) -> None:
        """Kill leftovers and remove this slot's folder. If our parent died without closing
        the sandbox, also remove our log and, as the last worker out, the scratch root."""
        if self.uid is not None:
            kill_uid(self.uid)
        reap_until_clean(REAP_BOUND_S)
        shutil.rmtree(self.scratch, ignore_errors=True)
        if os.getppid() != parent_pid:
            root = self.scratch.parent
            (root / f"worker-{self.slot}.log").unlink(missing_ok=True)
            try:
                root.rmdir()
            except OSError:
                pass  # another worker is still tidying up; the last one removes it


# --------------------------------------------------------------------------- start-up


def claim_protocol_fds() -> tuple[int, int]:
    """Keep stdin/stdout for the protocol on private fds, so nothing printed can corrupt it."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # stray prints go to the worker's log
    return proto_in, proto_out


def preload() -> list[str]:
    """Import everything a candidate may use, so it never needs the filesystem; return the
    optional modules that are missing."""
    for name in REQUIRED_MODULES:
        importlib.import_module(name)
    missing = []
    for name in OPTIONAL_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - another engineer's module may be half written
            print(f"optional module {name} not loaded: {type(exc).__name__}: {exc}", file=sys.stderr)
            missing.append(name)
    warm_up()
    gc.collect()
    gc.freeze()  # children then never write to the worker's objects' GC headers: fewer copy-on-write pages
    return missing


def warm_up() -> None:
    """Call the usual fitters once: several import submodules lazily on first use, which
    would fail inside the empty chroot."""
    import numpy as np
    import scipy.optimize as so
    import scipy.stats

    x = np.linspace(1.0, 10.0, 12)
    y = 2.0 * x**-0.5 + 1.0

    def law(x, a, b, c):
        return a * x**-b + c

    def loss(p):
        return float(np.sum((law(x, *p) - y) ** 2))

    calls = [
        lambda: so.curve_fit(law, x, y, p0=[1, 0.5, 1], maxfev=200),
        lambda: so.curve_fit(law, x, y, p0=[1, 0.5, 1], bounds=([0, 0, 0], [10, 2, 5]), max_nfev=50),
        lambda: so.least_squares(lambda p: law(x, *p) - y, [1, 0.5, 1], loss="soft_l1", max_nfev=20),
        lambda: so.least_squares(lambda p: law(x, *p) - y, [1, 0.5, 1], method="lm", max_nfev=20),
        lambda: so.least_squares(lambda p: law(x, *p) - y, [1, 0.5, 1], method="dogbox",
                                 bounds=([0, 0, 0], [10, 2, 5]), max_nfev=20),
        *[lambda m=m: so.minimize(loss, [1, 0.5, 1], method=m, options={"maxiter": 5})
          for m in ("Nelder-Mead", "Powell", "CG", "BFGS", "L-BFGS-B", "TNC", "SLSQP", "trust-constr", "COBYLA")],
        lambda: so.differential_evolution(loss, [(0, 10), (0, 2), (0, 5)], maxiter=2, popsize=4, seed=0),
        lambda: so.dual_annealing(loss, [(0, 10), (0, 2), (0, 5)], maxiter=2, seed=0),
        lambda: so.basinhopping(loss, [1, 0.5, 1], niter=1, seed=0),
        lambda: so.nnls(np.eye(3), np.ones(3)),
        lambda: so.lsq_linear(np.eye(3), np.ones(3)),
        lambda: so.brentq(lambda t: t - 1.0, 0.0, 2.0),
        lambda: so.root(lambda t: t - 1.0, [0.0]),
        lambda: np.polynomial.Polynomial.fit(x, y, 2),
        lambda: scipy.stats.linregress(x, y),
        traceback_warm_up,
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for call in calls:
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - a warm-up call that fails only costs its lazy import
                print(f"warm-up call failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def traceback_warm_up() -> None:
    import numpy as np

    from evolve.scoring.in_sandbox import GroupJob

    program = "def fit_scaling_law(x, y):\n    return 1 / 0\n\ndef scaling_law_func(x, p):\n    return x\n"
    job = GroupJob("g", np.ones((2, 1)), np.ones((2, 1)), np.ones((1, 1)))
    run_jobs(program, [job], ("x",), ("y",))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="evolve sandbox worker (started by evolve.scoring.pool)")
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--plan", choices=("auto", "root", "userns", "basic"), default="auto")
    parser.add_argument("--scratch", required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--max-output-mb", type=int, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parent_pid = os.getppid()
    proto_in, proto_out = claim_protocol_fds()
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    missing = preload()
    worker = Worker(args, proto_in, proto_out)
    try:
        for error in worker.choose_plan():
            print(f"plan not usable: {error}", file=sys.stderr)
    except IsolationError as exc:
        print(f"sandbox worker cannot start: {exc}", file=sys.stderr)
        return 2
    hello = {"pid": os.getpid(), "plan": worker.plan, "layers": ",".join(worker.layers),
             "uid": worker.uid, "missing": missing}
    send_message(proto_out, json.dumps(hello).encode())
    try:
        worker.serve()
    finally:
        worker.close(parent_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())

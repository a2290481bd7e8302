"""The isolation layers a forked child applies to itself before any candidate code runs.

Each `step_*` applies one layer (session, descriptors, rlimits, scratch tmpfs, network and
mount namespaces, chroot, identity, parent-death signal, no_new_privs, audit hook) and
returns the names of what it applied, so the worker can report its layers. A layer that
cannot be applied raises `IsolationError`: the child then exits without running the
program. The uid helpers give each worker slot an unprivileged uid of its own and kill
everything running as it.
"""

from __future__ import annotations

import ctypes
import fcntl
import grp
import os
import pwd
import resource
import select
import signal
import stat
import tempfile
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

from pathlib import Path

from evolve.scoring.cgroups import CandidateGroup, CgroupError, host_pid
from evolve.scoring.seccomp import SYSCALLS, SeccompError, SockFilter, SockFprog, seccomp_program

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
CAPABILITY_VERSION_3 = 0x20080522

RESULT_FD = 3
EXIT_SETUP_FAILED = 211
EXIT_MEMORY = 212
EXIT_CRASH = 213
CHILD_NOFILE = 16
CHILD_NPROC = 1  # no fork and no threads: memory_mb then bounds the whole candidate, not each process
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


PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
KEYCTL_JOIN_SESSION_KEYRING = 1
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
    nproc: int = CHILD_NPROC  # raised only by the cgroup attack tests (EVOLVE_SANDBOX_NPROC), to test the cgroup alone
    audit_hook: bool = True  # off only for the kernel-layer attack tests (EVOLVE_SANDBOX_AUDIT_HOOK=0)
    cgroup: CandidateGroup | None = None  # this child's own group (cgroups.py), where the kernel offers one


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


def step_cgroup(ctx: ChildContext) -> list[str]:
    """Join the child's own cgroup first (still root, /sys still visible), so every process
    the candidate starts is born inside it: one memory and pids bound and one kill for all."""
    if ctx.cgroup is None:
        return []
    try:
        ctx.cgroup.join()
    except CgroupError as exc:
        raise IsolationError(str(exc)) from None
    return []  # the worker names the cgroup layers it set up (Cgroups.layers)


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
        (resource.RLIMIT_NPROC, ctx.nproc, ctx.nproc),
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
        check(libc.unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC), "unshare(net, mount, ipc)")
        return ["netns", "mntns", "ipcns"]
    uid, gid = os.getuid(), os.getgid()
    check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC), "unshare(user, net, mount, ipc)")
    write_file("/proc/self/setgroups", "deny")
    write_file("/proc/self/uid_map", f"{uid} {uid} 1")
    write_file("/proc/self/gid_map", f"{gid} {gid} 1")
    return ["userns", "netns", "mntns", "ipcns"]


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


def step_keyring(ctx: ChildContext) -> list[str]:
    """A fresh anonymous session keyring: the keys of whoever started evolve are out of reach."""
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(ctypes.c_long(SYSCALLS["keyctl"]), ctypes.c_long(KEYCTL_JOIN_SESSION_KEYRING), None) < 0:
        raise IsolationError(f"keyctl(JOIN_SESSION_KEYRING): {os.strerror(ctypes.get_errno())}")
    return ["session_keyring"]


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


class SeccompFilter:
    """The filter program as a ctypes array, built once per worker (before any fork) and
    shared by every child, which only writes its own pid into the one instruction that
    lets `kill` reach itself."""

    def __init__(self) -> None:
        marker = 0x7FFFFFFE  # no real pid: where seccomp_program put own_pid
        program = seccomp_program(own_pid=marker)
        self.filters = None if program is None else (SockFilter * len(program))(*[SockFilter(*item) for item in program])
        self.pid_index = None if program is None else next(i for i, item in enumerate(program) if item[3] == marker)

    def install(self) -> bool:
        if self.filters is None:
            return False
        self.filters[self.pid_index].k = os.getpid() & 0xFFFFFFFF
        fprog = SockFprog(len(self.filters), ctypes.cast(self.filters, ctypes.c_void_p))
        check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0), "prctl(PR_SET_SECCOMP)")
        return True


_FILTER: list[SeccompFilter] = []


def prepare_seccomp() -> SeccompFilter:
    """The worker's filter (built on first use; the worker calls this before it forks)."""
    if not _FILTER:
        try:
            _FILTER.append(SeccompFilter())
        except SeccompError as exc:
            raise IsolationError(str(exc)) from None
    return _FILTER[0]


def step_seccomp(ctx: ChildContext) -> list[str]:
    """The kernel refuses the calls a fit never needs (see seccomp_program); after no_new_privs."""
    return ["seccomp"] if prepare_seccomp().install() else []


def step_audit_hook(ctx: ChildContext) -> list[str]:
    if not ctx.audit_hook:
        return []
    install_audit_hook(os.getcwd())
    return ["audit_hook"]


def kernel_steps(plan: str) -> list[Callable[[ChildContext], list[str]]]:
    """The ordered steps after the descriptors: limits, scratch, then the plan's kernel layers."""
    steps = [step_cgroup, step_rlimits, step_scratch]
    if plan in ("root", "userns"):
        steps += [step_namespaces, step_filesystem]
        if plan == "root":
            steps += [step_keyring]
        steps += [step_identity]
    return steps + [step_parent_death, step_no_new_privs, step_seccomp]


def isolate(ctx: ChildContext, result_fd: int) -> list[str]:
    """Apply every layer but the audit hook, in order; raise IsolationError on the first failure."""
    return step_setsid(ctx) + step_descriptors(ctx, result_fd) + isolate_after_descriptors(ctx)


def isolate_after_descriptors(ctx: ChildContext, before_seccomp: Callable[[ChildContext], None] | None = None) -> list[str]:
    layers: list[str] = []
    for step in kernel_steps(ctx.plan):
        if step is step_seccomp and before_seccomp is not None:
            before_seccomp(ctx)  # the probe's checks need a socket, which the filter refuses
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
    # private copies, reachable from no module: rewriting the module globals changes nothing
    blocked = tuple("".join(list(prefix)) for prefix in BLOCKED_EVENT_PREFIXES)
    path_events = types.MappingProxyType({"".join(list(k)): tuple(v) for k, v in PATH_EVENTS.items()})

    def inside(path: object) -> bool:
        if path is None or isinstance(path, int) or root == "/":
            return True
        try:
            text = os.fsdecode(os.fspath(path))
        except TypeError:
            return False
        full = os.path.normpath(os.path.join(os.getcwd(), text))
        return full == root or full.startswith(root + os.sep)

    def hook(event: str, args: tuple) -> None:
        if event.startswith(blocked):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "os.kill" and args and args[0] != own_pid:
            raise PermissionError("sandbox: signals to other processes are not allowed")
        positions = path_events.get(event)
        if positions and not all(inside(args[i]) for i in positions if i < len(args)):
            raise PermissionError(f"sandbox: {event} outside the scratch folder is not allowed")

    sys.addaudithook(hook)


# --------------------------------------------------------------------------- in the child


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


def process_parents() -> dict[int, int]:
    """Every process's parent, as /proc numbers them (the host's PID namespace)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return parents


def has_children_besides(spare: int) -> bool:
    """Whether this process has a child other than `spare` (both as /proc numbers them)."""
    me = host_pid()
    return any(parent == me and pid != spare for pid, parent in process_parents().items())


def kill_descendants(spare: int | None = None) -> None:
    """SIGKILL every process below this one, found through /proc (plans without a slot
    uid), except `spare` (the template, as /proc numbers it) and what is below it."""
    parents = process_parents()
    below, frontier = set(), {host_pid()}  # our pid as /proc numbers it (the worker's own PID namespace)
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid != spare} - below
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

"""A PID namespace per worker (root): the worker serves from pid 1 of a namespace of its
own, so every child it forks, and every process a candidate could start, lives in it.

A candidate sees no host pid (its own pid, its parent's and any other are numbers of this
namespace), and when the worker dies, for whatever reason, the kernel kills everything in
its namespace. The worker is the namespace's init, so orphans are reparented to it and
reaped as before (it was a child subreaper already).

`unshare(CLONE_NEWPID)` moves only the caller's future children into the new namespace, so
the worker process the pool started forks once, at start-up, before it touches the
protocol: the child serves, the original process closes its copies of the protocol pipes,
waits, and exits as the serving process did (its code, or the same signal). It is the pid
the pool knows; killing its process group kills both.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

from evolve.scoring.isolation import CLONE_NEWPID, PR_SET_PDEATHSIG, libc, prctl

EXIT_LOST = 3


def serve_in_own_namespace(after_parent_died: Callable[[], None]) -> bool:
    """True in the process that is to serve, as pid 1 of a new PID namespace; False when
    there is none (not root, refused, or `EVOLVE_SANDBOX_PIDNS=0`): serve here. The
    original process never returns: it waits for the server and ends as it did, first
    calling `after_parent_died` if the pool died meanwhile."""
    if os.geteuid() != 0 or os.environ.get("EVOLVE_SANDBOX_PIDNS", "1") == "0":
        return False
    if libc.unshare(CLONE_NEWPID) != 0:
        print(f"no PID namespace: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return False
    parent = os.getppid()
    pid = os.fork()
    if pid == 0:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        return True
    for fd in (0, 1):  # the protocol pipes: only the server may hold them, or EOF never comes
        os.close(fd)
    status = wait_for(pid)
    if os.getppid() != parent:
        after_parent_died()
    end_like(status)


def wait_for(pid: int) -> int | None:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
        except ChildProcessError:
            return None


def end_like(status: int | None):
    if status is not None and os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            signal.signal(number, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), number)
    os._exit(os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else EXIT_LOST)

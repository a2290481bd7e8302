"""The template: the clean process every sandbox child is forked from.

Why it exists: a forked child can read every byte of memory it was forked with, without a
syscall (numpy over a forged `__array_interface__`), and the worker's heap holds, freed but
never zeroed, every request it has read: a fold's fit rows (labels included) were found by
the next fold's fit child, whose scored rows they are, and by later candidates. So the worker
forks the template once at start-up, after the warm imports and before it reads any request,
and the template never reads one: it receives only a spawn command carrying two pipe
descriptors (SCM_RIGHTS), the child's request pipe and its result pipe.

For each command the template forks a short-lived middle process that forks the child and
exits at once, so the child is reparented to the worker (a child subreaper), which waits
for it, kills and reaps it as if it had forked it itself. The template answers with the
child's pid only once the middle process is reaped, so the worker writes the request to a
child that is already its own. The child reads its request, its isolation context and its
phase from the request pipe (`read_assignment`); nothing else of the worker reaches it.
"""

from __future__ import annotations

import os
import pickle
import resource
import signal
import socket
import struct
from collections.abc import Callable
from typing import NoReturn

from evolve.scoring.cgroups import host_pid
from evolve.scoring.frames import REQUEST_CAP_BYTES, WorkerFailure, read_message, send_message
from evolve.scoring.isolation import PR_SET_PDEATHSIG, prctl

SPAWN = b"spawn"
PID = struct.Struct("<q")
ANSWER_TIMEOUT_S = 10.0  # a fork and an exit: far longer than any healthy template takes


class TemplateGone(RuntimeError):
    """The template died or stopped answering: the worker cannot fork clean children."""


class Template:
    """The worker's handle on its template process (see the module docstring)."""

    def __init__(self, start_child: Callable[[int, int], NoReturn]):
        """Fork the template now; `start_child(request_fd, result_fd)` runs in each child."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        worker_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            ours.close()
            serve(theirs, start_child, worker_pid)
        theirs.close()
        self.pid, self.sock = pid, ours
        self.sock.settimeout(ANSWER_TIMEOUT_S)
        self.host_pid = self.read_pid()  # as /proc numbers it, to spare it in sweeps by /proc

    def spawn(self, request_fd: int, result_fd: int) -> int:
        """A new child holding these two descriptors, already the worker's child; its pid."""
        try:
            socket.send_fds(self.sock, [SPAWN], [request_fd, result_fd])
        except OSError as exc:
            raise TemplateGone(f"the template is gone ({exc})") from None
        pid = self.read_pid()
        if pid <= 0:
            raise TemplateGone("the template could not fork a child")
        return pid

    def read_pid(self) -> int:
        try:
            data = self.sock.recv(PID.size)
        except OSError as exc:
            raise TemplateGone(f"the template did not answer ({exc})") from None
        if len(data) != PID.size:
            raise TemplateGone("the template is gone")
        return PID.unpack(data)[0]

    def close(self) -> None:
        """End the template (EOF on its socket) and reap it."""
        self.sock.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def serve(sock: socket.socket, start_child: Callable[[int, int], NoReturn], worker_pid: int) -> NoReturn:
    """The template's loop: one child per spawn command, until the worker closes the socket.
    Nothing may escape: this is a fork of the worker, which must never run twice."""
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != worker_pid:
            os._exit(0)
        keep = sock.fileno()
        os.closerange(3, keep)  # the worker's protocol pipes, uid lock, cgroup files: none is ours
        os.closerange(keep + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        sock.send(PID.pack(host_pid()))
        while True:
            message, fds, _, _ = socket.recv_fds(sock, len(SPAWN), 2)
            if not message:
                break
            pid = fork_through_middle(sock, fds, start_child) if message == SPAWN and len(fds) == 2 else 0
            for fd in fds:
                os.close(fd)
            sock.send(PID.pack(pid))
    except BaseException:  # noqa: BLE001 - the worker sees the socket close and stops
        pass
    os._exit(0)


def fork_through_middle(sock: socket.socket, fds: list[int], start_child: Callable[[int, int], NoReturn]) -> int:
    """Fork the child through a middle process that exits at once; the child's pid, or 0."""
    pid_read, pid_write = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            child = os.fork()
            if child == 0:
                os.close(pid_read)
                os.close(pid_write)
                sock.close()
                start_child(fds[0], fds[1])
            os.write(pid_write, PID.pack(child))
        finally:
            os._exit(0)
    os.close(pid_write)
    try:
        data = os.read(pid_read, PID.size)
    finally:
        os.close(pid_read)
        os.waitpid(middle, 0)  # from here on the child's parent is the worker
    return PID.unpack(data)[0] if len(data) == PID.size else 0


def send_assignment(fd: int, assignment: tuple, deadline: float) -> None:
    """Write a new child's (context, request, phase) to its request pipe (the trusted
    direction) before the deadline. A child that is gone or does not read is left to the
    worker's `collect`, which sees it exit or time out."""
    os.set_blocking(fd, False)
    try:
        send_message(fd, pickle.dumps(assignment, protocol=pickle.HIGHEST_PROTOCOL), deadline)
    except WorkerFailure:
        pass


def read_assignment(fd: int) -> tuple:
    """In the child: its (context, request, phase), read from the worker; the pipe is closed."""
    try:
        return pickle.loads(read_message(fd, REQUEST_CAP_BYTES))
    finally:
        os.close(fd)

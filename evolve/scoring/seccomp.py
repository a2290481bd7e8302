"""The seccomp filter every candidate child installs: a classic-BPF deny-list of the system
calls a fit never needs, per architecture (x86_64, aarch64). Built here, installed by
`isolation.step_seccomp` after no_new_privs."""

from __future__ import annotations

import ctypes
import os

SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
EPERM, ESRCH = 1, 3


class SeccompError(RuntimeError):
    """A filter that cannot be built for this machine."""


# Calls a candidate never needs: keyrings, SysV and POSIX IPC, io_uring, userfaultfd, pidfds,
# ptrace and cross-process memory, (u)mount and namespaces, chroot, bpf, perf, modules, kexec,
# file handles, sockets. Signals to pids (kill, tkill, rt_sigqueueinfo) answer ESRCH, as if no
# other process existed; a candidate may still signal itself (raise() uses tgkill).
DENIED = (
    "keyctl", "add_key", "request_key", "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd",
    "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "shmget", "shmat", "shmctl", "shmdt", "semget", "semop", "semctl", "semtimedop", "msgget", "msgsnd", "msgrcv",
    "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr", "mount",
    "umount2", "unshare", "setns", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "bpf", "perf_event_open", "init_module", "finit_module", "delete_module",
    "kexec_load", "kexec_file_load", "swapon", "swapoff", "reboot", "acct", "quotactl", "name_to_handle_at",
    "open_by_handle_at", "socket",
)
SILENCED = ("kill", "tkill", "rt_sigqueueinfo")  # ESRCH
SYSCALL_TABLES = {
    "x86_64": (0xC000003E, {
        "keyctl": 250, "add_key": 248, "request_key": 249, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "userfaultfd": 323, "pidfd_open": 434, "pidfd_getfd": 438,
        "pidfd_send_signal": 424, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
        "shmget": 29, "shmat": 30, "shmctl": 31, "shmdt": 67, "semget": 64, "semop": 65, "semctl": 66,
        "semtimedop": 220, "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71, "mq_open": 240,
        "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243, "mq_notify": 244, "mq_getsetattr": 245,
        "mount": 165, "umount2": 166, "unshare": 272, "setns": 308, "pivot_root": 155, "chroot": 161,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442, "bpf": 321, "perf_event_open": 298, "init_module": 175, "finit_module": 313,
        "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320, "swapon": 167, "swapoff": 168,
        "reboot": 169, "acct": 163, "quotactl": 179, "name_to_handle_at": 303, "open_by_handle_at": 304,
        "socket": 41, "kill": 62, "tkill": 200, "rt_sigqueueinfo": 129,
    }),
    "aarch64": (0xC00000B7, {
        "keyctl": 219, "add_key": 217, "request_key": 218, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "userfaultfd": 282, "pidfd_open": 434, "pidfd_getfd": 438,
        "pidfd_send_signal": 424, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
        "shmget": 194, "shmat": 196, "shmctl": 195, "shmdt": 197, "semget": 190, "semop": 193, "semctl": 191,
        "semtimedop": 192, "msgget": 186, "msgsnd": 189, "msgrcv": 188, "msgctl": 187, "mq_open": 180,
        "mq_unlink": 181, "mq_timedsend": 182, "mq_timedreceive": 183, "mq_notify": 184, "mq_getsetattr": 185,
        "mount": 40, "umount2": 39, "unshare": 97, "setns": 268, "pivot_root": 41, "chroot": 51,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442, "bpf": 280, "perf_event_open": 241, "init_module": 105, "finit_module": 273,
        "delete_module": 106, "kexec_load": 104, "kexec_file_load": 294, "swapon": 224, "swapoff": 225,
        "reboot": 142, "acct": 89, "quotactl": 60, "name_to_handle_at": 264, "open_by_handle_at": 265,
        "socket": 198, "kill": 129, "tkill": 130, "rt_sigqueueinfo": 138,
    }),
}
MACHINE = os.uname().machine
SYSCALLS = SYSCALL_TABLES.get(MACHINE, (0, {}))[1]


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_program(machine: str = MACHINE, own_pid: int | None = None) -> list[tuple[int, int, int, int]] | None:
    """A classic-BPF deny-list: another architecture is killed, x32 calls and the DENIED calls
    get EPERM, the SILENCED ones ESRCH (kill only to `own_pid` passes), everything else is
    allowed. None on an unknown machine."""
    if machine not in SYSCALL_TABLES:
        return None
    arch, numbers = SYSCALL_TABLES[machine]
    own_pid = os.getpid() if own_pid is None else own_pid
    ld_abs, jeq, jge, ja, ret = 0x20, 0x15, 0x35, 0x05, 0x06
    prog = [(ld_abs, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, SECCOMP_RET_KILL_PROCESS), (ld_abs, 0, 0, 0)]
    body = [("x32", 0x40000000)] if machine == "x86_64" else []
    body += [("deny", numbers[name]) for name in DENIED]
    body += [("kill" if name == "kill" else "silence", numbers[name]) for name in SILENCED]
    base = len(prog)
    skip = base + len(body)  # JA over the kill check
    kill_check, allow = skip + 1, skip + 3
    targets = {"x32": allow + 1, "deny": allow + 1, "silence": allow + 2, "kill": kill_check}
    for index, (kind, number) in enumerate(body):
        prog.append((jge if kind == "x32" else jeq, targets[kind] - (base + index) - 1, 0, number))
    prog += [
        (ja, 0, 0, 2),
        (ld_abs, 0, 0, 16),  # kill's pid argument (low 32 bits)
        (jeq, 0, 2, own_pid & 0xFFFFFFFF),
        (ret, 0, 0, SECCOMP_RET_ALLOW),
        (ret, 0, 0, SECCOMP_RET_ERRNO | EPERM),
        (ret, 0, 0, SECCOMP_RET_ERRNO | ESRCH),
    ]
    if any(not 0 <= jt <= 255 for _, jt, _, _ in prog):
        raise SeccompError("seccomp program too long for its jumps")
    return prog

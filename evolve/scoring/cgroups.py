"""A cgroup per sandbox child: one memory and pids bound for its whole process tree, and an
atomic kill of that tree, where the kernel lets this process create groups.

`detect()` runs once per worker, before any child exists. It looks at the groups this
process is in (/proc/self/cgroup) and where each hierarchy is mounted (/proc/self/mountinfo),
and makes a per-worker group `evolve-w<pid>` in every hierarchy it can write:
- cgroup v2 (the unified hierarchy, pure or hybrid): `cgroup.kill` for the kill, and the
  `memory` and `pids` controllers when they are delegated to us;
- cgroup v1: `memory`, `pids` and `freezer` where v2 does not offer them.
Whatever is missing is simply absent from the layers; when nothing is writable the worker
keeps the older layers (RLIMIT_AS per process, a process-group kill and the slot-uid sweep).

Per child the worker calls `Cgroups.create()` before it forks: a fresh group below the
worker's in each hierarchy, its limits written while it is still empty. The child, still
trusted code running as root, writes itself into each group (`CandidateGroup.join`) before
it isolates itself and long before any candidate code runs, so every process the candidate
ever starts is born inside the group; a candidate cannot leave it (no capabilities, no /sys
in its chroot). After the child the worker reads the group's OOM-kill count, kills whatever
is left in one step (`cgroup.kill`, or freeze, kill every member, thaw) and removes it.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_PIDS_MAX = 64  # processes and threads of one child's tree (RLIMIT_NPROC 1 is the first bound)
WORKER_PREFIX = "evolve-w"
EMPTY_BOUND_S = 2.0
FREEZE_BOUND_S = 1.0


class CgroupError(OSError):
    """A group could not be created, limited or joined."""


def write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def own_groups() -> dict[str, str]:
    """This process's group path per controller; "" keys the v2 (unified) hierarchy."""
    groups = {}
    for line in read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            groups[name] = path
    return groups


def mount_points() -> dict[str, Path]:
    """Where each hierarchy is mounted, from mountinfo: v1 controller names, "" for cgroup2."""
    found: dict[str, Path] = {}
    for line in read(Path("/proc/self/mountinfo")).splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] == "cgroup2":
            found.setdefault("", Path(fields[4]))
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                if option in ("memory", "pids", "freezer"):
                    found.setdefault(option, Path(fields[4]))
    return found


@dataclass
class CandidateGroup:
    """One child's group in each usable hierarchy (role -> folder)."""

    dirs: dict[str, Path]
    kill_file: Path | None  # v2 cgroup.kill
    freezer: Path | None  # v1 freezer folder, when there is no cgroup.kill
    oom_events: Path | None  # memory.oom_control (v1) or memory.events (v2): an `oom_kill N` line
    members: Path = field(init=False)

    def __post_init__(self) -> None:
        self.members = next(iter(self.dirs.values())) / "cgroup.procs"

    def join(self) -> None:
        """In the child, before anything else: move this process into every group."""
        for folder in dict.fromkeys(self.dirs.values()):
            try:
                write(folder / "cgroup.procs", "0")
            except OSError as exc:
                raise CgroupError(f"cannot join {folder}: {exc.strerror}") from None

    def oom_kills(self) -> int:
        if self.oom_events is None:
            return 0
        for line in read(self.oom_events).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def pids(self) -> list[int]:
        return [int(pid) for pid in read(self.members).split() if pid.isdigit()]

    def kill(self) -> None:
        """SIGKILL every member at once: cgroup.kill, or freeze, kill each member, thaw."""
        if self.kill_file is not None:
            try:
                write(self.kill_file, "1")
                return
            except OSError:
                pass
        members = self.pids()
        if len(members) > 1 and self.freezer is not None and self.freeze():
            try:
                self.kill_members(self.pids())
            finally:
                try:
                    write(self.freezer / "freezer.state", "THAWED")
                except OSError:
                    pass
            return
        self.kill_members(members)  # one member: what it starts meanwhile, remove() finds and kills

    def freeze(self) -> bool:
        try:
            write(self.freezer / "freezer.state", "FROZEN")
        except OSError:
            return False
        deadline = time.monotonic() + FREEZE_BOUND_S
        while read(self.freezer / "freezer.state").strip() != "FROZEN":
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def kill_members(self, members: list[int]) -> None:
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remove(self) -> bool:
        """Remove every folder once the group is empty; False when a member survived."""
        deadline = time.monotonic() + EMPTY_BOUND_S
        while self.pids():
            if time.monotonic() > deadline:
                return False
            self.kill()
            time.sleep(0.002)
        removed = True
        for folder in dict.fromkeys(self.dirs.values()):
            try:
                folder.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                removed = False
        return removed


@dataclass
class Cgroups:
    """The worker's own groups (role -> folder) under which each child gets a fresh one."""

    roots: dict[str, Path]  # roles: "kill" (v2), "memory", "pids", "freezer"
    versions: dict[str, str]  # role -> "v1" or "v2"
    memory_file: str = ""
    count: int = 0

    @property
    def layers(self) -> list[str]:
        names = {"memory": "cgroup_memory", "pids": "cgroup_pids", "kill": "cgroup_kill", "freezer": "cgroup_freeze_kill"}
        roles = [role for role in ("memory", "pids", "kill", "freezer") if role in self.roots]
        if "kill" in roles:
            roles = [role for role in roles if role != "freezer"]
        return [f"{names[role]}_{self.versions[role]}" for role in roles]

    def create(self, memory_bytes: int, pids_max: int = CGROUP_PIDS_MAX) -> CandidateGroup:
        """A fresh, empty group for the next child, with its limits already set."""
        self.count += 1
        dirs: dict[str, Path] = {}
        try:
            for role, root in self.roots.items():
                folder = root / str(self.count)
                if folder not in dirs.values():
                    folder.mkdir(mode=0o700)
                dirs[role] = folder
            if "memory" in dirs:
                set_memory(dirs["memory"], self.versions["memory"], memory_bytes)
            if "pids" in dirs:
                write(dirs["pids"] / "pids.max", str(int(pids_max)))
        except OSError as exc:
            for folder in dict.fromkeys(dirs.values()):
                try:
                    folder.rmdir()
                except OSError:
                    pass
            raise CgroupError(f"cannot create a group: {exc}") from None
        memory = dirs.get("memory")
        events = None if memory is None else memory / ("memory.events" if self.versions["memory"] == "v2" else "memory.oom_control")
        kill_file = dirs["kill"] / "cgroup.kill" if "kill" in dirs else None
        return CandidateGroup(dirs, kill_file, None if kill_file else dirs.get("freezer"), events)

    def close(self) -> None:
        for folder in dict.fromkeys(self.roots.values()):
            remove_tree(folder)


def set_memory(folder: Path, version: str, limit: int) -> None:
    if version == "v2":
        write(folder / "memory.max", str(limit))
        if (folder / "memory.swap.max").exists():
            write(folder / "memory.swap.max", "0")
        return
    write(folder / "memory.limit_in_bytes", str(limit))
    if (folder / "memory.memsw.limit_in_bytes").exists():
        try:
            write(folder / "memory.memsw.limit_in_bytes", str(limit))  # no swapping out of the bound
        except OSError:
            pass  # swap accounting off: the memory limit alone holds


def remove_tree(folder: Path) -> None:
    """rmdir a group and its (empty) sub-groups, deepest first; populated ones stay."""
    try:
        children = [entry for entry in folder.iterdir() if entry.is_dir()]
    except OSError:
        return
    for child in children:
        remove_tree(child)
    try:
        folder.rmdir()
    except OSError:
        pass


def remove_stale(parent: Path) -> None:
    """Groups left by workers that died without closing (their pid is gone)."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(WORKER_PREFIX):]
        if entry.name.startswith(WORKER_PREFIX) and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            remove_tree(entry)


def host_pid() -> int:
    """Our pid as /proc (the host's, never remounted) numbers it: os.getpid() is 1 in the
    worker's own PID namespace (pidns.py), for every worker."""
    return int(os.readlink("/proc/self"))


def worker_group(parent: Path) -> Path:
    remove_stale(parent)
    folder = parent / f"{WORKER_PREFIX}{host_pid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def v2_roles(mount: Path, path: str) -> tuple[Path | None, list[str]]:
    """The worker's v2 group and the roles it offers: kill, and memory/pids if delegated."""
    parent = mount / path.lstrip("/")
    try:
        folder = worker_group(parent)
    except OSError:
        return None, []
    roles = ["kill"] if (folder / "cgroup.kill").exists() else []
    wanted = [name for name in ("memory", "pids") if name in read(parent / "cgroup.controllers").split()]
    for name in wanted:
        if name not in read(folder / "cgroup.controllers").split():
            try:
                write(parent / "cgroup.subtree_control", f"+{name}")
            except OSError:
                continue
        try:
            write(folder / "cgroup.subtree_control", f"+{name}")
            roles.append(name)
        except OSError:
            continue
    if not roles:
        remove_tree(folder)
        return None, []
    return folder, roles


def detect() -> tuple[Cgroups | None, str]:
    """The groups this worker can use, and a one-line account of what is missing and why."""
    if os.environ.get("EVOLVE_SANDBOX_CGROUPS", "1") == "0":
        return None, "cgroups switched off (EVOLVE_SANDBOX_CGROUPS=0)"
    groups, mounts = own_groups(), mount_points()
    roots: dict[str, Path] = {}
    versions: dict[str, str] = {}
    if "" in mounts and "" in groups:
        folder, roles = v2_roles(mounts[""], groups[""])
        for role in roles:
            roots[role], versions[role] = folder, "v2"
    for role in ("memory", "pids", "freezer"):
        if role in roots or role not in mounts or role not in groups:
            continue
        try:
            roots[role] = worker_group(mounts[role] / groups[role].lstrip("/"))
            versions[role] = "v1"
        except OSError:
            continue
    if "freezer" in roots and "kill" in roots:
        if not {"memory", "pids"} & {role for role, version in versions.items() if version == "v2"}:
            remove_tree(roots.pop("kill"))  # hybrid: a v2 group only for the kill costs 3-30 ms per join
            del versions["kill"]
        else:
            remove_tree(roots.pop("freezer"))
            del versions["freezer"]
    missing = [role for role in ("memory", "pids", "kill") if role not in roots and not (role == "kill" and "freezer" in roots)]
    note = "" if not missing else f"no writable cgroup for {', '.join(missing)}"
    return (Cgroups(roots, versions) if roots else None), note

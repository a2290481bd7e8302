"""A real two-node Ray cluster whose traffic never leaves loopback.

Ray binds the machine's own address even when told 127.0.0.1 (it resolves
"localhost" through a route probe). Inside a network namespace whose only
interface is ``lo``, that probe fails and Ray falls back to 127.0.0.1, so every
listener, every connection and every packet stays inside the namespace.

How: the calling thread moves into a fresh network namespace
(``unshare(CLONE_NEWNET)`` is per thread, and allowed in a threaded process),
brings ``lo`` up, starts ``ray.cluster_utils.Cluster`` (head + one worker node by
default, one CPU each, custom resources ``evolve_node_0`` / ``evolve_node_1`` ...)
and connects the driver. Every process Ray forks and every thread it starts from
this thread inherits the namespace. On exit the driver and the cluster are shut
down and the thread goes back to its original namespace, which the kernel then
frees. Needs root (CAP_SYS_ADMIN), Linux, and the ``ip`` command.

    with loopback_cluster() as c:      # or the ``ray_cluster`` fixture
        c.address                      # "127.0.0.1:<port>", driver connected
        c.kill_worker()                # SIGKILL node 2's raylet (and workers)
        c.add_worker()                 # a fresh node in its place (same thread)

Use it from the thread that will make the Ray calls (pytest's main thread).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
NODE_RESOURCES = ("evolve_node_0", "evolve_node_1")


def node_resource(index: int) -> str:
    """The custom resource that pins an actor to the index-th node started (0: the head)."""
    return f"evolve_node_{index}"
OBJECT_STORE_BYTES = 100 * 1024 * 1024  # per node; Ray's floor is 75 MiB
ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # No "ray.init() called, but ..." hints, no logs copied to the driver.
    "RAY_DISABLE_IMPORT_WARNING": "1",
}

# GCS marks a silent node dead after period x threshold (Ray's default: 3 s x 5 ~ 15 s).
FAST_DEATH = {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
              "health_check_timeout_ms": 500}

_libc = ctypes.CDLL(None, use_errno=True)


def unavailable_reason() -> str | None:
    """Why the loopback cluster cannot run here, or None if it can."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "ray is not installed"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root for a network namespace"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    return None


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


@contextlib.contextmanager
def loopback_netns():
    """Move the calling thread into a new network namespace with only lo up."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
            yield original
        finally:
            _check(_libc.setns(original, CLONE_NEWNET), "setns(original)")
    finally:
        os.close(original)


def listeners(netns_fd: int | None = None) -> str:
    """`ss -tulnp` here, or in the namespace that ``netns_fd`` refers to."""
    cmd = ["ss", "-tulnpH"]
    if netns_fd is not None:
        cmd = ["nsenter", f"--net=/proc/self/fd/{netns_fd}", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=10,
                          pass_fds=() if netns_fd is None else (netns_fd,),
                          stdin=subprocess.DEVNULL).stdout


@dataclass
class LoopbackCluster:
    cluster: object
    head: object
    worker: object | None  # the newest worker node (None for a head-only cluster)
    outer_netns: int
    temp_dir: str
    start_s: float
    resources: tuple = NODE_RESOURCES
    netns: str = ""
    num_cpus_per_node: int = 1
    started: int = 1  # nodes started so far (the next one's resource index)

    @property
    def address(self) -> str:
        return self.cluster.address

    def add_worker(self, num_cpus: int | None = None, wait_s: float = 60.0):
        """Start one more worker node (call from the thread inside the namespace) and wait
        until Ray lists it; it becomes ``self.worker``."""
        cpus = self.num_cpus_per_node if num_cpus is None else num_cpus
        self.worker = self.cluster.add_node(node_ip_address="127.0.0.1", num_cpus=cpus,
                                            object_store_memory=OBJECT_STORE_BYTES,
                                            resources={node_resource(self.started): 1})
        self.started += 1
        self.cluster.wait_for_nodes(timeout=wait_s)
        return self.worker

    def kill_worker(self) -> None:
        """SIGKILL the newest worker node (its raylet and everything on it), no grace."""
        self.cluster.remove_node(self.worker, allow_graceful=False)

    def alive_nodes(self) -> int:
        import ray

        return sum(1 for n in ray.nodes() if n.get("Alive"))

    def outside_listeners(self) -> str:
        return listeners(self.outer_netns)

    def outside_ray_listeners(self) -> list[str]:
        """Sockets listening in the original namespace that belong to the cluster (none)."""
        tags = {f"pid={pid}," for pid in self.pids()} | {'"raylet"', '"gcs_server"', '"ray::'}
        return [line for line in self.outside_listeners().splitlines()
                if any(tag in line for tag in tags)]

    def pids(self) -> list[int]:
        """Every process of the cluster (all of them live in its netns)."""
        return netns_pids(self.netns)


def netns_pids(netns: str) -> list[int]:
    """Pids of processes (not this one) in the network namespace ``netns``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/net") == netns:
                pids.append(int(entry))
        except OSError:
            continue
    return pids


@contextlib.contextmanager
def loopback_cluster(num_cpus_per_node: int = 1, connect: bool = True,
                     system_config: dict | None = None, nodes: int = 2):
    """Yield a running Ray cluster of ``nodes`` nodes (head included) on 127.0.0.1 inside
    its own netns.

    ``system_config`` goes to the head as Ray's ``_system_config``, e.g. FAST_DEATH."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    import ray
    from ray.cluster_utils import Cluster

    # A private RAY_TMPDIR: sessions, logs, sockets and ray_current_cluster (which Ray
    # writes even with temp_dir= given, and fails on when /tmp/ray is missing) stay in
    # it, so parallel clusters and other Ray users never meet. Short, for the unix
    # sockets' 108-byte limit.
    temp_root = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    temp_dir = os.path.join(temp_root, "ray")
    os.mkdir(temp_dir)
    env = dict(ENV, RAY_TMPDIR=temp_root)
    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    cluster = None
    netns = ""
    try:
        with loopback_netns() as outer:
            netns = os.readlink("/proc/thread-self/ns/net")
            t0 = time.monotonic()
            common = dict(node_ip_address="127.0.0.1", num_cpus=num_cpus_per_node,
                          object_store_memory=OBJECT_STORE_BYTES)
            cluster = Cluster(initialize_head=True, shutdown_at_exit=True,
                              head_node_args=dict(common, include_dashboard=False,
                                                  temp_dir=temp_dir,
                                                  _system_config=system_config or {},
                                                  resources={NODE_RESOURCES[0]: 1}))
            handle = LoopbackCluster(cluster, cluster.head_node, None, outer, temp_dir, 0.0,
                                     netns=netns, num_cpus_per_node=num_cpus_per_node)
            for _ in range(nodes - 1):
                handle.add_worker()
            cluster.wait_for_nodes(timeout=60)
            if connect:
                ray.init(address=cluster.address, _node_ip_address="127.0.0.1",
                         include_dashboard=False, log_to_driver=False,
                         logging_level="WARNING")
            handle.start_s = time.monotonic() - t0
            try:
                yield handle
            finally:
                if ray.is_initialized():
                    ray.shutdown()
                cluster.shutdown()
                cluster = None
                _reap(netns)
    finally:
        if cluster is not None:  # failed during start
            with contextlib.suppress(Exception):
                ray.shutdown()
            with contextlib.suppress(Exception):
                cluster.shutdown()
            _reap(netns)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(temp_root, ignore_errors=True)


def _reap(netns: str, wait_s: float = 5.0) -> None:
    """Wait for the namespace's processes to go; SIGKILL any that linger."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and netns_pids(netns):
        time.sleep(0.1)
    for pid in netns_pids(netns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


try:  # the pytest fixture, when pytest is there
    import pytest

    @pytest.fixture
    def ray_cluster():
        reason = unavailable_reason()
        if reason:
            pytest.skip(reason)
        with loopback_cluster() as c:
            yield c
except ImportError:  # pragma: no cover
    pass

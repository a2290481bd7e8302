"""Probe a real 2-node Ray cluster on loopback for what a Ray executor needs (issue 17).

Starts tests/ray_cluster.py's cluster (head + 1 worker node, 1 CPU each, inside a network
namespace with only lo up; needs root and `pip install "ray>=2.9"`) and prints:

- start:      seconds to start both nodes and connect the driver
- hop:        the round trip of a tiny actor call (median, p90 over --calls), per node
- throughput: --tasks CPU-bound calls of ~--task-s seconds on one 1-CPU node vs two
- kill:       a node SIGKILLed under a pending call: the exception, when it is seen,
              and whether the surviving node still serves old and new actors
- sandbox:    whether a Ray actor (root) can fork children that unshare, chroot, setuid,
              and run evolve's real Sandbox + Scorer on a seed law
- shutdown:   seconds to stop, and whether any process of the cluster is left

    python bench/scale_probe.py                 # about 40 s on 2 cores
    python bench/scale_probe.py --only hop,throughput
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402

from tests.ray_cluster import FAST_DEATH, NODE_RESOURCES, listeners, loopback_cluster, netns_pids  # noqa: E402

SECTIONS = ("hop", "throughput", "kill", "sandbox")


def spin(n: int) -> int:
    """Pure-Python CPU work (holds one core, no BLAS)."""
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1_000_003
    return acc


def calibrate(target_s: float) -> int:
    n = 200_000
    while True:
        t0 = time.perf_counter()
        spin(n)
        dt = time.perf_counter() - t0
        if dt > 0.2:
            return int(n * target_s / dt)
        n *= 2


@ray.remote(num_cpus=0, max_restarts=0)
class Probe:
    def ping(self, payload):
        return payload

    def node(self):
        return ray.get_runtime_context().get_node_id()

    def sleep(self, s):
        time.sleep(s)
        return s

    def sandbox_probe(self):
        return sandbox_layers_in_a_fork()

    def real_scorer(self, root):
        sys.path.insert(0, root)
        from evolve.config import ScorerConfig
        from evolve.scorer import Scorer
        from evolve.tasks import load_task

        task = load_task("sft_scaling_law")
        seed = sorted((task.path / "seeds").glob("*.py"))[0]
        t0 = time.perf_counter()
        with Scorer(ScorerConfig(workers=1, timeout_s=60)) as scorer:
            layers = scorer.sandbox.layers
            ev = scorer.score(seed.read_text(), task, "validation")
        return {"layers": layers, "status": ev.status, "r2": ev.metrics.r2, "seed": seed.name, "seconds": round(time.perf_counter() - t0, 2)}


@ray.remote(num_cpus=1, max_restarts=0)
class Cruncher:
    def run(self, n):
        w, c = time.perf_counter(), time.process_time()
        spin(n)
        return time.perf_counter() - w, time.process_time() - c


def _timed_spin(n):
    w = time.perf_counter()
    spin(n)
    return time.perf_counter() - w


def machine_ceiling(n: int, tasks: int) -> float:
    """The same work in 1 vs 2 plain processes, no Ray: what the cores give right now."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(_timed_spin, [1000, 1000])
        t0 = time.perf_counter()
        for _ in range(tasks):
            pool.apply(_timed_spin, (n,))
        t1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        pool.map(_timed_spin, [n] * tasks, chunksize=1)
        t2 = time.perf_counter() - t0
    return t1 / t2


def sandbox_layers_in_a_fork() -> dict:
    """Fork; in the child: setsid, rlimits, unshare(net|mount|ipc), private mounts, tmpfs,
    chroot, setgroups/setgid/setuid 60000, no_new_privs. Report each step's outcome."""
    import ctypes
    import json
    import resource
    import tempfile

    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWIPC = 0x00020000, 0x40000000, 0x08000000
    MS_REC, MS_PRIVATE = 0x4000, 1 << 18
    scratch = tempfile.mkdtemp(prefix="probe")
    os.chmod(scratch, 0o755)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only async-signal-safe-ish work, then _exit
        os.close(r)
        out = {}

        def step(name, fn):
            try:
                res = fn()
                out[name] = "ok" if res in (None, 0) else f"rc={res} errno={ctypes.get_errno()}"
            except Exception as exc:  # noqa: BLE001
                out[name] = f"{type(exc).__name__}: {exc}"

        step("setsid", os.setsid)
        step("rlimits", lambda: [resource.setrlimit(resource.RLIMIT_NPROC, (8, 8)),
                                 resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)),
                                 resource.setrlimit(resource.RLIMIT_CORE, (0, 0))] and None)
        step("unshare_net_mnt_ipc", lambda: libc.unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC))
        step("mount_private", lambda: libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None))
        step("tmpfs", lambda: libc.mount(b"tmpfs", scratch.encode(), b"tmpfs", 0, b"size=1m,nr_inodes=64"))
        step("chroot", lambda: [os.chroot(scratch), os.chdir("/")] and None)
        step("listdir_root_empty", lambda: None if os.listdir("/") == [] else os.listdir("/"))
        step("setuid_60000", lambda: [os.setgroups([]), os.setgid(60000), os.setuid(60000)] and None)
        step("uid_is_60000", lambda: None if (os.getuid(), os.geteuid()) == (60000, 60000) else os.getuid())
        step("no_new_privs", lambda: libc.prctl(38, 1, 0, 0, 0))
        try:
            with open("/sys/class/net", "rb"):
                pass
        except OSError:
            pass
        try:
            import socket

            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(0.2)
            err = s.connect_ex(("127.0.0.1", 1))
            out["loopback_connect_errno"] = err  # 101 ENETUNREACH: lo is down in the new netns
            s.close()
        except OSError as exc:
            out["loopback_connect_errno"] = f"{exc}"
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    os.rmdir(scratch)
    result = json.loads(data or b"{}")
    result["exit_status"] = status
    result["worker_pid_uid"] = (os.getpid(), os.getuid())
    result["worker_threads"] = len(os.listdir("/proc/self/task"))
    return result


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def probe_hop(calls: int) -> None:
    for resource in NODE_RESOURCES:
        a = Probe.options(resources={resource: 0.01}).remote()
        ray.get([a.ping.remote(b"x") for _ in range(20)])  # warm
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            ray.get(a.ping.remote(b"x"))
            times.append((time.perf_counter() - t0) * 1e3)
        print(f"hop {resource}: {calls} calls, median {statistics.median(times):.3f} ms, "
              f"p90 {pct(times, 0.9):.3f} ms, min {min(times):.3f} ms", flush=True)
        ray.kill(a)


def probe_throughput(tasks: int, task_s: float, rounds: int) -> None:
    """Per round: the plain-process ceiling, then 1 node, then 2 nodes (other load on the
    machine moves all three, so they are taken back to back and the best round reported)."""
    n = calibrate(task_s)
    one = Cruncher.options(resources={NODE_RESOURCES[0]: 0.01}).remote()
    two = Cruncher.options(resources={NODE_RESOURCES[1]: 0.01}).remote()
    ray.get([one.run.remote(1000), two.run.remote(1000)])  # both alive and warm
    best = None
    for r in range(rounds):
        ceiling = machine_ceiling(n, tasks)
        t0 = time.perf_counter()
        r1 = ray.get([one.run.remote(n) for _ in range(tasks)])
        t1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        r2 = ray.get([(one if i % 2 == 0 else two).run.remote(n) for i in range(tasks)])
        t2 = time.perf_counter() - t0
        eff = sum(c for _, c in r2) / sum(w for w, _ in r2)
        print(f"throughput round {r + 1}: {tasks} calls of ~{task_s:.1f} s: 1 node {t1:.2f} s "
              f"(call {statistics.median(w for w, _ in r1):.2f} s), 2 nodes {t2:.2f} s "
              f"(call {statistics.median(w for w, _ in r2):.2f} s, cpu/wall {eff:.2f}): "
              f"speedup {t1 / t2:.2f}x; plain processes {ceiling:.2f}x; "
              f"load avg {os.getloadavg()[0]:.2f}", flush=True)
        best = max(best or 0, t1 / t2)
    print(f"throughput: best 1 -> 2 node speedup {best:.2f}x", flush=True)
    ray.kill(one)
    ray.kill(two)


def probe_sandbox() -> None:
    a = Probe.options(resources={NODE_RESOURCES[1]: 0.01}).remote()
    print(f"sandbox fork probe: {ray.get(a.sandbox_probe.remote(), timeout=60)}", flush=True)
    try:
        print(f"real Scorer in an actor: {ray.get(a.real_scorer.remote(str(ROOT)), timeout=180)}",
              flush=True)
    except Exception as exc:  # noqa: BLE001
        print(f"real Scorer in an actor: FAILED {type(exc).__name__}: {exc}", flush=True)
    ray.kill(a)


def probe_kill(cluster) -> None:
    a0 = Probe.options(resources={NODE_RESOURCES[0]: 0.01}).remote()
    a1 = Probe.options(resources={NODE_RESOURCES[1]: 0.01}).remote()
    ray.get([a0.node.remote(), a1.node.remote()])
    pending = [a1.sleep.remote(30) for _ in range(3)]
    time.sleep(0.2)
    t0 = time.perf_counter()
    cluster.kill_worker()
    t_kill = time.perf_counter() - t0
    seen = []
    for ref in pending:
        try:
            ray.get(ref, timeout=90)
            seen.append(("returned", time.perf_counter() - t0))
        except Exception as exc:  # noqa: BLE001
            seen.append((type(exc).__name__, time.perf_counter() - t0, type(exc).__mro__[1].__name__))
    print(f"kill: remove_node took {t_kill:.2f} s; pending calls -> {seen}", flush=True)
    try:
        ray.get(a1.ping.remote(1), timeout=30)
        after = "returned"
    except Exception as exc:  # noqa: BLE001
        after = f"{type(exc).__name__} ({str(exc).splitlines()[0][:160]})"
    print(f"kill: new call to the dead actor -> {after}", flush=True)
    dead_node = cluster.worker.node_id
    died_at = node_dead_at = None
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline and (died_at is None or node_dead_at is None):
        if node_dead_at is None and not any(
                n["Alive"] for n in ray.nodes() if n["NodeID"] == dead_node):
            node_dead_at = time.perf_counter() - t0
        if died_at is None:
            try:
                ray.get(a1.ping.remote(1), timeout=5)
            except ray.exceptions.ActorDiedError:
                died_at = time.perf_counter() - t0
            except Exception:  # noqa: BLE001
                pass
        time.sleep(0.25)
    print(f"kill: calls raise ActorDiedError from {died_at} s; ray.nodes() marks the node dead "
          f"at {node_dead_at} s after the kill", flush=True)
    t0 = time.perf_counter()
    print(f"kill: old actor on the survivor -> {ray.get(a0.ping.remote('ok'), timeout=30)!r} "
          f"in {(time.perf_counter() - t0) * 1e3:.1f} ms", flush=True)
    t0 = time.perf_counter()
    fresh = Probe.options(resources={NODE_RESOURCES[0]: 0.01}).remote()
    print(f"kill: new actor on the survivor answers in {time.perf_counter() - t0 + 0:.2f}s -> "
          f"{ray.get(fresh.ping.remote('ok'), timeout=30)!r} "
          f"(total {time.perf_counter() - t0:.2f} s)", flush=True)
    alive = [n["Alive"] for n in ray.nodes()]
    print(f"kill: ray.nodes() alive flags {alive}", flush=True)
    orphan = Probe.options(resources={NODE_RESOURCES[1]: 0.01}).remote()
    ready, _ = ray.wait([orphan.ping.remote(1)], timeout=3)
    print(f"kill: actor asking for the dead node's resource ready in 3 s: {bool(ready)} "
          f"(it stays pending; give it a deadline)", flush=True)
    ray.kill(orphan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--task-s", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--fast-death", action="store_true",
                        help="health checks every 0.5 s, dead after 3 misses (tests.ray_cluster.FAST_DEATH)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    t0 = time.perf_counter()
    with loopback_cluster(system_config=FAST_DEATH if args.fast_death else None) as cluster:
        print(f"start: 2 nodes up and driver connected in {cluster.start_s:.2f} s "
              f"({time.perf_counter() - t0:.2f} s incl. netns) at {cluster.address}", flush=True)
        inside = listeners().splitlines()
        bad = [line for line in inside if "127.0.0.1" not in line.split()[4]]
        outside = cluster.outside_ray_listeners()
        print(f"listeners: {len(inside)} in the netns, {len(bad)} not on 127.0.0.1; "
              f"{len(outside)} Ray listeners outside", flush=True)
        if "hop" in only:
            probe_hop(args.calls)
        if "throughput" in only:
            probe_throughput(args.tasks, args.task_s, args.rounds)
        if "sandbox" in only:
            probe_sandbox()
        if "kill" in only:
            probe_kill(cluster)
        netns = cluster.netns
        t_down = time.perf_counter()
    print(f"shutdown: {time.perf_counter() - t_down:.2f} s; processes left in the cluster's "
          f"netns: {netns_pids(netns)}", flush=True)


if __name__ == "__main__":
    main()

"""Evaluations per second on a real Ray cluster on this machine, per node/worker layout (issue 17).

Every number goes through the code a run uses: `open_scorer`'s Scorer with a RayExecutor
(one NodeScorer actor per node wrapping that node's warm, isolated sandbox pool), or the
local Scorer for the no-Ray baseline. The cluster is tests/ray_cluster.py's: every node
on 127.0.0.1 inside a network namespace whose only interface is lo (needs root and
`pip install "evolve-laws[ray]"`); the bench checks that nothing of it listens outside.

Workload (about one second per evaluation): the shipped seed law
tasks/parallel_scaling_law/seeds/baseline.py, unchanged but for its multistart count:
variable projection from N seeded starts instead of 8, N calibrated here so one
validation evaluation costs about --eval-s CPU seconds on this machine. It is a real law
fitted the way evolve's own helpers fit (evolve.fitting.varpro_fit), just with more
restarts, as a user would for a hard landscape; its R² is the seed's.

Sections:
- throughput: rounds of --evals concurrent evaluations through each layout, taken back
  to back within a round (other users' load moves them all alike): local 1 worker,
  Ray 1 node x 1 CPU, local 2 workers, Ray 2 nodes x 1 CPU (one cluster; the second
  node is added after the one-node scorer opens, so that scorer only knows the head),
  and with --layouts also 1 node x 2 CPUs (its own cluster). The best and median round
  are reported; `uptime` load averages before and after each round.
- hop: what a Ray hop adds to one evaluation: the same fast evaluation (a 3-parameter
  law fitted by least squares in closed form, a few ms) one at a time locally and through Ray on one node, interleaved;
  added = median(Ray) - median(local), plus per call wall - node-side seconds and a bare
  actor round trip.
- driver: the driver's own cost per evaluation, the numbers the 10/100-node projection
  rests on: CPU seconds of this process per Ray evaluation (dispatch, pickling, result
  checks), one SQLite store (Archive.add, the run's single writer) and one parent +
  inspirations draw at an archive of a few hundred programs, and one offline proposal.

    python bench/scale.py                # about 3 minutes on 2 idle cores
    python bench/scale.py --quick        # about 1 minute: 1 round, fewer calls, no 1x2 layout
    python bench/scale.py --only hop,driver
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import wait
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402

from evolve.config import ArchiveConfig, ScorerConfig  # noqa: E402
from evolve.scoring.factory import open_scorer  # noqa: E402
from evolve.scoring.scorer import Scorer, build_jobs  # noqa: E402
from evolve.tasks import load_task  # noqa: E402
from tests.ray_cluster import listeners, loopback_cluster, node_resource  # noqa: E402

TASK = "parallel_scaling_law"
SECTIONS = ("throughput", "hop", "driver")
TIMEOUT_S = 120.0


def uptime() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def seed_code(task) -> str:
    return (task.path / "seeds" / "baseline.py").read_text()


def slow_code(task, starts: int) -> str:
    code = seed_code(task)
    assert "n_starts=8" in code, "the shipped seed changed: update the workload"
    return code.replace("n_starts=8", f"n_starts={starts}")


def calibrate(task, target_s: float) -> tuple[int, float]:
    """Multistart count whose validation fit costs about target_s CPU seconds here
    (in-process CPU time, which other users' load barely moves)."""
    from evolve.scoring.in_sandbox import run_jobs

    jobs, _ = build_jobs(task, "validation")

    def cost(starts: int) -> float:
        code = slow_code(task, starts)
        run_jobs(code, jobs, task.features, task.targets)  # imports, caches
        t0 = time.process_time()
        report = run_jobs(code, jobs, task.features, task.targets)
        assert report.status == "ok", report.message
        return time.process_time() - t0

    per_start = cost(64) / 64
    starts = max(8, round(target_s / per_start))
    return starts, cost(starts)


def check_loopback() -> str:
    inside = [line for line in listeners().splitlines() if line.strip()]
    bad = [line for line in inside if not line.split()[4].rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]")]
    if bad:
        raise SystemExit(f"refusing to bench: a cluster socket is not on loopback: {bad[0]}")
    return f"{len(inside)} listeners, all on 127.0.0.1"


def config(workers: int) -> ScorerConfig:
    return ScorerConfig(workers=workers, timeout_s=TIMEOUT_S)


def ray_scorer(workers: int) -> Scorer:
    return open_scorer(ScorerConfig(workers=workers, timeout_s=TIMEOUT_S, executor="ray"))


def batch(scorer: Scorer, code: str, task, evals: int) -> dict:
    """evals evaluations submitted at once (the Scorer's own thread pool keeps `workers`
    in flight, as the loop does); wall seconds, evaluations per second, nodes used."""
    t0 = time.perf_counter()
    futures = [scorer.submit(code, task, "validation") for _ in range(evals)]
    wait(futures)
    wall = time.perf_counter() - t0
    results = [f.result() for f in futures]
    assert all(r.ok for r in results), [r.message for r in results if not r.ok][:1]
    return {"wall": wall, "rate": evals / wall, "eval_s": statistics.median(r.seconds for r in results),
            "nodes": len({r.node for r in results})}


def throughput(args, task, code) -> list[dict]:
    rows = []
    with loopback_cluster(nodes=1, num_cpus_per_node=1) as cluster:
        print(f"cluster 1: {check_loopback()}", flush=True)
        one_node = ray_scorer(1)
        cluster.add_worker()
        two_nodes = ray_scorer(2)
        print(f"cluster 1: two nodes ({check_loopback()}); layers of a node: "
              f"{next(iter(two_nodes.remote.layers.values()))}", flush=True)
        layouts = [("local, 1 worker", Scorer(config(1))), ("Ray, 1 node x 1 CPU", one_node),
                   ("local, 2 workers", Scorer(config(2))), ("Ray, 2 nodes x 1 CPU", two_nodes)]
        try:
            for _, scorer in layouts:  # warm: first imports in every worker
                batch(scorer, code, task, scorer.config.workers)
            rows += rounds(args, task, code, layouts)
        finally:
            for _, scorer in layouts:
                scorer.close()
    if args.layouts_1x2:
        with loopback_cluster(nodes=1, num_cpus_per_node=2) as cluster:
            print(f"cluster 2: {check_loopback()}", flush=True)
            layouts = [("Ray, 1 node x 2 CPUs", ray_scorer(2))]
            try:
                batch(layouts[0][1], code, task, 2)
                rows += rounds(args, task, code, layouts)
            finally:
                layouts[0][1].close()
    return rows


def rounds(args, task, code, layouts) -> list[dict]:
    per = {name: [] for name, _ in layouts}
    for r in range(args.rounds):
        before = uptime()
        line = []
        for name, scorer in layouts:
            result = batch(scorer, code, task, args.evals)
            result["load"] = f"{before} -> {uptime()}"
            per[name].append(result)
            line.append(f"{name}: {result['rate']:.3f}/s")
        print(f"round {r + 1} (load {before} -> {uptime()}): " + "; ".join(line), flush=True)
    rows = []
    for name, results in per.items():
        rates = [x["rate"] for x in results]
        rows.append({"layout": name, "best": max(rates), "median": statistics.median(rates),
                     "eval_s": statistics.median(x["eval_s"] for x in results),
                     "nodes": max(x["nodes"] for x in results), "rates": rates,
                     "loads": [x["load"] for x in results]})
    return rows


@ray.remote(num_cpus=0, max_restarts=0)
class Echo:
    def ping(self, payload):
        return payload


FAST_LAW = """# EVOLVE-BLOCK-START
import numpy as np


def scaling_law_func(data_points, params):
    X = np.atleast_2d(np.asarray(data_points, dtype=float))
    a, b, c = np.asarray(params, dtype=float).ravel()
    return a + b * np.log(X[:, 0]) + c * np.log(X[:, 1])


def fit_scaling_law(data_points, loss_values):
    X = np.atleast_2d(np.asarray(data_points, dtype=float))
    A = np.column_stack([np.ones(len(X)), np.log(X[:, 0]), np.log(X[:, 1])])
    return np.linalg.lstsq(A, np.asarray(loss_values, dtype=float), rcond=None)[0]
# EVOLVE-BLOCK-END
"""


def hop(args, task) -> dict:
    """A law that fits in closed form (milliseconds), so the hop is not lost in fit noise."""
    code = FAST_LAW
    with loopback_cluster(nodes=1, num_cpus_per_node=1) as _cluster:
        print(f"hop cluster: {check_loopback()}", flush=True)
        echo = Echo.options(resources={node_resource(0): 0.01}).remote()
        ray.get([echo.ping.remote(b"x") for _ in range(20)])
        pings = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            ray.get(echo.ping.remote(b"x"))
            pings.append(time.perf_counter() - t0)
        local, remote = Scorer(config(1)), ray_scorer(1)
        try:
            for s in (local, remote):
                for _ in range(5):
                    s.score(code, task, "validation")
            local_wall, ray_wall, ray_gap = [], [], []
            n_ray, ray_cpu = 0, 0.0
            for _ in range(args.calls):
                t0 = time.perf_counter()
                local.score(code, task, "validation")
                local_wall.append(time.perf_counter() - t0)
                c0, t0 = time.process_time(), time.perf_counter()
                ev = remote.score(code, task, "validation")
                wall = time.perf_counter() - t0
                ray_cpu += time.process_time() - c0
                n_ray += 1
                ray_wall.append(wall)
                ray_gap.append(wall - ev.seconds)
                assert ev.ok, ev.message
        finally:
            local.close()
            remote.close()
    ms = 1e3
    return {"calls": args.calls, "ping_ms": statistics.median(pings) * ms,
            "local_ms": statistics.median(local_wall) * ms, "ray_ms": statistics.median(ray_wall) * ms,
            "added_ms": (statistics.median(ray_wall) - statistics.median(local_wall)) * ms,
            "gap_ms": statistics.median(ray_gap) * ms, "gap_p90_ms": sorted(ray_gap)[int(0.9 * len(ray_gap))] * ms,
            "driver_cpu_ms": ray_cpu / n_ray * ms}


def driver_costs(args, task) -> dict:
    """The run loop's own work per evaluation on the driver, at a realistic archive size."""
    from evolve.config import RunConfig
    from evolve.propose.base import ProposalRequest
    from evolve.propose.factory import make_proposer
    from evolve.records import ProgramRecord
    from evolve.store.database import Archive

    with Scorer(config(1)) as scorer:
        evaluation = scorer.score(seed_code(task), task, "validation")
    code = seed_code(task)
    rng = random.Random(0)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        archive = Archive.create(Path(tmp) / "archive.db", ArchiveConfig(), task.param_cap)
        with archive:
            seed = archive.add(ProgramRecord(code=code, validation=evaluation, island=0, proposer="seed"))
            adds, draws, at = [], [], {}
            checkpoints = sorted(int(x) for x in args.archive_sizes.split(","))
            for i in range(checkpoints[-1]):
                variant = code.replace("EXPONENT_BOUNDS = (0.0, 3.0)", f"EXPONENT_BOUNDS = (0.0, {3 + i / 10000:.5f})")
                record = ProgramRecord(code=variant, validation=evaluation, iteration=i + 1, island=i % 5,
                                       parent_id=seed.id, proposer="bench", explanation="bench variant " * 8)
                t0 = time.perf_counter()
                archive.add(record)
                adds.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                parent = archive.sample_parent(rng, i % 5)
                archive.sample_inspirations(rng, i % 5, parent, 3)
                archive.recent_failures(i % 5, 3)
                draws.append(time.perf_counter() - t0)
                if i + 1 in checkpoints:  # medians of the last 25 at this size
                    at[archive.count()] = (statistics.median(adds[-25:]) * 1e3, statistics.median(draws[-25:]) * 1e3)
            out["at"] = at
            run_config = RunConfig(task=TASK, proposer="offline")
            proposer, _ = make_proposer(run_config, task)
            try:
                times, with_code = [], 0
                for i in range(args.proposals):
                    request = ProposalRequest(task=task, parent=parent, inspirations=(), failures=(),
                                              edit_mode="diff", seed=i)
                    c0 = time.process_time()
                    proposal = proposer.propose(request)
                    times.append(time.process_time() - c0)
                    with_code += proposal.code is not None
                out["propose_ms"] = statistics.median(times) * 1e3
                out["proposals"] = (with_code, len(times))
            finally:
                proposer.close()
    return out


def markdown(rows, hop_result, driver, args, starts, cost, started_load, ended_load, seconds) -> str:
    lines = [f"workload: {TASK} seed law baseline.py with varpro_fit n_starts={starts} "
             f"(one validation fit {cost:.2f} CPU s in-process here); {args.evals} evaluations per round, "
             f"{args.rounds} round(s); `uptime` load {started_load} at start, {ended_load} at end; "
             f"{os.cpu_count()} CPUs; {seconds:.0f} s in all", ""]
    if rows:
        base = {r["layout"]: r for r in rows}
        lines += ["| layout | evaluations/s (best round) | median round | vs 1 node (median) | "
                  "eval s (node side, median) | nodes used | per round (load 1/5/15 min before -> after) |",
                  "|---|---|---|---|---|---|---|"]
        ref = base.get("Ray, 1 node x 1 CPU")
        for r in rows:
            ratio = f"{r['median'] / ref['median']:.2f}x" if ref else "-"
            rounds_text = "; ".join(f"{rate:.3f} ({load})" for rate, load in zip(r["rates"], r["loads"]))
            lines.append(f"| {r['layout']} | {r['best']:.3f} | {r['median']:.3f} | {ratio} | {r['eval_s']:.2f} | "
                         f"{r['nodes']} | {rounds_text} |")
        one, two = base.get("Ray, 1 node x 1 CPU"), base.get("Ray, 2 nodes x 1 CPU")
        l1, l2 = base.get("local, 1 worker"), base.get("local, 2 workers")
        if one and two:
            per_round = [b / a for a, b in zip(one["rates"], two["rates"])]
            local = [b / a for a, b in zip(l1["rates"], l2["rates"])] if l1 and l2 else []
            lines += ["", f"two 1-CPU nodes vs one, per round: {', '.join(f'{x:.2f}x' for x in per_round)} "
                          f"(target >= 1.6x); the same rounds without Ray (local 2 vs 1 workers): "
                          f"{', '.join(f'{x:.2f}x' for x in local)}"]
    if hop_result:
        h = hop_result
        lines += ["", f"hop ({h['calls']} calls, one node): one closed-form-law evaluation {h['local_ms']:.1f} ms locally, "
                      f"{h['ray_ms']:.1f} ms through Ray: added {h['added_ms']:.2f} ms (median); per call driver wall "
                      f"minus node-side seconds {h['gap_ms']:.2f} ms median, {h['gap_p90_ms']:.2f} ms p90 (target < 10 ms); "
                      f"bare actor round trip {h['ping_ms']:.2f} ms; driver CPU per Ray evaluation "
                      f"{h['driver_cpu_ms']:.2f} ms"]
    if driver:
        d = driver
        sizes = "; ".join(f"{n} programs: store {a:.2f} ms, draw {b:.2f} ms" for n, (a, b) in sorted(d["at"].items()))
        lines += ["", f"driver loop per evaluation (SQLite store = Archive.add, the single writer; draw = parent + "
                      f"inspirations + recent failures for one request): {sizes}; offline proposal "
                      f"{d['propose_ms']:.2f} ms CPU ({d['proposals'][0]} of {d['proposals'][1]} with code)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 4 evaluations, 40 hop calls, no 1x2 layout")
    parser.add_argument("--evals", type=int, default=6, help="evaluations per layout per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eval-s", type=float, default=1.0, help="CPU seconds one evaluation should take")
    parser.add_argument("--calls", type=int, default=100, help="hop: evaluations one at a time per side")
    parser.add_argument("--archive-sizes", default="100,300,1000", help="archive sizes to time the driver's store and draws at")
    parser.add_argument("--proposals", type=int, default=30)
    parser.add_argument("--no-1x2", dest="layouts_1x2", action="store_false", help="skip the 1 node x 2 CPUs layout")
    parser.add_argument("--only", default=",".join(SECTIONS))
    args = parser.parse_args()
    if args.quick:
        args.evals, args.rounds, args.calls, args.layouts_1x2 = 4, 1, 40, False
        args.archive_sizes, args.proposals = "100,300", 10
    only = set(args.only.split(","))
    started, started_load = time.perf_counter(), uptime()
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}", flush=True)
    task = load_task(TASK)
    starts, cost = calibrate(task, args.eval_s) if "throughput" in only else (0, 0.0)
    if starts:
        print(f"workload: n_starts={starts}, one validation fit {cost:.2f} CPU s", flush=True)
    rows = throughput(args, task, slow_code(task, starts)) if "throughput" in only else []
    hop_result = hop(args, task) if "hop" in only else None
    driver = driver_costs(args, task) if "driver" in only else None
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}", flush=True)
    print()
    print(markdown(rows, hop_result, driver, args, starts, cost, started_load, uptime(), time.perf_counter() - started))


if __name__ == "__main__":
    main()

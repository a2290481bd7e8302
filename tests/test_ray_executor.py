"""Scoring on a real 2-node loopback Ray cluster, one cluster for the whole module (it takes
seconds to start; the tests share it, and the one that kills a node runs last):

- the cluster listens on 127.0.0.1 only, inside its namespace; an actor lands on each node;
- a run over both nodes stores the same archive as a local run with the same seed, and
  records the node of every program (`archive list --json`, `show`);
- candidate code the selection re-fits runs in a node's sandbox, never in the driver;
- a node whose sandbox cannot isolate is refused unless allowed; a result that overflows
  scores as it does locally; the driver's checks refuse malformed results;
- a sweep killed mid-cell stops that cell's run with it; the same grid on Ray resumes it
  and starts the other, and the same command here then skips both;
- killing a node mid-run loses nothing (its evaluations go to the survivor).
"""
import json
import os
import time

import pytest

ray = pytest.importorskip("ray")

from tests.ray_cluster import FAST_DEATH, listeners, loopback_cluster, node_resource, unavailable_reason  # noqa: E402

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
    pytest.mark.timeout(240),
]

TASK = "parallel_scaling_law"
ITERATIONS = 4  # two batches of two: both nodes busy, and a batch after the kill


@pytest.fixture(scope="module")
def cluster():
    with loopback_cluster(system_config=FAST_DEATH) as c:
        yield c


def evolve(*argv) -> int:
    from evolve.cli.main import main

    return main(list(argv))


def run(run_dir, *extra, seed=0):
    code = evolve("run", TASK, "--proposer", "offline", "--seed", str(seed), "--iterations", str(ITERATIONS),
                  "--run-dir", str(run_dir), "--quiet", *extra)
    assert code == 0
    from evolve.store.rundir import open_read_only

    with open_read_only(run_dir) as archive:
        return archive.programs(order="id"), archive.get_meta("status")


def fingerprint(records):
    return [(r.code, str(r.validation.status), round(r.validation.metrics.r2, 10) if r.validation.ok else None,
             None if r.test is None else round(r.test.metrics.r2, 10)) for r in records]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    return run(tmp_path_factory.mktemp("local") / "run")


def law(fit_body: str, predict: str = "np.full(len(X), 1.0)") -> str:
    return ("# EVOLVE-BLOCK-START\nimport os\nimport numpy as np\n\n\n"
            "def scaling_law_func(data_points, params):\n"
            "    X = np.atleast_2d(np.asarray(data_points, dtype=float))\n"
            f"    return {predict}\n\n\n"
            "def fit_scaling_law(data_points, loss_values):\n"
            f"    return {fit_body}\n# EVOLVE-BLOCK-END\n")


@ray.remote(num_cpus=0, max_restarts=0)
class Where:
    def node(self):
        return ray.get_runtime_context().get_node_id(), os.getpid()


def test_the_cluster_stays_on_loopback_with_an_actor_on_each_node(cluster):
    inside = [line for line in listeners().splitlines() if line.strip()]
    assert inside, "ray should be listening inside its namespace"
    for line in inside:
        assert line.split()[4].rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]"), line
    assert cluster.outside_ray_listeners() == []
    assert len(cluster.pids()) >= 4  # gcs, 2 raylets, workers: all in the namespace
    a0, a1 = (Where.options(resources={node_resource(i): 0.01}).remote() for i in (0, 1))
    (n0, _), (n1, _) = ray.get([a0.node.remote(), a1.node.remote()], timeout=60)
    assert (n0, n1) == (cluster.head.node_id, cluster.worker.node_id)
    for actor in (a0, a1):
        ray.kill(actor)


def test_a_run_over_both_nodes_stores_the_same_archive_as_a_local_run(cluster, local_run, tmp_path, capsys):
    local, _ = local_run
    spread, status = run(tmp_path / "run", "--executor", "ray", "--ray-address", cluster.address)
    assert status == "finished"
    assert fingerprint(spread) == fingerprint(local)
    nodes = {r.validation.node for r in spread}
    assert len(nodes) == 2, nodes  # both nodes scored
    assert all(r.validation.node for r in local)  # the local executor names its host too
    capsys.readouterr()
    assert evolve("archive", str(tmp_path / "run"), "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed and all(p["node"].startswith("127.0.0.1:") for p in listed)
    assert evolve("archive", str(tmp_path / "run"), "show", str(listed[0]["id"]), "--no-formula") == 0
    assert f"scored on node {listed[0]['node']}" in capsys.readouterr().out


@pytest.fixture(scope="module")
def ray_scorer(cluster):
    """One Ray-backed Scorer (an actor and warm pool per node) for the tests that only score."""
    from evolve.config import ScorerConfig
    from evolve.scoring.factory import open_scorer

    with open_scorer(ScorerConfig(workers=2, executor="ray", timeout_s=60)) as scorer:
        yield scorer


def test_the_selection_refits_candidates_in_a_node_sandbox_not_in_the_driver(ray_scorer):
    from evolve.scoring.scorer import build_jobs
    from evolve.tasks import load_task

    task = load_task(TASK)
    jobs, _ = build_jobs(task, "validation")
    report = ray_scorer.run(law("np.array([float(os.getuid()), float(os.getpid())])"), jobs, task)
    assert report.status == "ok", report.message
    uids = {values[0] for values in report.params.values()}
    pids = {values[1] for values in report.params.values()}
    assert 0.0 not in uids and os.getuid() not in uids  # the sandbox's slot uid, not the driver's
    assert os.getpid() not in pids


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_a_law_whose_errors_overflow_scores_over_ray_as_it_does_here(ray_scorer):
    from evolve.config import ScorerConfig
    from evolve.scoring.scorer import Scorer
    from evolve.tasks import load_task

    task = load_task(TASK)
    code = law("np.array([1.0])", predict="np.full(len(X), 1e200)")  # our own code: in-process is fine
    with Scorer(ScorerConfig(workers=1, isolate=False)) as here:
        expected = here.score(code, task)
    got = ray_scorer.score(code, task)
    assert str(expected.status) == "ok" and expected.metrics.r2 == float("-inf")
    assert (got.status, got.metrics) == (expected.status, expected.metrics)


def test_a_node_that_cannot_isolate_is_refused_unless_allowed(cluster):
    from evolve.config import ConfigError, ScorerConfig
    from evolve.scoring.ray_executor import NoLiveNodes, RayExecutor, weak
    from evolve.tasks import load_task

    config = ScorerConfig(workers=2, executor="ray", timeout_s=60)
    with pytest.raises(NoLiveNodes) as refused:
        RayExecutor(config, sandbox_plan="basic")
    message = str(refused.value)
    assert isinstance(refused.value, ConfigError)  # the CLI prints it as one line
    assert "\n" not in message and "cannot isolate" in message and "basic:" in message
    assert "--allow-weak-sandbox" in message
    weak_ok = RayExecutor(ScorerConfig(workers=2, executor="ray", timeout_s=60, allow_weak_sandbox=True),
                          sandbox_plan="basic")
    try:
        task = load_task(TASK)
        evaluation = weak_ok.score((task.path / "seeds" / "baseline.py").read_text(), task)
        assert evaluation.ok and len(weak_ok.actors) == 2
    finally:
        weak_ok.close()
    assert not weak("root: netns,chroot | userns: netns,chroot")
    assert weak("root: netns | basic: rlimits") and weak("") and weak("none (in-process)") and weak("netns")


def test_driver_rejects_a_result_that_breaks_the_checks():
    import numpy as np

    from evolve.scoring.executor import check_evaluation_dict, check_run_report
    from evolve.scoring.in_sandbox import RunReport

    good = {"status": "ok", "split": "validation", "n_params": 2, "params": {"a": [1.0]},
            "metrics": {"r2": 0.5, "nmse": 0.1, "nmae": 0.1, "combined_score": 0.5, "r2_per_target": [0.5]}}
    check_evaluation_dict(good, "validation")
    overflow = dict(good, metrics=dict(good["metrics"], r2=float("-inf"), nmse=float("inf"), combined_score=0.0,
                                       r2_per_target=[float("-inf")]))
    check_evaluation_dict(overflow, "validation")  # what the scorer gives a law predicting 1e200
    for bad in (dict(good, status="fine"), dict(good, split="test"),
                dict(good, metrics=dict(good["metrics"], r2=float("nan"))),
                dict(good, metrics=dict(good["metrics"], r2=1.5)),
                dict(good, metrics=dict(good["metrics"], nmse=-0.1)),
                dict(good, metrics=dict(good["metrics"], combined_score=2.0)),
                dict(good, params={"a": [float("inf")]}), dict(good, n_params=-1), dict(good, n_params=True)):
        with pytest.raises(ValueError):
            check_evaluation_dict(bad, "validation")
    check_run_report(RunReport("ok", predictions={"g": np.ones(3)}, params={"g": [1.0]}), ["g"])
    check_run_report(RunReport("timeout", "slow"), ["g"])
    for bad in (RunReport("ok", predictions={"h": np.ones(3)}), {"status": "ok"},
                RunReport("ok", predictions={"g": np.array(["x"])})):
        with pytest.raises(ValueError):
            check_run_report(bad, ["g"])


def cell_processes(run_dir) -> list[int]:
    """Pids of processes whose command line names run_dir (a cell's `evolve run`)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if str(run_dir).encode() in f.read():
                    pids.append(int(entry))
        except (OSError, ValueError):
            continue
    return pids


def test_a_killed_sweep_resumes_on_ray_and_the_same_command_here_skips(cluster, tmp_path):
    import subprocess
    import sys

    from click.testing import CliRunner

    from evolve.cli.sweep_cmd import cells, run_sweep, run_status, sweep_command

    grid = cells([TASK], ["0", "1"], [], [])
    sweep_dir = tmp_path / "sweep"
    first = sweep_dir / grid[0]["name"]
    extra = ["--proposer", "offline", "--workers", "1", "--top-k-test", "1"]  # small runs: the sweep is the point
    argv = ["sweep", "--tasks", TASK, "--seeds", "0,1", "--iterations", "6", "--dir", str(sweep_dir), *extra]
    sweep = subprocess.Popen([sys.executable, "-m", "evolve", *argv], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not (run_status(first) or {}).get("iterations"):
            time.sleep(0.1)  # until the first cell has evolved a batch (its state is saved)
        assert (run_status(first) or {}).get("status") == "running"
    finally:
        sweep.kill()  # SIGKILL: no handler runs in the sweep
        sweep.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and cell_processes(first):
        time.sleep(0.2)
    assert cell_processes(first) == []  # the cell's run did not outlive its sweep
    assert run_status(first)["status"] == "interrupted"
    rows = run_sweep(grid, sweep_dir, 6, extra, "ray", None, 1)  # the same grid, now on Ray
    assert [(r["status"], r["action"]) for r in rows] == [("finished", "resumed"), ("finished", "started")], rows
    assert all(r["best_validation_r2"] is not None for r in rows)
    result = CliRunner().invoke(sweep_command, [*argv, "--parallel", "2"])  # and here, without Ray
    assert result.exit_code == 0, result.output
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert [(r["status"], r["action"]) for r in summary] == [("finished", "skipped")] * 2
    assert [r["best_validation_r2"] for r in summary] == [r["best_validation_r2"] for r in rows]
    assert "val R²" in result.output and "skipped" in result.output


def test_killing_a_node_mid_run_loses_nothing(cluster, local_run, tmp_path):
    """Last: it takes the module cluster's worker node down."""
    local, _ = local_run
    from evolve.scoring import ray_executor

    seen = {"calls": 0, "executor": None}
    original = ray_executor.RayExecutor.score

    def score(self, *a, **k):  # kill the worker node once the run is under way
        seen["calls"] += 1
        seen["executor"] = self
        if seen["calls"] == 5:  # seeds are calls 1-2, the first batch 3-4: this starts the second
            cluster.kill_worker()
        return original(self, *a, **k)

    ray_executor.RayExecutor.score = score
    try:
        t0 = time.monotonic()
        spread, status = run(tmp_path / "run", "--executor", "ray")
    finally:
        ray_executor.RayExecutor.score = original
    assert status == "finished"
    assert fingerprint(spread) == fingerprint(local)
    assert time.monotonic() - t0 < 120
    executor = seen["executor"]
    assert executor.retries >= 1 and len(executor.lost) == 1  # the dead node's call went to the survivor
    assert not any(n["Alive"] for n in ray.nodes() if n["NodeID"] == cluster.worker.node_id)

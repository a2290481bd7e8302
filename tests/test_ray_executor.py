"""Scoring on a real 2-node loopback Ray cluster: same archive as a local run, node recorded,
a node killed mid-run loses nothing, sweeps on Ray and locally. One cluster for the module."""
import threading
import time

import pytest

ray = pytest.importorskip("ray")

from tests.ray_cluster import FAST_DEATH, loopback_cluster, unavailable_reason  # noqa: E402

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
    pytest.mark.timeout(240),
]

TASK = "parallel_scaling_law"
ITERATIONS = 4


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


def test_a_run_over_both_nodes_stores_the_same_archive_as_a_local_run(cluster, local_run, tmp_path, capsys):
    import json

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


def test_driver_rejects_a_result_that_breaks_the_checks():
    from evolve.scoring.executor import check_evaluation_dict

    good = {"status": "ok", "split": "validation", "n_params": 2, "params": {"a": [1.0]},
            "metrics": {"r2": 0.5, "nmse": 0.1, "nmae": 0.1, "combined_score": 0.5, "r2_per_target": [0.5]}}
    check_evaluation_dict(good, "validation")
    for bad in (dict(good, status="fine"), dict(good, split="test"),
                dict(good, metrics=dict(good["metrics"], r2=float("nan"))),
                dict(good, params={"a": [float("inf")]}), dict(good, n_params=-1)):
        with pytest.raises(ValueError):
            check_evaluation_dict(bad, "validation")


def test_sweep_2x2_on_ray_then_again_skips_everything(cluster, tmp_path):
    from evolve.cli.sweep_cmd import cells, run_sweep

    grid = cells([TASK, "sft_scaling_law"], ["0", "1"], [], [])
    rows = run_sweep(grid, tmp_path / "sweep", 3, ["--proposer", "offline"], "ray", None, 1)
    assert [r["status"] for r in rows] == ["finished"] * 4, rows
    assert all(r["best_validation_r2"] is not None and r["action"] == "started" for r in rows)
    again = run_sweep(grid, tmp_path / "sweep", 3, ["--proposer", "offline"], "ray", None, 1)
    assert [r["action"] for r in again] == ["skipped"] * 4
    assert [r["best_validation_r2"] for r in again] == [r["best_validation_r2"] for r in rows]


def test_sweep_locally_matches_ray_and_resumes_an_interrupted_run(tmp_path, capsys):
    from click.testing import CliRunner

    from evolve.cli.sweep_cmd import cells, run_sweep, sweep_command

    grid = cells([TASK], ["0", "1"], [], [])
    rows = run_sweep(grid, tmp_path / "sweep", 3, ["--proposer", "offline"], "local", None, 2)
    assert [r["status"] for r in rows] == ["finished"] * 2
    # an interrupted run: its status says so; the sweep resumes it rather than starting over
    from evolve.store.database import Archive

    with Archive.open(tmp_path / "sweep" / grid[0]["name"] / "archive.db") as archive:
        archive.set_meta("status", "interrupted")
    result = CliRunner().invoke(sweep_command, ["--tasks", TASK, "--seeds", "0,1", "--iterations", "3",
                                                "--dir", str(tmp_path / "sweep"), "--proposer", "offline"])
    assert result.exit_code == 0, result.output
    assert "resumed" in result.output and "skipped" in result.output and "val R²" in result.output


def test_killing_a_node_mid_run_loses_nothing(cluster, local_run, tmp_path):
    """Last: it takes the module cluster's worker node down."""
    local, _ = local_run
    from evolve.scoring import ray_executor

    calls = {"n": 0}
    original = ray_executor.RayExecutor.score

    def score(self, *a, **k):  # kill the worker node once a few evaluations are in
        calls["n"] += 1
        if calls["n"] == 6:
            threading.Thread(target=cluster.kill_worker, daemon=True).start()
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

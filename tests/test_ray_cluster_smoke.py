"""The loopback-only namespace the Ray cluster lives in (tests/ray_cluster.py), without Ray.

The cluster itself (listeners on 127.0.0.1 only, an actor per node, a node killed) is
exercised in tests/test_ray_executor.py on the one cluster that module shares: starting
a second cluster here would cost seconds of the CI budget and prove nothing more. What
this file checks is the guarantee underneath: inside `loopback_netns` the thread sees
only `lo`, and leaves the namespace again afterwards.
"""
import os

import pytest

from tests.ray_cluster import loopback_netns, unavailable_reason

TASK = "parallel_scaling_law"

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
    pytest.mark.timeout(60),
]


def test_the_namespace_has_only_loopback_and_the_thread_leaves_it():
    import subprocess

    outside = os.readlink("/proc/thread-self/ns/net")
    with loopback_netns():
        inside = os.readlink("/proc/thread-self/ns/net")
        assert inside != outside
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
        names = [line.split(":")[1].strip() for line in links.splitlines() if line.strip()]
        assert names == ["lo"], names
        assert "state UNKNOWN" in links or "UP" in links  # lo is up
        routes = subprocess.run(["ip", "-o", "route", "show"], capture_output=True, text=True, check=True).stdout
        assert routes.strip() == ""  # no default route: nothing can reach another host
    assert os.readlink("/proc/thread-self/ns/net") == outside


def test_an_unreachable_cluster_is_one_line_and_leaves_no_run_behind(tmp_path, capsys):
    """Inside a fresh loopback-only namespace nothing listens: the address refuses at once,
    where ray.init would retry for minutes."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray driver is already connected in this process")
    from evolve.cli.main import main

    with loopback_netns():
        code = main(["run", TASK, "--proposer", "offline", "--iterations", "1", "--executor", "ray",
                     "--ray-address", "127.0.0.1:1", "--run-dir", str(tmp_path / "run"), "--quiet"])
        sweep = main(["sweep", "--tasks", TASK, "--dir", str(tmp_path / "sweep"), "--executor", "ray",
                      "--ray-address", "127.0.0.1:1", "--proposer", "offline"])
    err = capsys.readouterr().err
    assert code != 0 and sweep != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 2 and all("cannot reach the Ray cluster at 127.0.0.1:1" in line for line in lines), err
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()  # a failed start leaves nothing

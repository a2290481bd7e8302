"""A real 2-node Ray cluster on loopback: an actor per node, a node dies, the other answers."""
import os
import time

import pytest

ray = pytest.importorskip("ray")

from tests.ray_cluster import NODE_RESOURCES, ray_cluster, unavailable_reason  # noqa: E402,F401

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
    pytest.mark.timeout(180),
]


@ray.remote(num_cpus=0, max_restarts=0)
class Where:
    def node(self):
        return ray.get_runtime_context().get_node_id(), os.getpid()

    def sleep(self, s):
        time.sleep(s)
        return s


def _on(resource):
    return Where.options(resources={resource: 0.01})


def test_an_actor_per_node_and_the_survivor_answers_after_a_node_dies(ray_cluster):
    # Everything Ray listens on is 127.0.0.1, and nothing of it outside the namespace.
    from tests.ray_cluster import listeners

    inside = [line for line in listeners().splitlines() if line.strip()]
    assert inside, "ray should be listening inside its namespace"
    for line in inside:
        local = line.split()[4]
        assert local.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]"), line
    assert ray_cluster.outside_ray_listeners() == []
    assert len(ray_cluster.pids()) >= 4  # gcs, 2 raylets, workers: all in the namespace

    a0, a1 = _on(NODE_RESOURCES[0]).remote(), _on(NODE_RESOURCES[1]).remote()
    (n0, _), (n1, _) = ray.get([a0.node.remote(), a1.node.remote()], timeout=60)
    assert n0 == ray_cluster.head.node_id and n1 == ray_cluster.worker.node_id

    pending = a1.sleep.remote(30)
    ray_cluster.kill_worker()
    t0 = time.monotonic()
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(pending, timeout=60)
    assert time.monotonic() - t0 < 30

    assert ray.get(a0.node.remote(), timeout=30)[0] == n0
    again = _on(NODE_RESOURCES[0]).remote()
    assert ray.get(again.sleep.remote(0), timeout=30) == 0

"""Score on a Ray cluster: one actor per node wraps that node's own warm sandbox pool.

The driver keeps the loop and the single SQLite archive; this module only
dispatches `score(code, task, split)` calls. Each alive node gets one actor,
pinned with NodeAffinitySchedulingStrategy (hard), with `max_concurrency` equal
to the node's CPUs; inside it a local `Scorer(executor="local", workers=cpus)`
does exactly what a local run does. The node returns `Evaluation.to_dict()`
plus its node name; the driver re-checks it (`check_evaluation_dict`) and
rebuilds the Evaluation (status vocabulary checked again in __post_init__).

Node loss: a call that fails with RayActorError / ActorUnavailableError marks the
actor dead and is resubmitted to a live one (bounded attempts and a deadline),
so no evaluation is lost and the run goes on. Tasks are shipped once per
Task object with ray.put.
"""
from __future__ import annotations

import dataclasses
import threading
import time

from evolve.config import ScorerConfig
from evolve.scoring.executor import check_evaluation_dict

MAX_ATTEMPTS = 4
RETRY_DEADLINE_S = 300.0


class NoLiveNodes(RuntimeError):
    pass


def _actor_class():
    import ray

    @ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)
    class NodeScorer:
        """One node's warm pool (a local Scorer) behind a Ray actor."""

        def __init__(self, config: dict, node_name: str):
            import socket

            from evolve.scoring.scorer import Scorer

            self.node = node_name or socket.gethostname()
            self.scorer = Scorer(ScorerConfig(**config))
            self.scorer.node_name = self.node
            sandbox = self.scorer.sandbox
            self.layers = getattr(sandbox, "layers", "none (in-process)") if sandbox is not None else "none (in-process)"

        def info(self) -> dict:
            return {"node": self.node, "layers": self.layers, "workers": self.scorer.config.workers}

        def score(self, code: str, task, split: str) -> dict:
            from evolve.scoring.executor import check_evaluation_dict

            d = self.scorer.score(code, task, split).to_dict()
            d["node"] = self.node
            check_evaluation_dict(d, split)  # the node's own check before it sends
            return d

        def close(self) -> None:
            self.scorer.close()

    return NodeScorer


def weak(layers: str) -> bool:
    """A pool that applied no kernel isolation (no root, no user namespaces)."""
    text = layers.lower()
    return "none" in text or "basic" in text or text.strip() == ""


class RayExecutor:
    def __init__(self, config: ScorerConfig):
        import ray

        self.ray = ray
        self.config = config
        if not ray.is_initialized():
            ray.init(address=config.ray_address or "auto", log_to_driver=False, configure_logging=False)
            self.owns_ray = True
        else:
            self.owns_ray = False
        local = dataclasses.replace(config, executor="local", ray_address=None)
        self.local_fields = {f.name: getattr(local, f.name) for f in dataclasses.fields(local)}
        self.lock = threading.Lock()
        self.actors: dict[str, object] = {}  # node id -> actor
        self.names: dict[str, str] = {}
        self.load: dict[str, int] = {}
        self.capacity: dict[str, int] = {}
        self.tasks: dict[int, tuple[object, object]] = {}
        self.layers: dict[str, str] = {}
        self._start_actors()

    def _start_actors(self) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        NodeScorer = _actor_class()
        pending = {}
        for n in self.ray.nodes():
            if not n.get("Alive") or n["NodeID"] in self.actors:
                continue
            cpus = int(n.get("Resources", {}).get("CPU", 0))
            if cpus < 1:
                continue
            fields = dict(self.local_fields, workers=cpus)  # the node's pool is sized to its CPUs
            name = n.get("NodeManagerAddress", "") + ":" + n["NodeID"][:8]
            actor = NodeScorer.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False),
                max_concurrency=cpus + 1,
            ).remote(fields, name)
            pending[n["NodeID"]] = (actor, actor.info.remote(), cpus, name)
        refused = []
        for node_id, (actor, info_ref, cpus, name) in pending.items():
            try:
                info = self.ray.get(info_ref, timeout=120)
            except Exception as e:  # node died while starting: skip it
                refused.append(f"{name}: {e.__class__.__name__}")
                continue
            if self.config.isolate and weak(info["layers"]) and not self.config.allow_weak_sandbox:
                refused.append(f"{name}: sandbox cannot isolate ({info['layers']})")
                self.ray.kill(actor)
                continue
            self.actors[node_id], self.names[node_id] = actor, info["node"]
            self.layers[node_id] = info["layers"]
            self.load[node_id], self.capacity[node_id] = 0, cpus
        if not self.actors:
            raise NoLiveNodes("no Ray node can score programs: " + "; ".join(refused or ["no node with a CPU"]))

    def task_ref(self, task):
        key = id(task)
        with self.lock:
            if key not in self.tasks:
                self.tasks[key] = (task, self.ray.put(task))  # keep task alive so id() stays unique
            return self.tasks[key][1]

    def _pick(self) -> str:
        with self.lock:
            if not self.actors:
                raise NoLiveNodes("every Ray node scoring this run is gone")
            node_id = min(self.actors, key=lambda k: (self.load[k] / self.capacity[k], k))
            self.load[node_id] += 1
            return node_id

    def _drop(self, node_id: str) -> None:
        with self.lock:
            self.actors.pop(node_id, None)

    def score(self, program_text: str, task, split: str = "validation"):
        from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

        from evolve.scoring.scorer import Evaluation

        ref = self.task_ref(task)
        deadline = time.monotonic() + RETRY_DEADLINE_S + self.config.timeout_s
        last = None
        for _attempt in range(MAX_ATTEMPTS):
            if time.monotonic() > deadline:
                break
            node_id = self._pick()
            actor = self.actors.get(node_id)
            try:
                if actor is None:
                    continue
                d = self.ray.get(actor.score.remote(program_text, ref, split),
                                 timeout=self.config.timeout_s * 4 + 60)
            except (RayActorError, ActorUnavailableError, GetTimeoutError) as e:
                last = e
                self._drop(node_id)
                if not self.actors:
                    self._start_actors_quietly()
                continue
            finally:
                with self.lock:
                    self.load[node_id] -= 1
            check_evaluation_dict(d, split)  # again on the driver
            return Evaluation.from_dict(d)
        raise NoLiveNodes(f"evaluation failed on {MAX_ATTEMPTS} attempts: {last!r}")

    def _start_actors_quietly(self) -> None:
        try:
            self._start_actors()
        except NoLiveNodes:
            pass

    def close(self) -> None:
        for actor in list(self.actors.values()):
            try:
                self.ray.get(actor.close.remote(), timeout=30)
                self.ray.kill(actor)
            except Exception:
                pass
        self.actors.clear()
        if self.owns_ray:
            self.ray.shutdown()

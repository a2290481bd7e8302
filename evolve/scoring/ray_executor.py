"""Score on a Ray cluster: one actor per node wraps that node's own warm sandbox pool.

The driver keeps the loop and the single SQLite archive; this module only
dispatches `score(code, task, split)` and `run(code, jobs, task)` calls (the
second is the selection's re-fit of finalists: it runs candidate code too, so it
goes to a node's sandbox like scoring, never into the driver). Each alive node
gets one actor, pinned with NodeAffinitySchedulingStrategy (hard), with
`max_concurrency` above the node's CPUs; inside it a local
`Scorer(executor="local", workers=cpus)` does exactly what a local run does.

Checks: a node whose pool did not get the kernel isolation plans ("root" or
"userns" in every worker) is refused unless `allow_weak_sandbox`; the node checks
each result before it sends it, the driver checks it again
(`check_evaluation_dict`) and rebuilds the Evaluation (status vocabulary checked
again in __post_init__). A result that fails a check is asked of another node.

Node loss: a call that fails with RayActorError / ActorUnavailableError (or gets
no answer in time) marks that node's actor dead and is resubmitted to a live one
(bounded attempts and a deadline), so no evaluation is lost and the run goes on;
when every node is gone the executor looks for alive nodes once more before it
gives up. Tasks are shipped once per Task object with ray.put.
"""
from __future__ import annotations

import dataclasses
import socket
import sys
import threading
import time

from evolve.config import ConfigError, ScorerConfig
from evolve.scoring.executor import check_evaluation_dict, check_run_report

MAX_ATTEMPTS = 4
RETRY_DEADLINE_S = 300.0
START_TIMEOUT_S = 120.0
STRONG_PLANS = ("root", "userns")  # the sandbox plans with kernel isolation (namespaces, chroot)


class NoLiveNodes(ConfigError):
    """No node can score (none alive, or every one refused): one line for the CLI."""


class BadResult(NoLiveNodes):
    """A node sent a result that fails the checks (on the node or on the driver)."""


def _actor_class():
    import ray

    @ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)
    class NodeScorer:
        """One node's warm pool (a local Scorer) behind a Ray actor."""

        def __init__(self, config: dict, node_name: str, plan: str = "auto"):
            import socket

            from evolve.scoring.scorer import Scorer

            self.node = node_name or socket.gethostname()
            scorer_config = ScorerConfig(**config)
            if plan != "auto" and scorer_config.isolate:  # a forced plan (tests of the refusal)
                from evolve.scoring.pool import Sandbox

                self.scorer = Scorer(dataclasses.replace(scorer_config, isolate=False))
                self.scorer.config = scorer_config
                self.scorer.sandbox = Sandbox(scorer_config, plan=plan)
            else:
                self.scorer = Scorer(scorer_config)
            self.scorer.node_name = self.node
            sandbox = self.scorer.sandbox
            self.layers = getattr(sandbox, "layers", "") if sandbox is not None else "none (in-process)"

        def info(self) -> dict:
            return {"node": self.node, "layers": self.layers, "workers": self.scorer.config.workers}

        def score(self, code: str, task, split: str) -> dict:
            d = self.scorer.score(code, task, split).to_dict()
            d["node"] = self.node
            check_evaluation_dict(d, split)  # the node's own check before it sends
            return d

        def run(self, code: str, jobs: list, task, timeout_s):
            report = self.scorer.run(code, jobs, task, timeout_s)
            check_run_report(report, [job.group for job in jobs])
            return report

        def close(self) -> None:
            self.scorer.close()

    return NodeScorer


def weak(layers: str) -> bool:
    """A pool that did not apply kernel isolation in every worker. `layers` is the pool's
    "plan: layer,layer | plan: ..." text; anything else (no sandbox, an unknown shape)
    counts as weak, so a node is only accepted on evidence."""
    segments = [s.strip() for s in (layers or "").split("|") if s.strip()]
    if not segments:
        return True
    return any(s.split(":", 1)[0].strip() not in STRONG_PLANS or ":" not in s for s in segments)


class RayExecutor:
    def __init__(self, config: ScorerConfig, sandbox_plan: str = "auto"):
        try:
            import ray
        except ImportError as exc:
            raise ConfigError('executor "ray" needs Ray: pip install "evolve-laws[ray]"') from exc

        self.ray = ray
        self.config = config
        self.sandbox_plan = sandbox_plan
        if not ray.is_initialized():
            unreachable = why_unreachable(config.ray_address)
            if unreachable:  # ray.init would retry for minutes
                raise NoLiveNodes(f"cannot reach the Ray cluster at {config.ray_address}: {unreachable}")
            try:
                ray.init(address=config.ray_address or "auto", log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise NoLiveNodes(f"cannot reach the Ray cluster at {config.ray_address or 'RAY_ADDRESS/auto'}: "
                                  f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from exc
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
        self.lost: list[str] = []  # names of nodes dropped mid-run
        self.retries = 0  # calls resubmitted to another node
        try:
            self._start_actors()
        except BaseException:
            self.close()
            raise
        self._note_capacity()

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
            ).remote(fields, name, self.sandbox_plan)
            pending[n["NodeID"]] = (actor, actor.info.remote(), cpus, name)
        refused = []
        for node_id, (actor, info_ref, cpus, name) in pending.items():
            try:
                info = self.ray.get(info_ref, timeout=START_TIMEOUT_S)
            except Exception as e:  # node died or its pool failed while starting: skip it
                refused.append(f"{name}: {e.__class__.__name__}: {_first_line(e)}")
                self._kill(actor)
                continue
            if self.config.isolate and weak(info["layers"]) and not self.config.allow_weak_sandbox:
                refused.append(f"{name}: sandbox cannot isolate ({info['layers'] or 'no layers reported'}); "
                               "allow it only for trusted proposers with --allow-weak-sandbox")
                self._kill(actor)
                continue
            with self.lock:
                self.actors[node_id], self.names[node_id] = actor, info["node"]
                self.layers[node_id] = info["layers"]
                self.load[node_id], self.capacity[node_id] = 0, cpus
        if not self.actors:
            raise NoLiveNodes("no Ray node can score programs: " + "; ".join(refused or ["no alive node with a CPU"]))

    def _kill(self, actor) -> None:
        try:
            self.ray.kill(actor)
        except Exception:  # already gone
            pass

    def _note_capacity(self) -> None:
        """One line when the run keeps fewer programs in flight than the cluster has CPUs:
        `workers` is the driver's batch (and the same seed's archive depends on it)."""
        cpus = sum(self.capacity[k] for k in self.actors)
        if self.config.workers < cpus:
            print(f"evolve: {len(self.actors)} Ray node(s) with {cpus} CPUs, but workers = {self.config.workers} "
                  f"programs in flight; pass --workers {cpus} to use them all", file=sys.stderr)

    @property
    def cpus(self) -> int:
        with self.lock:
            return sum(self.capacity[k] for k in self.actors)

    def task_ref(self, task):
        key = id(task)
        with self.lock:
            if key not in self.tasks:
                self.tasks[key] = (task, self.ray.put(task))  # keep task alive so id() stays unique
            return self.tasks[key][1]

    def _pick(self, avoid: set[str]) -> str:
        """The least-loaded live node, preferring ones this call has not failed on."""
        with self.lock:
            if not self.actors:
                raise NoLiveNodes("every Ray node scoring this run is gone; resume the run when the cluster is back")
            choices = [k for k in self.actors if k not in avoid] or list(self.actors)
            node_id = min(choices, key=lambda k: (self.load[k] / self.capacity[k], k))
            self.load[node_id] += 1
            return node_id

    def _drop(self, node_id: str) -> None:
        with self.lock:
            if self.actors.pop(node_id, None) is not None:
                self.lost.append(self.names.get(node_id, node_id))

    def _call(self, method: str, args: tuple, check):
        """Call `method` on a node's actor and `check` its answer on the driver; a lost node
        or a result failing a check is retried on another node."""
        from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

        deadline = time.monotonic() + RETRY_DEADLINE_S + self.config.timeout_s
        last, tried = None, set()
        for attempt in range(MAX_ATTEMPTS):
            if attempt and time.monotonic() > deadline:
                break
            if attempt:
                with self.lock:
                    self.retries += 1
            node_id = self._pick(tried)
            tried.add(node_id)
            try:
                actor = self.actors.get(node_id)
                if actor is None:  # dropped by another thread since the pick
                    continue
                answer = self.ray.get(getattr(actor, method).remote(*args), timeout=self.config.timeout_s * 4 + 60)
                return check(answer)
            except (RayActorError, ActorUnavailableError, GetTimeoutError) as e:
                last = e
                self._drop(node_id)
                if not self.actors:
                    self._start_actors_quietly()
            except (RayTaskError, BadResult, ValueError, KeyError, TypeError) as e:
                last = e  # the node's or the driver's check refused the result: ask another node
            finally:
                with self.lock:
                    self.load[node_id] -= 1
        if isinstance(last, (RayActorError, ActorUnavailableError, GetTimeoutError)) or last is None:
            raise NoLiveNodes(f"evaluation failed on {MAX_ATTEMPTS} attempts as Ray nodes went away "
                              f"({type(last).__name__}); resume the run when the cluster is back")
        raise BadResult(f"no Ray node returned a usable result (a failed check or an error on the node): {_first_line(last)}")

    def score(self, program_text: str, task, split: str = "validation"):
        from evolve.scoring.scorer import Evaluation

        def check(d: dict):
            check_evaluation_dict(d, split)  # again on the driver
            return Evaluation.from_dict(d)

        return self._call("score", (program_text, self.task_ref(task), split), check)

    def run(self, program_text: str, jobs: list, task, timeout_s: float | None = None):
        """The sandbox's RunReport for `jobs`, from a node (the selection's re-fits)."""
        groups = [job.group for job in jobs]

        def check(report):
            check_run_report(report, groups)
            return report

        return self._call("run", (program_text, jobs, self.task_ref(task), timeout_s), check)

    def _start_actors_quietly(self) -> None:
        try:
            self._start_actors()
        except NoLiveNodes:
            pass

    def close(self, abort: bool = False) -> None:
        """Close each node's pool politely, then end its actor; `abort` (a Ctrl-C) ends them
        at once, so no one waits for evaluations still running there."""
        for actor in list(self.actors.values()):
            if not abort:
                try:
                    self.ray.get(actor.close.remote(), timeout=30)
                except Exception:
                    pass
            self._kill(actor)
        self.actors.clear()
        if self.owns_ray:
            self.ray.shutdown()


def why_unreachable(address: str | None, timeout_s: float = 5.0) -> str | None:
    """Why HOST:PORT (or ray://HOST:PORT) takes no TCP connection, or None; other
    addresses ("auto", none: RAY_ADDRESS or a local Ray) are left to Ray."""
    text = (address or "").strip().removeprefix("ray://")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1][:300] if text else type(exc).__name__

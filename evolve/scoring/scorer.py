"""Score a program on a task split: build the jobs, run them in the sandbox, compute metrics.

The scorer is the only place that holds the labels of the rows being scored. It sends a
candidate only the rows it may fit on and the features of the rows to predict, and
computes every metric itself from the returned arrays (see metrics.py).
"""

from __future__ import annotations

import dataclasses
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from evolve.config import ScorerConfig
from evolve.metrics import Metrics, compute_metrics, failed_metrics, group_scores, mean_over_folds
from evolve.scoring.in_sandbox import MAX_PARAMS_REPORTED, GroupJob, RunReport, run_jobs
from evolve.status import EVALUATION_FAILURES, Status
from evolve.tasks import Rows, Task

FAILURE_STATUSES = EVALUATION_FAILURES  # every status an evaluation can fail with


@dataclass(frozen=True)
class Evaluation:
    """The outcome of scoring one program on one split; a failure is a status, not an exception."""

    status: str
    split: str
    metrics: Metrics
    message: str = ""
    params: dict[str, list[float] | None] = field(default_factory=dict)
    n_params: int | None = None
    seconds: float = 0.0
    predictions: np.ndarray | None = field(default=None, repr=False, compare=False)
    node: str = ""  # where it was scored ("" in archives older than the Ray executor)
    by_group: dict[str, dict] = field(default_factory=dict)  # test only: per group rows, relative errors, own R² (metrics.group_scores)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))  # one vocabulary: an unknown status is a bug

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @property
    def rank_r2(self) -> float:
        """The R² used for ranking: −1 for any failure (over-cap laws included)."""
        return self.metrics.r2 if self.ok else -1.0

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "split": self.split,
            "message": self.message,
            "metrics": self.metrics.to_dict(),
            "params": self.params,
            "n_params": self.n_params,
            "seconds": self.seconds,
            "node": self.node,
            **({"by_group": self.by_group} if self.by_group else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Evaluation":
        return cls(
            status=d["status"],
            split=d["split"],
            metrics=Metrics.from_dict(d["metrics"]),
            message=d.get("message", ""),
            params=d.get("params", {}),
            n_params=d.get("n_params"),
            seconds=float(d.get("seconds", 0.0)),
            node=str(d.get("node", "")),
            by_group=d.get("by_group") if isinstance(d.get("by_group"), dict) else {},
        )


def build_jobs(task: Task, split: str) -> tuple[list[GroupJob], np.ndarray]:
    """The jobs and labels of a split's first (for test and train, only) fold."""
    return group_jobs(*task.folds(split)[0])


def group_jobs(fit_rows: Rows, score_rows: Rows) -> tuple[list[GroupJob], np.ndarray]:
    """One job per group in sorted order, and the labels of the scored rows in the same order.

    Groups present in the scored rows but absent from the fit rows cannot be fitted: they
    get an empty fit set, and the program decides what to do (most will fail).
    """
    jobs, truth = [], []
    for group in score_rows.group_names():
        fit = fit_rows.groups == group
        scored = score_rows.groups == group
        jobs.append(GroupJob(group, fit_rows.X[fit], fit_rows.y[fit], score_rows.X[scored]))
        truth.append(score_rows.y[scored])
    return jobs, np.concatenate(truth)


def count_params(params: dict[str, list[float] | None], counted: dict[str, int] | None = None) -> int | None:
    """Fitted parameters per group (the largest group's count: its numbers plus the weight
    of its strings, see params_codec); None when they cannot be counted."""
    counted = counted or {}
    counts = [max(len(p), counted.get(g, 0)) for g, p in params.items() if p is not None]
    if not counts or len(counts) < len(params):
        return None
    return max(counts)


def evaluation_from_report(task: Task, split: str, report: RunReport, truth: np.ndarray, seconds: float) -> Evaluation:
    """Turn what the sandbox returned into metrics, in the parent."""
    n_targets = len(task.targets)
    if report.status != Status.OK:
        return Evaluation(report.status, split, failed_metrics(n_targets), report.message, seconds=seconds)
    groups = sorted(report.predictions)
    predictions = np.concatenate([report.predictions[g] for g in groups])
    try:
        metrics = compute_metrics(predictions, truth)
    except ValueError as exc:
        return Evaluation(Status.WRONG_SHAPE, split, failed_metrics(n_targets), str(exc), seconds=seconds)
    n_params = count_params(report.params, report.counted)
    bad = sorted(g for g, p in report.params.items() if p is not None and not all(math.isfinite(v) for v in p))
    if bad:
        return Evaluation(Status.NAN, split, failed_metrics(n_targets),
                          f"in group {bad[0]!r}: fitted parameters contain NaN or infinity", seconds=seconds)
    status, message, params = Status.OK, "", report.params
    if task.param_cap is not None and n_params is None:
        status, message = Status.OVER_CAP, f"the fitted parameters cannot be counted (not numbers, or over {MAX_PARAMS_REPORTED}); the task allows {task.param_cap}"
    elif task.param_cap is not None and n_params > task.param_cap:
        status, message = Status.OVER_CAP, f"{n_params} fitted parameters per group; the task allows {task.param_cap}"
    if status == Status.OVER_CAP:  # refused: its numbers are not kept (9,999 per group made 8.5 MB archive rows)
        params = {g: None for g in report.params}
    by_group = group_scores(report.predictions, truth) if split == "test" and status == Status.OK else {}
    return Evaluation(status, split, metrics, message, params, n_params, seconds, predictions, by_group=by_group)


class Scorer:
    """Scores programs in warm, isolated worker processes; several at once.

    Use as a context manager so the worker pool is shut down. With
    `ScorerConfig(isolate=False)` programs run in this process (benchmarks only).
    """

    def __init__(self, config: ScorerConfig = ScorerConfig(), remote=None):
        """`remote` scores elsewhere (a Ray executor, see scoring/factory.py); this process
        then only dispatches."""
        self.config = config
        self.sandbox = None
        self.remote = remote
        self.memo = None  # a FitMemo (evolve.scoring.memo): the run's successful fits, for its selection
        if remote is None and config.isolate:
            from evolve.scoring.pool import Sandbox

            self.sandbox = Sandbox(config)
        self.executor = ThreadPoolExecutor(max_workers=max(1, config.workers), thread_name_prefix="scorer")

    def score(self, program_text: str, task: Task, split: str = "validation") -> Evaluation:
        """Fit and score on each fold of the split (validation may have several; the first
        failure ends it). Parameters and predictions are the first fold's."""
        if self.remote is not None:
            return self.remote.score(program_text, task, split)
        started = time.perf_counter()
        evaluations = []
        for fit_rows, score_rows in task.folds(split):
            jobs, truth = group_jobs(fit_rows, score_rows)
            remaining = float(self.config.timeout_s) - (time.perf_counter() - started)  # one deadline across the folds
            report = self.run(program_text, jobs, task, remaining)
            if self.memo is not None:
                self.memo.put(program_text, jobs, report)
            evaluation = evaluation_from_report(task, split, report, truth, time.perf_counter() - started)
            if not evaluation.ok:
                return dataclasses.replace(evaluation, node=self.config_node())
            evaluations.append(evaluation)
        metrics = mean_over_folds([e.metrics for e in evaluations])
        return dataclasses.replace(evaluations[0], metrics=metrics, seconds=time.perf_counter() - started,
                                   node=self.config_node())

    def config_node(self) -> str:
        from evolve.scoring.executor import local_node_name

        return getattr(self, "node_name", None) or local_node_name()

    def run(self, program_text: str, jobs: list[GroupJob], task: Task, timeout_s: float | None = None) -> RunReport:
        if self.remote is not None:  # candidate code runs in a node's sandbox, never in the driver
            return self.remote.run(program_text, jobs, task, timeout_s)
        if self.sandbox is None:
            return run_jobs(program_text, jobs, task.features, task.targets)
        return self.sandbox.run(program_text, jobs, task.features, task.targets, timeout_s)

    def run_remembered(self, program_text: str, jobs: list[GroupJob], task: Task, timeout_s: float | None = None) -> RunReport:
        """`run`, answered from the memo when this scorer already made the same fit (see memo.py)."""
        found = self.memo.get(program_text, jobs) if self.memo is not None else None
        return found if found is not None else self.run(program_text, jobs, task, timeout_s)

    def submit(self, program_text: str, task: Task, split: str = "validation") -> Future:
        """Score in the background; the future's result is an Evaluation."""
        return self.executor.submit(self.score, program_text, task, split)

    def close(self, abort: bool = False) -> None:
        """Stop the pool. `abort` (leaving on an exception, a Ctrl-C above all) kills busy
        workers at once instead of letting their evaluations finish, so what is still
        running or queued returns a failure at once and nobody waits for it."""
        if abort and self.sandbox is not None:
            from evolve.scoring.pool import ABORT_GRACE_S

            self.sandbox.close(ABORT_GRACE_S)
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self.sandbox is not None:
            self.sandbox.close()
        if self.remote is not None:
            self.remote.close(abort=abort)

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(abort=exc_type is not None)

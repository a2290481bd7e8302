"""The narrow interface a scoring backend satisfies: score one program, close.

The local backend is the Scorer's own warm sandbox pool; the Ray backend
(evolve/scoring/ray_executor.py) runs one such Scorer per node and checks every
result it gets back with `check_evaluation_dict` before the driver stores it.
"""
from __future__ import annotations

import math
import socket
from typing import Protocol

from evolve.status import Status


class Executor(Protocol):
    def score(self, program_text: str, task, split: str = "validation"): ...  # -> Evaluation

    def close(self) -> None: ...


def local_node_name() -> str:
    return socket.gethostname() or "local"


def _finite_list(values, what: str) -> None:
    for v in values:
        if v is not None and not math.isfinite(float(v)):
            raise ValueError(f"{what} holds a non-finite value")


def _number(value, what: str) -> float:
    x = float(value)
    if math.isnan(x):
        raise ValueError(f"{what} is NaN")
    return x


def check_evaluation_dict(d: dict, split: str) -> None:
    """The re-check of an evaluation that crossed the network (on the node before it sends,
    on the driver when it arrives): the status is in the vocabulary, the split is the one
    asked for, and an OK result's metrics are what the scorer can produce (no NaN; R² at
    most 1, going to −inf when the errors overflow, as they do locally for a law that
    predicts 1e200; errors at least 0; combined score in [0, 1]) with finite fitted
    parameters (the scorer turns any other into a "nan" failure). Raises ValueError on
    anything else."""
    if not isinstance(d, dict):
        raise ValueError("evaluation is not a mapping")
    status = Status(d["status"])  # unknown status -> ValueError
    if d.get("split") != split:
        raise ValueError(f"evaluation is for split {d.get('split')!r}, asked {split!r}")
    m = d["metrics"]
    if status == Status.OK:
        r2s = [_number(m["r2"], "r2")] + [_number(v, "r2_per_target") for v in m.get("r2_per_target", ())]
        if any(r > 1.0 + 1e-9 for r in r2s):
            raise ValueError("OK evaluation with R² above 1")
        for key in ("nmse", "nmae"):
            if _number(m[key], key) < 0:
                raise ValueError(f"OK evaluation with negative {key}")
        if not 0.0 <= _number(m["combined_score"], "combined_score") <= 1.0:
            raise ValueError("OK evaluation with combined_score outside [0, 1]")
        params = d.get("params") or {}
        if not isinstance(params, dict):
            raise ValueError("params is not a mapping")
        for name, values in params.items():
            if values is not None:
                _finite_list(values, f"parameter {name}")
    n = d.get("n_params")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise ValueError("n_params is not a non-negative integer")


def check_run_report(report, groups: list[str]) -> None:
    """The re-check of a sandbox RunReport that crossed the network (the selection's
    re-fits): a RunReport with a known status; an OK one holds numeric predictions for
    exactly the groups asked and parameters that are lists of numbers or None."""
    import numpy as np

    from evolve.scoring.in_sandbox import RunReport

    if not isinstance(report, RunReport):
        raise ValueError("run report is not a RunReport")
    if Status(report.status) != Status.OK:
        return
    if not isinstance(report.predictions, dict) or sorted(report.predictions) != sorted(groups):
        raise ValueError("run report predicts other groups than the ones asked")
    for group, values in report.predictions.items():
        if not isinstance(values, np.ndarray) or values.dtype.kind not in "fiu":
            raise ValueError(f"run report predictions for {group!r} are not numbers")
    if not isinstance(report.params, dict):
        raise ValueError("run report params is not a mapping")
    for group, values in report.params.items():
        if values is not None:
            for v in values:
                float(v)  # a number (TypeError/ValueError otherwise)

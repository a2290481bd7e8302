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


def check_evaluation_dict(d: dict, split: str) -> None:
    """The driver-side re-check of an evaluation that crossed the network: the status is in
    the vocabulary, the split is the one asked for, an OK result has finite metrics and
    finite fitted parameters. Raises ValueError on anything else."""
    if not isinstance(d, dict):
        raise ValueError("evaluation is not a mapping")
    status = Status(d["status"])  # unknown status -> ValueError
    if d.get("split") != split:
        raise ValueError(f"evaluation is for split {d.get('split')!r}, asked {split!r}")
    m = d["metrics"]
    if status == Status.OK:
        for key in ("r2", "nmse", "nmae", "combined_score"):
            if not math.isfinite(float(m[key])):
                raise ValueError(f"OK evaluation with non-finite {key}")
        _finite_list(m.get("r2_per_target", ()), "r2_per_target")
        params = d.get("params") or {}
        if not isinstance(params, dict):
            raise ValueError("params is not a mapping")
        for name, values in params.items():
            if values is not None:
                _finite_list(values, f"parameter {name}")
    n = d.get("n_params")
    if n is not None and (not isinstance(n, int) or n < 0):
        raise ValueError("n_params is not a non-negative integer")

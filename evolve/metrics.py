"""The official SLDBench metrics, computed in the trusted parent process only.

Per target: NMSE = MSE / var(test targets), NMAE = MAE / mean absolute deviation of the
test targets; R² = 1 − mean NMSE over targets; combined score = 1 / (1 + mean NMSE).
A normaliser of at most 1e-9 leaves the raw error unnormalised, as the official
evaluator does. Failures are reported as R² = −1 and ranked below every success.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAILURE_R2 = -1.0
FAILURE_NMSE = 100000.0


@dataclass(frozen=True)
class Metrics:
    """Aggregate and per-target scores of one set of predictions."""

    r2: float
    nmse: float
    nmae: float
    combined_score: float
    r2_per_target: tuple[float, ...]
    nmse_per_target: tuple[float, ...]
    nmae_per_target: tuple[float, ...]

    def to_dict(self) -> dict:
        return {
            "r2": self.r2,
            "nmse": self.nmse,
            "nmae": self.nmae,
            "combined_score": self.combined_score,
            "r2_per_target": list(self.r2_per_target),
            "nmse_per_target": list(self.nmse_per_target),
            "nmae_per_target": list(self.nmae_per_target),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Metrics":
        return cls(
            r2=float(d["r2"]),
            nmse=float(d["nmse"]),
            nmae=float(d["nmae"]),
            combined_score=float(d["combined_score"]),
            r2_per_target=tuple(d["r2_per_target"]),
            nmse_per_target=tuple(d["nmse_per_target"]),
            nmae_per_target=tuple(d["nmae_per_target"]),
        )


def as_columns(values: np.ndarray) -> np.ndarray:
    """View 1-D values as one column, so single- and multi-target tasks share one path."""
    values = np.asarray(values, dtype=float)
    return values.reshape(-1, 1) if values.ndim == 1 else values


def compute_metrics(predictions: np.ndarray, truth: np.ndarray) -> Metrics:
    """Score predictions against the true targets (both (n,) or (n, targets)).

    Raises ValueError on a shape mismatch, empty input or non-finite predictions: the
    caller turns those into a failed result.
    """
    pred = as_columns(predictions)
    true = as_columns(truth)
    if pred.shape != true.shape:
        raise ValueError(f"predictions have shape {pred.shape}, expected {true.shape}")
    if true.size == 0:
        raise ValueError("no rows to score")
    if not np.all(np.isfinite(pred)):
        raise ValueError("predictions contain NaN or infinity")
    mse = np.mean((true - pred) ** 2, axis=0)
    mae = np.mean(np.abs(true - pred), axis=0)
    variance = np.var(true, axis=0)
    mean_abs_dev = np.mean(np.abs(true - np.mean(true, axis=0)), axis=0)
    nmse = np.divide(mse, variance, out=mse.copy(), where=variance > 1e-9)
    nmae = np.divide(mae, mean_abs_dev, out=mae.copy(), where=mean_abs_dev > 1e-9)
    return metrics_from_errors(nmse, nmae)


def metrics_from_errors(nmse: np.ndarray, nmae: np.ndarray) -> Metrics:
    """The aggregate scores from per-target normalised errors."""
    mean_nmse = float(np.mean(nmse))
    return Metrics(
        r2=1.0 - mean_nmse,
        nmse=mean_nmse,
        nmae=float(np.mean(nmae)),
        combined_score=1.0 / (1.0 + mean_nmse),
        r2_per_target=tuple(float(1.0 - v) for v in nmse),
        nmse_per_target=tuple(float(v) for v in nmse),
        nmae_per_target=tuple(float(v) for v in nmae),
    )


def mean_over_folds(folds: list[Metrics]) -> Metrics:
    """Validation folds together: per target, the mean of the folds' NMSE and NMAE.

    One fold gives back its own metrics unchanged (the official formula)."""
    if len(folds) == 1:
        return folds[0]
    nmse = np.mean([m.nmse_per_target for m in folds], axis=0)
    nmae = np.mean([m.nmae_per_target for m in folds], axis=0)
    return metrics_from_errors(nmse, nmae)


def failed_metrics(n_targets: int) -> Metrics:
    """The official failure record: R² −1, NMSE 1e5, combined score 0."""
    return Metrics(
        r2=FAILURE_R2,
        nmse=FAILURE_NMSE,
        nmae=FAILURE_NMSE,
        combined_score=0.0,
        r2_per_target=(FAILURE_R2,) * n_targets,
        nmse_per_target=(FAILURE_NMSE,) * n_targets,
        nmae_per_target=(FAILURE_NMSE,) * n_targets,
    )


MIN_ROWS_FOR_R2 = 3  # a group's own R² needs a spread of truths to be measured against


def group_scores(predictions: dict, truth: np.ndarray) -> dict[str, dict]:
    """Per group, how its scored rows were predicted: rows, mean and largest relative error
    |ŷ − y| / |y| over its rows and targets, and its own R² (1 − mean NMSE over targets, on
    the group's rows alone; None with fewer than MIN_ROWS_FOR_R2 rows or no spread).

    Why: the task's R² pools the groups, so one badly predicted group among forty (or the
    single test row most groups of sft have) cannot be seen in it. `predictions` maps each
    group to its rows' predictions, in the sorted group order `truth` is concatenated in."""
    true = as_columns(truth)
    scores, start = {}, 0
    for group in sorted(predictions):
        pred = as_columns(predictions[group])
        own = true[start: start + len(pred)]
        start += len(pred)
        if own.shape != pred.shape or not len(own):
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = np.abs(pred - own) / np.abs(own)
        relative = relative[np.isfinite(relative)]
        variance = np.var(own, axis=0)
        r2 = None
        if len(own) >= MIN_ROWS_FOR_R2 and np.all(variance > 1e-12):
            r2 = float(1.0 - np.mean(np.mean((pred - own) ** 2, axis=0) / variance))
        scores[str(group)] = {"rows": int(len(own)), "r2": r2,
                              "mean_relative_error": float(np.mean(relative)) if relative.size else None,
                              "max_relative_error": float(np.max(relative)) if relative.size else None}
    return scores


def worst_first(by_group: dict) -> list[tuple[str, dict]]:
    """`group_scores` as (group, scores), the largest mean relative error first (unknown last)."""
    return sorted(by_group.items(), key=lambda item: -(item[1].get("mean_relative_error") or 0.0))

"""The compute-optimal allocation of a law in model size N and data D under C ≈ 6·N·D.

Which columns are N and D (by their usual names, or as the user names them), and the search
along one compute curve. The search runs over tokens per parameter (D/N), from 1/100 of the
smallest ratio in the group's train rows to 100 times the largest: a law has been fitted on
those ratios only, and far outside them (a 90-billion-parameter model on 2 million tokens)
a fitted law can fall without bound though no loss does. On that range the answer is the
lowest interior local minimum of the predicted loss; the ends count only when the curve has
no interior minimum (`at_search_edge`), and a curve that falls below the interior minimum
towards an end says so (`lower_at_edge`): the law extrapolates there, the minimum may not.
Runs nothing itself: the law's predictions come from a callable.
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np

from evolve.errors import LawError

RATIO_REACH = 100.0  # how far beyond the data's tokens-per-parameter range the search goes, each way

SIZE_NAMES = ("params", "n", "model_size", "parameters", "num_params", "n_params", "model_params", "non_embedding_params", "non_embedding_param_size", "dense_parameter_count")
DATA_NAMES = ("tokens", "d", "data", "data_size", "num_tokens", "n_tokens", "train_tokens", "dataset_size", "samples_seen", "seen_examples")
SIZE_WORDS = ("params", "parameters", "param")  # the word of a longer name ("Model Parameters") that says model size
DATA_WORDS = ("tokens", "samples", "examples")
QUALIFIERS = ("model", "training", "train", "total", "num", "number", "of", "seen", "n", "d")  # words that keep the meaning


def size_and_data_features(features: tuple[str, ...], size: str | None = None, data: str | None = None) -> tuple[int, int]:
    """The columns of model size N and data D: as named, else found by their usual names
    (case, spaces and units in brackets aside), else by the only name made of one such word and
    qualifiers ("Training Tokens")."""
    for name in (size, data):
        if name is not None and name not in features:
            raise LawError(f"no feature {name!r} (features are {', '.join(features)})")
    if size is not None and size == data:
        raise LawError(f"size and data (--size, --data) name the same feature {size!r}: N and D are two features")
    n = features.index(size) if size is not None else usual_feature(features, SIZE_NAMES, SIZE_WORDS)
    d = features.index(data) if data is not None else usual_feature(features, DATA_NAMES, DATA_WORDS)
    if n is None or d is None or n == d:
        raise LawError(f"compute-optimal allocation needs a model-size and a data feature (features are {', '.join(features)}); "
                       "name them with size= and data= (--size and --data), or it does not apply to this task")
    return n, d


def usual_feature(features: tuple[str, ...], names: tuple[str, ...], words: tuple[str, ...]) -> int | None:
    """The feature whose name, units in brackets aside, is one of `names`; else the only one
    made of one of `words` and qualifiers ("Training Tokens"). A name with any other word
    ("tokens_per_param", "batch_samples") is another quantity and never matches."""
    normalised = [re.sub(r"[^a-z0-9]+", "_", re.sub(r"[(\[][^)\]]*[)\]]", " ", f.lower())).strip("_") for f in features]
    exact = [i for i, f in enumerate(normalised) if f in names]
    if exact:
        return exact[0]
    worded = [i for i, f in enumerate(normalised) if set(f.split("_")) & set(words) and set(f.split("_")) <= {*words, *QUALIFIERS}]
    return worded[0] if len(worded) == 1 else None


def interior_minimum(values: np.ndarray) -> int | None:
    """The index of the lowest interior local minimum of `values` (lower than the point before,
    no higher than the point after, both finite), or None when there is none."""
    inner = values[1:-1]
    with np.errstate(invalid="ignore"):
        local = np.isfinite(inner) & (inner < values[:-2]) & (inner <= values[2:])
    if not local.any():
        return None
    candidates = np.flatnonzero(local) + 1
    return int(candidates[np.argmin(values[candidates])])


def optimal_allocation(predict: Callable[[np.ndarray], np.ndarray], compute: float, X_fit: np.ndarray, y_first: np.ndarray,
                       n_index: int, d_index: int, points: int = 241) -> dict[str, float | bool]:
    """The (N, D) with 6·N·D = compute and the lowest predicted first target, searched over
    tokens per parameter as the module says; other features are held at the group's largest
    train run (by N·D). `predict` maps rows to predictions (first target in column 0)."""
    if not compute > 0:
        raise LawError("compute must be positive")
    N_fit, D_fit = X_fit[:, n_index], X_fit[:, d_index]
    positive = (N_fit > 0) & (D_fit > 0)
    if not positive.any():
        raise LawError("no train row of the group has a positive model size and data: C ≈ 6·N·D does not apply")
    ratios = D_fit[positive] / N_fit[positive]
    grid_ratio = np.geomspace(ratios.min() / RATIO_REACH, ratios.max() * RATIO_REACH, points)
    grid_n = np.sqrt(compute / (6 * grid_ratio))
    grid_d = compute / (6 * grid_n)
    X = np.tile(X_fit[np.argmax(np.where(positive, N_fit * D_fit, -np.inf))], (points, 1))
    X[:, n_index], X[:, d_index] = grid_n, grid_d
    predicted = np.atleast_2d(np.asarray(predict(X), dtype=float).reshape(points, -1))[:, 0]
    finite = np.isfinite(predicted)
    if not finite.any():
        raise LawError("the law predicts no finite loss on the compute curve")
    inner = interior_minimum(np.where(finite, predicted, np.nan))
    best = inner if inner is not None else int(np.nanargmin(np.where(finite, predicted, np.nan)))
    ends = [float(predicted[i]) for i in (0, -1) if finite[i]]
    lower_at_edge = bool(inner is not None and ends and min(ends) < predicted[inner])
    n, d = float(grid_n[best]), float(grid_d[best])
    inside = bool(N_fit.min() <= n <= N_fit.max() and D_fit.min() <= d <= D_fit.max())
    impossible = bool(predicted[best] < 0 <= y_first.min())  # a loss the data never allow (all of theirs are >= 0)
    return {"compute": float(compute), "N": n, "D": d, "loss": float(predicted[best]), "tokens_per_param": d / n,
            "at_search_edge": inner is None, "lower_at_edge": lower_at_edge, "within_data": inside, "negative_loss": impossible}


def allocation_caveats(best: dict) -> str:
    """What an answer of `optimal_allocation` needs said, in one line (`evolve optimize` and
    the report say the same)."""
    said = ((best["negative_loss"], "negative loss: the law fails here"),
            (best["at_search_edge"], "no interior minimum: the end of the tokens per parameter searched (1/100 to 100x the data's)"),
            (best["lower_at_edge"], "lower still far from the data's tokens per parameter, where the law extrapolates"),
            (not best["within_data"], "beyond the data's N or D"))
    return "; ".join(text for applies, text in said if applies)

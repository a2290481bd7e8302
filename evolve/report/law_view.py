"""What the report asks the best law beyond its data, through the Python API (so every fit
runs in the sandbox): its extrapolation with the interval band, and for laws in model
size and data, iso-loss and iso-compute curves with the compute-optimal allocation.

Both hold the other features at one row of the group (the train row with the largest
value of the swept feature, or of compute), so they show a slice of the law, and say so.
Data rows whose other features differ from the slice's are drawn apart: on IsoFLOP data
(every run its own model size and token count) a curve at one token count passes through
one run, and a plot that drew every run against it would read as a law that misses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evolve.allocation import allocation_caveats, size_and_data_features
from evolve.api import Law, LawError

BAND_LEVEL = 0.9
BAND_RESAMPLES = 12  # bootstrap refits per interval in the report (the API default is 30): a report stays quick
MAX_BAND_GROUPS = 4
GRID_POINTS = 60
BEYOND = 0.5  # how far past the data the curve goes: half the data's span (in log space for scales)
ISO_GRID = 40
ISO_COMPUTES = 5


@dataclass
class Extrapolation:
    """One group's law along one feature, past the data, with the interval band."""

    group: str
    feature: str
    log_x: bool
    held: dict  # the other features' values on the curve
    xs: np.ndarray
    center: np.ndarray
    low: np.ndarray
    high: np.ndarray
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    test_low: np.ndarray
    test_high: np.ndarray
    train_max: float
    train_on_slice: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # rows whose other features are the held ones
    test_on_slice: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


@dataclass
class Allocation:
    """Predicted loss over (N, D) for one group, and the compute-optimal points."""

    group: str
    size_feature: str
    data_feature: str
    held: dict
    N: np.ndarray  # (k,)
    D: np.ndarray  # (k,)
    loss: np.ndarray  # (k, k): loss[i, j] at D[i], N[j]
    optimal: list[dict] = field(default_factory=list)
    train_N: np.ndarray = field(default_factory=lambda: np.zeros(0))
    train_D: np.ndarray = field(default_factory=lambda: np.zeros(0))


def sweep_feature(task) -> int:
    """The feature the report extrapolates along: the validation rule's column (the first
    factor of a product), else the first feature."""
    names = [n for n in (task.validation.column or "").split("*") if n in task.features]
    return task.features.index(names[0]) if names else 0


SLICE_RTOL = 1e-3  # a row is on the slice when each other feature is within this of the held value


def on_slice(X: np.ndarray, held_row: np.ndarray, j: int) -> np.ndarray:
    """Rows whose features other than j equal the held row's (to SLICE_RTOL)."""
    others = [i for i in range(X.shape[1]) if i != j]
    if not others or not len(X):
        return np.ones(len(X), dtype=bool)
    return np.all(np.isclose(X[:, others], held_row[others], rtol=SLICE_RTOL, atol=0.0), axis=1)


def sweep_grid(values: np.ndarray, reach: float) -> tuple[np.ndarray, bool]:
    low, high = float(values.min()), max(float(values.max()), reach)
    if low > 0 and high / low > 20:
        span = np.log(high / low)
        return np.geomspace(low, high * np.exp(BEYOND * span), GRID_POINTS), True
    span = max(high - low, abs(high) * 0.1, 1e-9)
    return np.linspace(low, high + BEYOND * span, GRID_POINTS), False


def slice_row(train: np.ndarray, j: int) -> np.ndarray:
    """The train row whose other features the extrapolation curve holds: of the rows at the
    largest value of feature j, the one largest in the others (in feature order), the side
    test lies on (a new user's slice held tokens at its smallest value, far below every
    test point, since the first such row had the fewest tokens)."""
    top = train[train[:, j] == train[:, j].max()]
    others = [i for i in range(train.shape[1]) if i != j]
    return max(top, key=lambda row: tuple(row[others]))


def extrapolations(law: Law, groups: list[str]) -> list[Extrapolation]:
    """The curves and bands of the groups, from one interval call (one calibration)."""
    task = law.task
    j = sweep_feature(task)
    plans, X_all, names = [], [], []
    for g in groups:
        train = task.train.X[task.train.groups == g]
        test_mask = task.test.groups == g
        test = task.test.X[test_mask]
        xs, log_x = sweep_grid(train[:, j], float(test[:, j].max()) if len(test) else float(train[:, j].max()))
        grid = np.tile(slice_row(train, j), (len(xs), 1))
        grid[:, j] = xs
        plans.append((g, xs, log_x, grid, train, test_mask))
        X_all += [grid, test]
        names += [g] * (len(grid) + len(test))
    X = np.concatenate(X_all)
    names = np.array(names, dtype=object)
    center = np.asarray(law.predict(X, names), dtype=float).reshape(len(X), -1)[:, 0]
    low, high = (np.asarray(v, dtype=float).reshape(len(X), -1)[:, 0] for v in law.interval(X, names, BAND_LEVEL, BAND_RESAMPLES))
    found, start = [], 0
    for g, xs, log_x, grid, train, test_mask in plans:
        k, t = len(grid), int(test_mask.sum())
        curve, points = slice(start, start + k), slice(start + k, start + k + t)
        held = {f: float(grid[0, i]) for i, f in enumerate(task.features) if i != j}
        found.append(Extrapolation(
            g, task.features[j], log_x, held, xs, center[curve], low[curve], high[curve],
            train[:, j], task.train.y[task.train.groups == g][:, 0], task.test.X[test_mask][:, j], task.test.y[test_mask][:, 0],
            low[points], high[points], float(train[:, j].max()),
            on_slice(train, grid[0], j), on_slice(task.test.X[test_mask], grid[0], j),
        ))  # fmt: skip
        start += k + t
    return found


def allocation(law: Law, group: str) -> Allocation:
    """Iso-loss over (N, D) around the group's data, and `Law.optimal` at a few computes;
    a LawError when the task has no model-size and data features."""
    task = law.task
    n, d = size_and_data_features(task.features)
    train = task.train.X[task.train.groups == group]
    N = np.geomspace(train[:, n].min() / 3, train[:, n].max() * 30, ISO_GRID)
    D = np.geomspace(train[:, d].min() / 3, train[:, d].max() * 30, ISO_GRID)
    base = train[np.argmax(train[:, n] * train[:, d])]
    grid = np.tile(base, (ISO_GRID * ISO_GRID, 1))
    mesh_N, mesh_D = np.meshgrid(N, D)
    grid[:, n], grid[:, d] = mesh_N.ravel(), mesh_D.ravel()
    loss = np.asarray(law.predict(grid, group), dtype=float).reshape(len(grid), -1)[:, 0].reshape(ISO_GRID, ISO_GRID)
    compute = 6 * train[:, n] * train[:, d]
    computes = np.geomspace(compute.max(), compute.max() * 1e3, ISO_COMPUTES)
    optimal = []
    for c in computes:
        try:
            found = law.optimal(float(c), group)
            optimal.append({**found, "caveats": allocation_caveats(found)})
        except LawError:
            continue
    held = {f: float(base[i]) for i, f in enumerate(task.features) if i not in (n, d)}
    return Allocation(group, task.features[n], task.features[d], held, N, D, loss, optimal, train[:, n], train[:, d])


def law_views(law: Law) -> tuple[list[Extrapolation], str, Allocation | None, str]:
    """Extrapolations and allocation of a law, each with a note on why it is missing."""
    groups = law.groups[:MAX_BAND_GROUPS]
    try:
        curves, curve_note = extrapolations(law, groups), ""
    except LawError as exc:
        curves, curve_note = [], f"no extrapolation: {exc}"
    try:
        allocated, allocation_note = allocation(law, law.groups[0]), ""
    except LawError as exc:
        allocated, allocation_note = None, str(exc)
    return curves, curve_note, allocated, allocation_note

"""Does a fitted law keep the data's trend beyond them? The check behind the warnings of
`evolve run`, `archive show` and `Law.extrapolation_warnings`.

A law is ranked on how well it predicts held-out rows inside the data's range; what it
says beyond them is what a user asks it (a new user's returned law, fitted on isoFLOP
runs, predicted the loss rising again with more data beyond the largest run, where every
train row shows it falling). Nothing in the score sees that, so it is checked and said,
never used to rank (a warning about the law, not a rule chosen on any data set).

The check, per group, target and scale feature:
- A scale feature is one whose train values in the group are all >= 1 and span at least
  a factor of 4 (counts: parameters, tokens, experts, batch or vocabulary size, parallel
  streams; not rates, proportions or logarithms, for which "100 times the largest" means
  nothing), along which the group's target has a clear trend: Spearman's rank
  correlation at least `TREND_RHO` in size over at least `MIN_DISTINCT` distinct values.
- The law, fitted on all the group's train rows (as best.py, predict and export fit it),
  is asked along that feature from the train row with its largest value up to
  `REACH` times it, every other feature held at that row's values.
- It is said when the predictions move against train's trend by more than the data's own
  scatter (the fit's residual standard deviation on the group's rows, and never less
  than 1% of the target's range there), when they leave the sign every train value of
  the target has (a negative loss), or when they are not finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from evolve.scoring.in_sandbox import GroupJob
from evolve.status import Status
from evolve.tasks import Task

REACH = 100.0  # how far beyond the largest train value each scale feature is asked about
POINTS = 13  # predictions along each probe, geometric from the largest train value to REACH times it
TREND_RHO = 0.7  # |Spearman rho| a trend needs before going against it is worth saying
MIN_DISTINCT = 3  # distinct values a feature needs to show a trend at all
MIN_SPAN = 4.0  # max / min a feature's values need to be a scale
RANGE_SHARE = 0.01  # the least movement said, as a share of the target's range in the group
MAX_SAID = 6  # warnings shown; the rest are counted


@dataclass(frozen=True)
class Probe:
    """One path beyond the data: rows `start:start + POINTS` of the group's predictions."""

    group: str
    feature: int
    target: int
    trend: float  # Spearman rho of the target with the feature in the group's train rows
    start: int


def scale_trends(X: np.ndarray, y: np.ndarray) -> list[tuple[int, int, float]]:
    """(feature, target, rho) for every scale feature with a clear trend in these rows."""
    from scipy.stats import spearmanr  # scipy.stats takes a while to import: the CLI's read-only commands never need it

    found = []
    for f in range(X.shape[1]):
        values = X[:, f]
        if len(np.unique(values)) < MIN_DISTINCT or values.min() < 1 or values.max() < MIN_SPAN * values.min():
            continue
        for t in range(y.shape[1]):
            finite = np.isfinite(y[:, t])
            if finite.sum() < MIN_DISTINCT or np.ptp(y[finite, t]) == 0:
                continue
            rho = float(spearmanr(values[finite], y[finite, t]).statistic)
            if np.isfinite(rho) and abs(rho) >= TREND_RHO:
                found.append((f, t, rho))
    return found


def probe_paths(task: Task) -> dict[str, tuple[np.ndarray, list[Probe]]]:
    """Per group with a scale trend: the rows to predict (its train rows, for the residual
    scatter, then each probe's path) and the probes that read them."""
    paths_of = {}
    for group in task.train.group_names():
        mask = task.train.groups == group
        X, y = task.train.X[mask], task.train.y[mask].reshape(int(mask.sum()), -1)
        paths, probes = [], []
        for f, t, rho in scale_trends(X, y):
            edge = X[np.argmax(X[:, f])]
            path = np.tile(edge, (POINTS, 1))
            path[:, f] = np.geomspace(edge[f], edge[f] * REACH, POINTS)
            probes.append(Probe(group, f, t, rho, len(X) + POINTS * len(paths)))
            paths.append(path)
        if paths:
            paths_of[group] = (np.vstack([X, *paths]), probes)
    return paths_of


def probe_jobs(task: Task) -> tuple[list[GroupJob], list[Probe]]:
    """One job per group with a scale trend: fit on all its train rows, predict `probe_paths`."""
    jobs, probes = [], []
    for group, (X_predict, own) in probe_paths(task).items():
        mask = task.train.groups == group
        jobs.append(GroupJob(group, task.train.X[mask], task.train.y[mask], X_predict))
        probes.extend(own)
    return jobs, probes


def warnings_of(task: Task, predictions: dict[str, np.ndarray], probes: list[Probe]) -> list[str]:
    """The sentences the probes call for (at most MAX_SAID, then a count)."""
    said = []
    for probe in probes:
        sentence = probe_warning(task, probe, predictions.get(probe.group))
        if sentence:
            said.append(sentence)
    if len(said) > MAX_SAID:
        said = [*said[:MAX_SAID], f"and {len(said) - MAX_SAID} more such path(s) beyond the data"]
    return said


def probe_warning(task: Task, probe: Probe, predicted: np.ndarray | None) -> str | None:
    """What one path beyond the data shows that the user must hear, or None."""
    mask = task.train.groups == probe.group
    y = task.train.y[mask].reshape(int(mask.sum()), -1)[:, probe.target]
    if predicted is None:
        return None
    predicted = np.asarray(predicted, dtype=float).reshape(-1, len(task.targets))[:, probe.target]
    fitted, path = predicted[: len(y)], predicted[probe.start: probe.start + POINTS]
    X = task.train.X[mask]
    grid = np.geomspace(X[:, probe.feature].max(), X[:, probe.feature].max() * REACH, POINTS)
    feature, target = task.features[probe.feature], task.targets[probe.target]
    where = f"group {probe.group}: {target}"
    if not np.isfinite(path).all():
        first = grid[int(np.argmin(np.isfinite(path)))]
        return f"{where} has no finite prediction at {feature} = {first:.3g} ({first / grid[0]:.3g}x the largest in train)"
    if (y > 0).all() and (path <= 0).any() or (y < 0).all() and (path >= 0).any():
        k = int(np.argmax(path <= 0)) if (y > 0).all() else int(np.argmax(path >= 0))
        return (f"{where} is predicted {path[k]:.4g} at {feature} = {grid[k]:.3g} ({grid[k] / grid[0]:.3g}x the largest in train), "
                f"a sign no train value has")
    finite = np.isfinite(fitted)
    scatter = float(np.sqrt(np.mean((y[finite] - fitted[finite]) ** 2))) if finite.any() else 0.0
    tolerance = max(scatter, RANGE_SHARE * float(np.ptp(y)))
    against = -np.sign(probe.trend) * path  # rises when the law goes against train's trend
    lowest = np.minimum.accumulate(against)
    k = int(np.argmax(against - lowest))
    if against[k] - lowest[k] <= tolerance:
        return None
    j = int(np.argmin(against[: k + 1]))
    went = "falls" if probe.trend > 0 else "rises"
    trend = "rises" if probe.trend > 0 else "falls"
    return (f"{where} {went} from {path[j]:.4g} at {feature} = {grid[j]:.3g} to {path[k]:.4g} at {grid[k]:.3g} "
            f"({grid[k] / grid[0]:.3g}x the largest in train), where train {trend} with {feature} (Spearman {probe.trend:+.2f})")


def extrapolation_warnings(run_jobs, task: Task) -> list[str]:
    """The warnings for a law run by `run_jobs(jobs) -> RunReport` (its sandbox): none when
    the task has no scale trend to keep; a law that fails on the probes says so."""
    jobs, probes = probe_jobs(task)
    if not jobs:
        return []
    report = run_jobs(jobs)
    if report.status != Status.OK:
        return [failure_words(report.status)]
    return warnings_of(task, report.predictions, probes)


def failure_words(status: Status) -> str:
    """The warning for a law that failed when asked beyond the data."""
    if status == Status.NAN:
        return f"the law gives no finite prediction somewhere up to {REACH:g}x the largest train value of a scale feature"
    return f"the law could not be asked beyond the data ({Status(status).value})"


def stored_warnings(archive, program_id: int | None) -> list[str] | None:
    """The warnings the run's end stored for `program_id` (its chosen law), None when it
    checked no such program (another program, or a run from before the check)."""
    stored = archive.get_meta("extrapolation") or {}
    if not isinstance(stored, dict) or stored.get("program") != program_id or program_id is None:
        return None
    return [str(line) for line in stored.get("warnings", []) if isinstance(line, str)]


def warning_lines(said: list[str]) -> list[str]:
    """How the CLI prints them: a heading, one indented line each."""
    if not said:
        return []
    return ["beyond the data (up to {:g}x the largest train value of each scale feature), the law fitted on all train rows:".format(REACH),
            *(f"  warning: {line}" for line in said)]

"""What runs inside the sandbox: load a program, fit it per group, predict.

This module sees only the program text, the rows it may fit on and the features of the
rows it must predict; it never sees the labels of scored rows, which stay with the
parent that computes the metrics. It returns plain data (status, message, arrays), so
the parent never unpickles anything a candidate built.
"""

from __future__ import annotations

import inspect
import traceback
from dataclasses import dataclass, field

import numpy as np

from evolve.program import FIT_FUNCTIONS, LAW_FUNCTION, ProgramError, detect_api
from evolve.status import Status

MAX_PARAMS_REPORTED = 10_000
TRACEBACK_TAIL_CHARS = 2_000


@dataclass(frozen=True)
class GroupJob:
    """One group's work: fit on (X_fit, y_fit), then predict X_predict."""

    group: str
    X_fit: np.ndarray
    y_fit: np.ndarray
    X_predict: np.ndarray


@dataclass
class RunReport:
    """What a program produced: per group predictions and fitted parameters, or a failure.

    status is "ok" or a failure kind: syntax_error, missing_function, exception, nan,
    wrong_shape (set here), and timeout, crash, memory (set by the sandbox).
    """

    status: Status
    message: str = ""
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, list[float] | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.status = Status(self.status)


def load_namespace(program_text: str) -> dict:
    namespace: dict = {"__name__": "candidate_program", "__builtins__": __builtins__}
    code = compile(program_text, "<program>", "exec")
    exec(code, namespace)  # noqa: S102 - running untrusted code is this module's purpose (inside the sandbox)
    return namespace


def flat_params(params: object) -> list[float] | None:
    """Every number in the fitted parameters, in order, so the task's cap counts them all.

    Arrays, lists, tuples and dict values are walked; strings and None (a group name,
    say) are not parameters. None when something cannot be counted (an arbitrary
    object) or there are too many to report: the scorer ranks that as over the cap.
    """
    values: list[float] = []
    pending = [params]
    while pending:
        item = pending.pop()
        if item is None or isinstance(item, (str, bytes)):
            continue
        if isinstance(item, dict):
            pending.extend(reversed(list(item.values())))
        elif isinstance(item, (list, tuple)):
            pending.extend(reversed(item))
        else:
            try:
                array = np.asarray(item, dtype=float)
            except (TypeError, ValueError):
                return None
            values.extend(float(v) for v in array.ravel()[: MAX_PARAMS_REPORTED + 1])
        if len(values) > MAX_PARAMS_REPORTED:
            return None
    return values


def accepts_group(function) -> bool:
    try:
        return "group" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def predict_fit_api(namespace: dict, job: GroupJob) -> tuple[object, list[float] | None]:
    fit = namespace["fit_scaling_law"]
    kwargs = {"group": job.group} if accepts_group(fit) else {}
    params = fit(job.X_fit.copy(), squeeze_targets(job.y_fit), **kwargs)
    predictions = namespace["scaling_law_func"](job.X_predict.copy(), params)
    return predictions, flat_params(params)


def squeeze_targets(y: np.ndarray) -> np.ndarray:
    """Single-target tasks give programs a 1-D array of losses, as the official evaluator does."""
    y = np.asarray(y, dtype=float)
    return y[:, 0].copy() if y.ndim == 2 and y.shape[1] == 1 else y.copy()


def predict_law_api(namespace: dict, job: GroupJob, features: tuple[str, ...], targets: tuple[str, ...]):
    rows = [dict(zip(features, map(float, row))) for row in job.X_predict]
    out = namespace[LAW_FUNCTION](rows, job.group)
    predictions = [[float(item[t]) for t in targets] for item in out]
    return np.array(predictions, dtype=float).reshape(len(job.X_predict), len(targets)), []


def as_prediction_array(raw: object, n_rows: int, n_targets: int) -> np.ndarray:
    """Predictions as (n_rows, n_targets) floats; raises ValueError naming a bad shape."""
    array = np.asarray(raw, dtype=float)
    if array.ndim == 1 and n_targets == 1:
        array = array.reshape(-1, 1)
    if array.ndim == 2 and array.shape == (n_targets, n_rows) and n_targets != n_rows:
        raise ValueError(f"predictions have shape {array.shape}; expected ({n_rows}, {n_targets}): transposed?")
    if array.shape != (n_rows, n_targets):
        expected = f"({n_rows},)" if n_targets == 1 else f"({n_rows}, {n_targets})"
        raise ValueError(f"predictions have shape {array.shape}; expected {expected}")
    return array


def run_jobs(program_text: str, jobs: list[GroupJob], features: tuple[str, ...], targets: tuple[str, ...]) -> RunReport:
    """Fit and predict every group; the first failure ends the run with its status."""
    try:
        api = detect_api(program_text)
        namespace = load_namespace(program_text)
    except ProgramError as exc:
        return RunReport(exc.status, str(exc))
    except SyntaxError as exc:
        return RunReport(Status.SYNTAX_ERROR, f"line {exc.lineno}: {exc.msg}")
    except BaseException:  # noqa: BLE001 - a candidate may raise anything, even SystemExit
        return RunReport(Status.EXCEPTION, "while loading the program:\n" + traceback_tail())
    needed = FIT_FUNCTIONS if api == "fit" else (LAW_FUNCTION,)
    missing = [name for name in needed if not callable(namespace.get(name))]
    if missing:
        return RunReport(Status.MISSING_FUNCTION, f"{', '.join(missing)} is not a function")
    report = RunReport(Status.OK)
    for job in jobs:
        try:
            if api == "fit":
                raw, params = predict_fit_api(namespace, job)
            else:
                raw, params = predict_law_api(namespace, job, features, targets)
        except BaseException:  # noqa: BLE001
            return RunReport(Status.EXCEPTION, f"in group {job.group!r}:\n" + traceback_tail())
        try:
            predictions = as_prediction_array(raw, len(job.X_predict), len(targets))
        except (TypeError, ValueError) as exc:
            return RunReport(Status.WRONG_SHAPE, f"in group {job.group!r}: {exc}")
        if not np.all(np.isfinite(predictions)):
            return RunReport(Status.NAN, f"in group {job.group!r}: predictions contain NaN or infinity")
        report.predictions[job.group] = predictions
        report.params[job.group] = params
    return report


def traceback_tail() -> str:
    text = traceback.format_exc()
    return text[-TRACEBACK_TAIL_CHARS:]

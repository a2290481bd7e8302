"""What runs inside the sandbox: load a program, fit it per group, predict.

This module sees only the program text, the rows it may fit on and the features of the
rows it must predict; it never sees the labels of scored rows, which stay with the
parent that computes the metrics. It returns plain data (status, message, arrays), so
the parent never unpickles anything a candidate built.
"""

from __future__ import annotations

import inspect
import json
import traceback
from dataclasses import dataclass, field

import numpy as np

from evolve.program import FIT_FUNCTIONS, LAW_FUNCTION, ProgramError, detect_api
from evolve.scoring import params_codec
from evolve.status import CHILD_STATUSES, Status
from evolve.text import safe_text

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
    counted: dict[str, int] = field(default_factory=dict)  # numbers plus string weight (params_codec)

    def __post_init__(self) -> None:
        self.status = Status(self.status)


def load_namespace(program_text: str) -> dict:
    namespace: dict = {"__name__": "candidate_program", "__builtins__": __builtins__}
    code = compile(program_text, "<program>", "exec")
    exec(code, namespace)  # noqa: S102 - running untrusted code is this module's purpose (inside the sandbox)
    return namespace


def accepts_group(function) -> bool:
    try:
        return "group" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def fit_group(namespace: dict, job: GroupJob) -> object:
    fit = namespace["fit_scaling_law"]
    kwargs = {"group": job.group} if accepts_group(fit) else {}
    return fit(job.X_fit.copy(), squeeze_targets(job.y_fit), **kwargs)


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


def load_program(program_text: str, api_functions: bool = True) -> tuple[str, dict] | RunReport:
    """The program's API and namespace, or the failure that stops it."""
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
    return api, namespace


def fit_phase(program_text: str, jobs: list[GroupJob]) -> dict:
    """Fit every group (in its own process in the sandbox): the status, the API, and each
    group's returned parameters encoded as data. Nothing else of this process reaches the
    prediction. The jobs' X_predict is not used here (the worker sends none)."""
    loaded = load_program(program_text)
    if isinstance(loaded, RunReport):
        return {"status": str(loaded.status), "message": loaded.message, "api": "", "params": []}
    api, namespace = loaded
    if api == "law":
        return {"status": str(Status.OK), "message": "", "api": api, "params": []}
    fitted = []
    for job in jobs:
        try:
            fitted.append((job.group, fit_group(namespace, job)))
        except BaseException:  # noqa: BLE001
            return {"status": str(Status.EXCEPTION), "message": f"in group {job.group!r}:\n" + traceback_tail(),
                    "api": api, "params": []}
    try:
        encoded = json.loads(params_codec.dumps(fitted))
    except params_codec.ParamsError as exc:
        return {"status": str(Status.EXCEPTION), "message": str(exc), "api": api, "params": []}
    except BaseException:  # noqa: BLE001 - an array subclass may raise anything while converted
        return {"status": str(Status.EXCEPTION), "message": "while passing the fitted parameters:\n" + traceback_tail(),
                "api": api, "params": []}
    return {"status": str(Status.OK), "message": "", "api": api, "params": encoded}


def predict_phase(program_text: str, jobs: list[GroupJob], features: tuple[str, ...], targets: tuple[str, ...],
                  api: str, trees: list[object]) -> RunReport:
    """Predict every group from a fresh load of the program and the parameters its fit
    returned (decoded from data); the first failure ends the run with its status."""
    loaded = load_program(program_text)
    if isinstance(loaded, RunReport):
        return loaded
    got_api, namespace = loaded
    if got_api != api:
        return RunReport(Status.CRASH, "the program changed its API between fit and prediction")
    report = RunReport(Status.OK)
    for index, job in enumerate(jobs):
        try:
            if api == "fit":
                raw = namespace["scaling_law_func"](job.X_predict.copy(), params_codec.decode(trees[index]))
            else:
                raw, _ = predict_law_api(namespace, job, features, targets)
        except BaseException:  # noqa: BLE001
            return RunReport(Status.EXCEPTION, f"in group {job.group!r}:\n" + traceback_tail())
        try:
            predictions = as_prediction_array(raw, len(job.X_predict), len(targets))
        except (TypeError, ValueError) as exc:
            return RunReport(Status.WRONG_SHAPE, f"in group {job.group!r}: {exc}")
        if not np.all(np.isfinite(predictions)):
            return RunReport(Status.NAN, f"in group {job.group!r}: predictions contain NaN or infinity")
        report.predictions[job.group] = predictions
    return report


def checked_fit(fit: object, jobs: list[GroupJob]) -> tuple[RunReport | None, str, list[object], dict, dict]:
    """Trusted reading of a fit phase's answer: (failure or None, api, trees, params, counted)."""
    if not isinstance(fit, dict) or set(fit) != {"status", "message", "api", "params"}:
        return RunReport(Status.CRASH, "the fitting process sent an invalid result"), "", [], {}, {}
    status, message = fit["status"], fit["message"]
    if not isinstance(status, str) or status not in CHILD_STATUSES or not isinstance(message, str):
        return RunReport(Status.CRASH, "the fitting process sent an invalid status"), "", [], {}, {}
    if status != Status.OK:
        return RunReport(Status(status), safe_text(message[-4000:], limit=4000)), "", [], {}, {}
    if message:  # an ok answer carries nothing but its parameters (the message is a failure's)
        return RunReport(Status.CRASH, "the fitting process sent an ok result with a message"), "", [], {}, {}
    api, entries = fit["api"], fit["params"]
    if api == "law":
        return None, api, [], {job.group: [] for job in jobs}, {job.group: 0 for job in jobs}
    if api != "fit" or not isinstance(entries, list) or len(entries) != len(jobs):
        return RunReport(Status.CRASH, "the fitting process sent parameters for the wrong groups"), "", [], {}, {}
    trees, params, counted = [], {}, {}
    for entry, job in zip(entries, jobs):
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == job.group):
            return RunReport(Status.CRASH, "the fitting process sent parameters for the wrong groups"), "", [], {}, {}
        try:
            numbers, weight = params_codec.measure(entry[1])
        except (params_codec.ParamsError, RecursionError, TypeError, ValueError, OverflowError) as exc:
            return RunReport(Status.CRASH, f"the fitting process sent invalid parameters: {exc}"), "", [], {}, {}
        trees.append(entry[1])
        too_many = len(numbers) + weight > MAX_PARAMS_REPORTED
        params[job.group] = None if too_many else numbers
        counted[job.group] = len(numbers) + weight
    return None, api, trees, params, counted


def with_params(report: RunReport, params: dict, counted: dict) -> RunReport:
    if report.status == Status.OK:
        report.params = {group: params.get(group) for group in report.predictions}
        report.counted = {group: counted.get(group, 0) for group in report.predictions}
    return report


def run_jobs(program_text: str, jobs: list[GroupJob], features: tuple[str, ...], targets: tuple[str, ...]) -> RunReport:
    """Fit, then predict from the parameters alone, in this process (isolate=False, warm-up).

    The same two phases as the sandbox, with the same data-only hand-over and a fresh
    load of the program for prediction, so both modes give identical results."""
    fit = json.loads(json.dumps(fit_phase(program_text, jobs)))
    failure, api, trees, params, counted = checked_fit(fit, jobs)
    if failure is not None:
        return failure
    return with_params(predict_phase(program_text, jobs, features, targets, api, trees), params, counted)


def traceback_tail() -> str:
    text = traceback.format_exc()
    return text[-TRACEBACK_TAIL_CHARS:]

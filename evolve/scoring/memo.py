"""The sandboxed fits a run already made, kept so the end of the run does not make them again.

The run's selection (evolve.selection) re-fits its finalists on rolling-origin folds whose
first ones are the task's validation folds, exactly the fits the search made to rank those
programs (same program, same rows). A Scorer with a memo keeps the report of each successful
fit by (program, rows) and hands it back when the same fit is asked again; a program whose
fit is random gets the fit the archive ranked it by. Failures are not kept (a retry may
succeed). The program is keyed by its exact text, not its syntax tree: a program can read its
own source (comments included), so two that differ only in comments may fit differently. Bounded by the values it holds: past MAX_VALUES the oldest reports go first.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from evolve.scoring.in_sandbox import GroupJob, RunReport
from evolve.status import Status

MAX_VALUES = 8_000_000  # predicted numbers kept (64 MB), far above a 1000-iteration run on the SLDBench tasks


def jobs_digest(jobs: list[GroupJob]) -> str:
    """Which fit a list of jobs asks for: every group's name, fit rows, targets and rows to predict."""
    digest = hashlib.sha256()
    for job in jobs:
        digest.update(str(job.group).encode() + b"\0")
        for array in (job.X_fit, job.y_fit, job.X_predict):
            array = np.ascontiguousarray(array, dtype=float)
            digest.update(repr(array.shape).encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


class FitMemo:
    """Successful RunReports by (digest of the program's text, jobs); thread-safe."""

    def __init__(self, max_values: int = MAX_VALUES):
        self.max_values = max_values
        self.reports: OrderedDict[tuple[str, str], tuple[RunReport, int]] = OrderedDict()
        self.values = 0
        self.hits = 0
        self.lock = threading.Lock()

    @staticmethod
    def key(program_text: str, jobs: list[GroupJob]) -> tuple[str, str] | None:
        try:
            return hashlib.sha256(program_text.encode("utf-8", "surrogatepass")).hexdigest(), jobs_digest(jobs)
        except Exception:  # noqa: BLE001 - jobs that cannot be digested are not kept
            return None

    def put(self, program_text: str, jobs: list[GroupJob], report: RunReport) -> None:
        if report.status != Status.OK:
            return
        key = self.key(program_text, jobs)
        # parameters count too: a program may return up to MAX_PARAMS_REPORTED per group, which
        # no count of predictions sees (an attack's 9,999 per group held 16.5 MB per entry)
        size = sum(np.size(p) for p in report.predictions.values()) + sum(len(p or ()) for p in report.params.values())
        if key is None or size > self.max_values:
            return
        with self.lock:
            if key in self.reports:
                return
            self.reports[key] = (report, size)
            self.values += size
            while self.values > self.max_values:
                _, (_, dropped) = self.reports.popitem(last=False)
                self.values -= dropped

    def get(self, program_text: str, jobs: list[GroupJob]) -> RunReport | None:
        key = self.key(program_text, jobs)
        with self.lock:
            found = self.reports.get(key) if key is not None else None
            if found is not None:
                self.hits += 1
        return found[0] if found is not None else None

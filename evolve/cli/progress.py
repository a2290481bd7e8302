"""What a person sees while a run goes: seeds as they score, then one live status line.

The test R² stays hidden until the end: only validation figures are shown during a run,
so nobody is tempted to pick laws by their test score.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from evolve.cli.display import console as stderr_console, safe_text
from evolve.records import ProgramRecord
from evolve.scoring.scorer import Evaluation


def describe(evaluation: Evaluation) -> str:
    if evaluation.ok:
        return f"R² {evaluation.metrics.r2:.4f}  ({evaluation.n_params} params)"
    message = safe_text(evaluation.message.splitlines()[-1][:100], keep_newlines=False) if evaluation.message.strip() else ""
    return f"[red]{evaluation.status}[/red]: {escape(message)}"  # the program's text is never markup


class RunProgress:
    """Seeds as they are scored, then a progress bar with best R², evaluations/s, failures, tokens."""

    def __init__(self, console: Console | None = None, enabled: bool = True):
        self.console = console or stderr_console(stderr=True)
        self.enabled = enabled
        self.bar: Progress | None = None
        self.spinner: Progress | None = None  # after the search, while the law is chosen and tested
        self.task_id = None
        self.best_r2 = float("-inf")
        self.evaluations = 0
        self.failures = 0
        self.started = time.perf_counter()
        self.usage = None
        self.header_shown = False

    def begin(self, task: str, run_dir: Path, proposer: str) -> None:
        """The run's header, first: the seeds' lines belong to the run it names."""
        if self.enabled:
            self.console.print(f"[bold]{escape(task)}[/bold]: {proposer} proposer, run directory {escape(safe_text(run_dir))}")
            self.header_shown = True

    def seed(self, name: str, evaluation: Evaluation) -> None:
        if self.enabled:
            self.console.print(f"  seed {escape(safe_text(name, keep_newlines=False)):<20} validation {describe(evaluation)}", highlight=False)

    def start(self, task: str, run_dir: Path, done: int, total: int, best: ProgramRecord | None, proposer: str, usage) -> None:
        self.usage = usage
        self.best_r2 = best.r2 if best is not None else float("-inf")
        self.started = time.perf_counter()
        if not self.enabled:
            return
        if not self.header_shown:
            self.begin(task, run_dir, proposer)
        self.bar = Progress(
            TextColumn("iteration"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.bar.start()
        self.task_id = self.bar.add_task(self.status_text(), total=total, completed=done)

    def child(self, record: ProgramRecord) -> None:
        self.evaluations += 1
        if not record.ok:
            self.failures += 1
        self.best_r2 = max(self.best_r2, record.r2)
        if self.bar is not None:
            self.bar.update(self.task_id, completed=record.iteration, description=self.status_text())

    def status_text(self) -> str:
        rate = self.evaluations / max(1e-9, time.perf_counter() - self.started)
        text = f"best val R² {self.best_r2:.4f} | {rate:.2f} evals/s | {self.failures} failed"
        if self.usage is not None:
            text += f" | {self.usage.prompt_tokens + self.usage.completion_tokens} tokens"
        return text

    def note(self, text: str) -> None:
        """A line above the bar: why the run is waiting (an endpoint outage)."""
        if self.enabled:
            self.console.print(safe_text(text, keep_newlines=False), markup=False, highlight=False)

    def phase(self, text: str) -> None:
        """A step after the search that takes minutes (the choice and the test scoring): a
        line that says what it is, and a spinner with the time it has taken, until stop()."""
        if not self.enabled:
            return
        self.console.print(safe_text(text, keep_newlines=False) + " ...", markup=False, highlight=False)
        self.spinner = Progress(SpinnerColumn(), TimeElapsedColumn(), console=self.console, transient=True)
        self.spinner.start()
        self.spinner.add_task("", total=None)

    def stop(self) -> None:
        for live in (self.bar, self.spinner):
            if live is not None:
                live.stop()
        self.bar = self.spinner = None

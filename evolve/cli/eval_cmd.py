"""`evolve eval`: score one program exactly as SLDBench's evaluator does."""

from __future__ import annotations

from pathlib import Path

import click

from evolve.cli.display import console, show_evaluation
from evolve.config import ScorerConfig
from evolve.program import ProgramError, detect_api
from evolve.scoring.scorer import Scorer
from evolve.tasks import SPLITS, load_task
from evolve.text import strict_json


@click.command("eval", help="Score a program on a task split.")
@click.argument("program", type=click.Path(path_type=Path))
@click.option("--task", "task_name", required=True, help="a task name or folder")
@click.option("--split", type=click.Choice(SPLITS), default="validation", show_default=True, help="validation (ranking), test (reporting) or train (in-sample)")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=120.0, show_default=True, help="seconds before the evaluation is stopped")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def eval_command(program: Path, task_name: str, split: str, timeout: float, as_json: bool) -> int:
    try:
        text = program.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProgramError("unreadable", f"cannot read {program}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        detect_api(text)  # a one-line error before any worker starts
    except ProgramError as exc:
        raise ProgramError(exc.status, f"{program}: {exc}") from None
    task = load_task(task_name)
    with Scorer(ScorerConfig(workers=1, timeout_s=timeout)) as scorer:
        evaluation = scorer.score(text, task, split)
        isolation = scorer.sandbox.layers
    if as_json:
        folds = len(task.folds(split))
        data = {"program": str(program), "task": task.name, "isolation": isolation, "folds": folds, **evaluation.to_dict()}
        click.echo(strict_json(data))
    else:
        show_evaluation(task, program, evaluation)
        console().print(f"isolation: {isolation}", style="dim")
    return 0 if evaluation.ok else 1

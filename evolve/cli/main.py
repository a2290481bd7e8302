"""The `evolve` command: tasks, eval, run (and resume), plus the inspection commands.

Every user error (unknown task, malformed CSV or config, broken program, unreachable
endpoint, unknown run) ends as one line on stderr and a non-zero exit; nothing stored
in an archive is touched by a failed command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from evolve.config import (
    ConfigError,
    ModelSpec,
    RunConfig,
    load_config_file,
    replace_nested,
    run_config_from_dict,
)
from evolve.program import ProgramError, detect_api, function_source
from evolve.tasks import (
    SPLITS,
    TaskError,
    create_task_folder,
    load_task,
    shipped_task_names,
)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is meant for the user as is."""
    from evolve.store.database import ArchiveError
    from evolve.propose.client import LLMError
    from evolve.loop import RunError

    return (TaskError, ConfigError, ProgramError, ArchiveError, LLMError, RunError)


def print_table(title: str, columns: list[str], rows: list[list], console: Console | None = None) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(v) for v in row])
    (console or Console()).print(table)


def format_r2(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


# --- evolve tasks -----------------------------------------------------------------------


def validation_cell(summary: dict) -> str:
    """Held-out rows of the first validation fold, and how many folds there are."""
    folds = summary["validation_folds"]
    return f"{summary['validation_rows']}" + (f" ({folds} folds)" if folds > 1 else "")


def cmd_tasks(args: argparse.Namespace) -> int:
    summaries = [load_task(name).summary() for name in shipped_task_names()]
    if args.json:
        print(json.dumps(summaries, indent=2))
        return 0
    rows = [
        [s["name"], f"{', '.join(s['features'])} → {', '.join(s['targets'])}", s["groups"], s["train_rows"], validation_cell(s), s["test_rows"], s["param_cap"] or "none"]
        for s in summaries
    ]
    print_table("SLDBench tasks", ["task", "features → targets", "groups", "train", "validation", "test", "cap"], rows)
    return 0


def cmd_tasks_new(args: argparse.Namespace) -> int:
    column, fraction = (args.test_largest[0], float(args.test_largest[1])) if args.test_largest else (None, 0.2)
    task = create_task_folder(
        Path(args.dir),
        Path(args.csv),
        split_names(args.features),
        split_names(args.targets),
        group_column=args.group_column,
        test_column=column,
        test_fraction=fraction,
        description=args.description or "",
    )
    s = task.summary()
    print(f"wrote task {task.path}: {s['groups']} group(s), {s['train_rows']} train, {s['validation_rows']} validation, {s['test_rows']} test rows")
    return 0


def split_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise TaskError("give at least one column name")
    return names


# --- evolve eval ------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    from evolve.config import ScorerConfig
    from evolve.scoring.scorer import Scorer

    path = Path(args.program)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ProgramError("unreadable", f"cannot read {path}: {exc.strerror or exc}") from None
    detect_api(text)  # a one-line error before any worker starts
    task = load_task(args.task)
    with Scorer(ScorerConfig(workers=1, timeout_s=args.timeout)) as scorer:
        evaluation = scorer.score(text, task, args.split)
        isolation = scorer.sandbox.layers
    if args.json:
        folds = len(task.folds(args.split))
        print(json.dumps({"program": str(path), "task": task.name, "isolation": isolation, "folds": folds, **evaluation.to_dict()}, indent=2))
    else:
        show_evaluation(task, path, evaluation)
        Console().print(f"isolation: {isolation}", highlight=False, style="dim")
    return 0 if evaluation.ok else 1


def show_evaluation(task, path: Path, evaluation) -> None:
    console = Console()
    m = evaluation.metrics
    status = "[green]ok[/green]" if evaluation.ok else f"[red]{evaluation.status}[/red]"
    folds = len(task.folds(evaluation.split))
    split = f"{evaluation.split} split" + (f", mean over {folds} folds" if folds > 1 else "")
    console.print(f"{path} on {task.name} ({split}): {status}, {evaluation.seconds:.2f} s")
    if evaluation.message:
        console.print(evaluation.message, markup=False, highlight=False)
    rows = [["all", f"{m.r2:.6f}", f"{m.nmse:.6f}", f"{m.nmae:.6f}", f"{m.combined_score:.6f}"]]
    if len(task.targets) > 1:
        for name, r2, nmse, nmae in zip(task.targets, m.r2_per_target, m.nmse_per_target, m.nmae_per_target):
            rows.append([name, f"{r2:.6f}", f"{nmse:.6f}", f"{nmae:.6f}", ""])
    print_table("metrics", ["target", "R²", "NMSE", "NMAE", "combined"], rows, console)
    if evaluation.params:
        shown = list(sorted(evaluation.params.items()))[:10]
        lines = [f"  {g}: {format_params(p)}" for g, p in shown]
        more = len(evaluation.params) - len(shown)
        console.print(f"fitted parameters ({evaluation.n_params} per group):", highlight=False)
        console.print("\n".join(lines) + (f"\n  … and {more} more groups" if more > 0 else ""), markup=False, highlight=False)


def format_params(values) -> str:
    if values is None:
        return "(not numeric)"
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


# --- evolve run -------------------------------------------------------------------------


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    base = run_config_from_dict(load_config_file(args.config)) if args.config else RunConfig()
    overrides = {
        "task": args.task,
        "iterations": args.iterations,
        "proposer": args.proposer,
        "edit_mode": args.edit_mode,
        "seed": args.seed,
        "seed_laws": tuple(args.seed_law) if args.seed_law else None,
        "budget_tokens": args.budget_tokens,
        "budget_usd": args.budget_usd,
        "run_dir": args.run_dir,
        "prompts_dir": args.prompts_dir,
        "replay": args.replay,
        "archive.islands": args.islands,
        "scorer.workers": args.workers,
        "scorer.timeout_s": args.timeout,
        "model.base_url": args.base_url,
        "model.temperature": args.temperature,
        "model.concurrency": args.concurrency,
    }
    config = replace_nested(base, overrides)
    if config.replay and config.seed is None:  # a replay needs the recorded run's seed to make the same requests
        config = dataclasses.replace(config, seed=recorded_seed(Path(config.replay)))
    if args.model:
        models = tuple(parse_model_flag(m) for m in args.model)
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, models=models))
    if not config.task and not args.resume:
        raise ConfigError("name a task: evolve run TASK (see `evolve tasks`)")
    if config.iterations < 0 or (config.archive.islands < 1):
        raise ConfigError("iterations must be >= 0 and islands >= 1")
    return config


def recorded_seed(run_dir: Path) -> int | None:
    from evolve.store.database import Archive

    with Archive.open(run_dir / "archive.db", readonly=True) as archive:
        return (archive.get_meta("config") or {}).get("seed")


def parse_model_flag(text: str) -> ModelSpec:
    """'NAME' or 'NAME:WEIGHT' (an ensemble is several --model flags)."""
    name, _, weight = text.rpartition(":")
    try:
        return ModelSpec(name=name, weight=float(weight)) if name else ModelSpec(name=text)
    except ValueError:  # a colon that is part of the name, as in 'qwen2.5:7b'
        return ModelSpec(name=text)


def cmd_run(args: argparse.Namespace) -> int:
    from evolve.loop import run_evolution
    from evolve.cli.progress import RunProgress

    config = run_config_from_args(args)
    progress = RunProgress(enabled=not args.quiet)
    summary = run_evolution(config, resume_dir=Path(args.resume) if args.resume else None, progress=progress)
    show_summary(summary)
    return 0


def show_summary(summary) -> None:
    console = Console()
    rows = []
    for record in summary.top:
        test = record.test
        rows.append([record.id, record.proposer, record.iteration, record.n_params, format_r2(record.r2), format_r2(test.metrics.r2 if test and test.ok else None if test is None else -1.0)])
    print_table(f"Top programs of {summary.run_dir} (test R² is for reporting; selection used validation only)", ["id", "proposer", "iteration", "params", "validation R²", "test R²"], rows, console)
    console.print(
        f"{summary.iterations} iterations, {summary.evaluations} programs ({summary.failures} failed) in {summary.seconds:.0f} s; {summary.stopped_reason}",
        highlight=False,
    )
    if summary.usage:
        console.print(f"tokens: {summary.usage.get('prompt_tokens', 0)} prompt + {summary.usage.get('completion_tokens', 0)} completion", highlight=False)
    if summary.best is not None:
        show_best_law(summary, console)


def show_best_law(summary, console: Console) -> None:
    """The winning law itself, next to the best seed it had to beat."""
    from rich.syntax import Syntax

    best = summary.best
    seeds = [r for r in summary.top if r.proposer == "seed"]
    against = f" (best seed in the top {len(summary.top)}: {seeds[0].r2:.4f})" if seeds and seeds[0] is not best else ""
    console.print(f"\nbest law: program {best.id}, validation R² {best.r2:.4f}{against}", highlight=False)
    if best.extra.get("law"):  # the offline proposer records its law as one line of math
        console.print(f"  {best.extra['law']}", highlight=False, markup=False)
    source = None if best.extra.get("law") else function_source(best.code, "scaling_law_func") or function_source(best.code, "law")
    if source:
        console.print(Syntax(source, "python", theme="ansi_dark", word_wrap=True))
    console.print(f"written to {summary.run_dir / 'best.py'}", highlight=False)


# --- the parser -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evolve", description="Discover scaling laws by evolving programs.")
    commands = parser.add_subparsers(dest="command", required=True)

    tasks = commands.add_parser("tasks", help="list the tasks, or make one from your CSV")
    tasks.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tasks.set_defaults(handler=cmd_tasks)
    tasks_commands = tasks.add_subparsers(dest="tasks_command")
    new = tasks_commands.add_parser("new", help="write a task folder from one CSV")
    new.add_argument("dir", help="the task folder to write")
    new.add_argument("--csv", required=True, help="the CSV with feature and target columns")
    new.add_argument("--features", required=True, help="comma-separated feature columns")
    new.add_argument("--targets", required=True, help="comma-separated target columns")
    new.add_argument("--group-column", help="column naming each row's group (default: one group)")
    new.add_argument("--test-largest", nargs=2, metavar=("COLUMN", "FRACTION"), help="hold out, per group, this fraction of rows with the largest COLUMN as the test split (default: first feature, 0.2)")
    new.add_argument("--description", help="one paragraph on the experiment, shown to the model")
    new.set_defaults(handler=cmd_tasks_new)

    evaluate = commands.add_parser("eval", help="score a program on a task split")
    evaluate.add_argument("program", help="a program file (fit_scaling_law/scaling_law_func or law())")
    evaluate.add_argument("--task", required=True, help="a task name or folder")
    evaluate.add_argument("--split", choices=SPLITS, default="validation", help="validation (ranking), test (reporting) or train (in-sample)")
    evaluate.add_argument("--timeout", type=float, default=120.0, help="seconds before the evaluation is stopped")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.set_defaults(handler=cmd_eval)

    run = commands.add_parser("run", help="evolve laws for a task (offline proposer without an API key)")
    run.add_argument("task", nargs="?", help="a task name or folder")
    run.add_argument("--resume", metavar="RUN", help="continue a stopped or killed run from its directory")
    run.add_argument("--config", help="a TOML file with run, [model], [archive] and [scorer] settings")
    run.add_argument("--iterations", type=int)
    run.add_argument("--proposer", choices=["auto", "llm", "offline"])
    run.add_argument("--model", action="append", help="model name, or NAME:WEIGHT; repeat for an ensemble")
    run.add_argument("--base-url", help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL)")
    run.add_argument("--temperature", type=float)
    run.add_argument("--concurrency", type=int, help="model requests in flight at once")
    run.add_argument("--edit-mode", choices=["diff", "full"])
    run.add_argument("--prompts-dir", help="a folder of Jinja2 templates (system.j2, user.j2) to use instead of the shipped prompts")
    run.add_argument("--seed-law", action="append", help="a seed law file (either API); repeat for several")
    run.add_argument("--islands", type=int)
    run.add_argument("--workers", type=int, help="programs scored in parallel")
    run.add_argument("--timeout", type=float, help="seconds per evaluation")
    run.add_argument("--budget-tokens", type=int, help="stop when this many tokens are spent")
    run.add_argument("--budget-usd", type=float, help="stop at this cost (needs model prices in --config)")
    run.add_argument("--seed", type=int, help="fixed random seed for a reproducible run")
    run.add_argument("--replay", metavar="RUN", help="answer model requests with the replies recorded in RUN (same settings and seed: the same run, no tokens spent)")
    run.add_argument("--run-dir", help="the run's directory (default archive/<task>-<timestamp>)")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    run.set_defaults(handler=cmd_run)

    register_inspection_commands(commands)
    return parser


def register_inspection_commands(commands) -> None:
    from evolve.cli.archive_cmd import add_commands

    add_commands(commands)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except user_errors() as exc:
        print(f"evolve: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("evolve: interrupted; resume with `evolve run --resume RUN`", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        print(f"evolve: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())

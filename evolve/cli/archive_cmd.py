"""Inspection commands: `evolve runs`, `evolve archive RUN ...` and `evolve report RUN`.

They open run databases read-only, so they never change a run and can look at one that
is still going. Output is a rich table on a terminal and JSON with --json; a missing
run, a file that is not a run database or an unknown program id is one line on stderr
(ArchiveError / TaskError, printed by evolve.cli.main) and exit status 2.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.syntax import Syntax

from evolve.store.database import Archive, ArchiveError
from evolve.cli.main import format_params, format_r2, print_table
from evolve.records import ProgramRecord
from evolve.tasks import Task, load_task

DATABASE_NAME = "archive.db"


# ---------------------------------------------------------------- opening runs


def database_path(run: str | Path) -> Path:
    """RUN/archive.db for a run directory (a path to the database itself is accepted too)."""
    path = Path(run)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ArchiveError(f"{path}: no such run directory")
    if not (path / DATABASE_NAME).is_file():
        raise ArchiveError(f"{path}: not a run directory (no {DATABASE_NAME})")
    return path / DATABASE_NAME


def open_run(run: str | Path) -> Archive:
    return Archive.open(database_path(run), readonly=True)


def run_task(archive: Archive) -> Task:
    """The task the run evolved laws for, from its stored settings."""
    config = archive.get_meta("config") or {}
    name = config.get("task") or archive.get_meta("task")
    if not name:
        raise ArchiveError(f"{archive.path}: the run does not record its task")
    return load_task(name)


def run_name(archive: Archive) -> str:
    return archive.path.resolve().parent.name


# ---------------------------------------------------------------- plain data


def r2_or_none(evaluation) -> float | None:
    return evaluation.metrics.r2 if evaluation is not None and evaluation.ok else None


def record_summary(record: ProgramRecord) -> dict:
    """One program as plain data for --json (code and fitted parameters left to `show`)."""
    return {
        "id": record.id,
        "island": record.island,
        "iteration": record.iteration,
        "parent_id": record.parent_id,
        "proposer": record.proposer,
        "model": record.model,
        "status": record.validation.status,
        "validation_r2": r2_or_none(record.validation),
        "test_r2": r2_or_none(record.test),
        "n_params": record.n_params,
        "complexity": record.complexity,
        "cell": list(record.cell) if record.cell else None,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "explanation": record.explanation,
        "message": record.validation.message,
    }


def record_details(record: ProgramRecord) -> dict:
    return {
        **record_summary(record),
        "code": record.code,
        "validation": record.validation.to_dict(),
        "test": record.test.to_dict() if record.test is not None else None,
        "edit_mode": record.edit_mode,
        "created_at": record.created_at,
        "extra": record.extra,
    }


def run_overview(directory: Path, database: Path) -> dict:
    """One line of `evolve runs`: what a run is, how far it got and what it found."""
    try:
        archive = Archive.open(database, readonly=True)
    except ArchiveError as exc:
        return {"run": str(directory), "error": str(exc)}
    with archive:
        best = archive.best()
        usage = archive.get_meta("usage") or tokens_of(archive.programs(order="id"))
        config = archive.get_meta("config") or {}
        return {
            "run": str(directory),
            "task": archive.get_meta("task") or config.get("task"),
            "started_at": archive.get_meta("started_at"),
            "finished_at": archive.get_meta("finished_at"),
            "status": archive.get_meta("status"),
            "iterations": archive.get_meta("iteration"),
            "planned_iterations": config.get("iterations"),
            "programs": archive.count(),
            "best_id": best.id if best else None,
            "best_validation_r2": best.r2 if best else None,
            "best_test_r2": r2_or_none(best.test) if best else None,
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
            "cost_usd": usage.get("cost_usd"),
        }


def tokens_of(records: list[ProgramRecord]) -> dict:
    """Token totals summed over the programs, for runs that stored no usage record."""
    return {
        "prompt_tokens": sum(r.prompt_tokens for r in records),
        "completion_tokens": sum(r.completion_tokens for r in records),
    }


def find_runs(directory: Path) -> list[tuple[Path, Path]]:
    """(run directory, database) for every archive.db under `directory`, sorted by path."""
    if not directory.is_dir():
        raise ArchiveError(f"{directory}: no such directory")
    found = set(directory.rglob(DATABASE_NAME)) | set(directory.glob(f"*/{DATABASE_NAME}"))  # glob follows linked runs
    return [(db.parent, db) for db in sorted(found) if db.is_file()]


def relative_name(run: Path, directory: Path) -> str:
    """A run's path below --dir, which is what tells runs apart in a narrow table."""
    try:
        return str(run.relative_to(directory)) if run != directory else run.name
    except ValueError:
        return str(run)


def format_time(stamp: float | None) -> str:
    return "—" if not stamp else datetime.fromtimestamp(float(stamp)).strftime("%Y-%m-%d %H:%M")


def format_tokens(prompt: int, completion: int) -> str:
    total = int(prompt or 0) + int(completion or 0)
    return f"{total:,}" if total else "0"


def pick(records: list[ProgramRecord], limit: int | None) -> list[ProgramRecord]:
    return records if limit is None else records[: max(0, limit)]


# ---------------------------------------------------------------- commands


def cmd_runs(args: argparse.Namespace) -> int:
    overviews = [run_overview(d, db) for d, db in find_runs(Path(args.dir))]
    if args.json:
        print(json.dumps(overviews, indent=2))
        return 0
    if not overviews:
        print(f"no runs under {args.dir} (a run is a directory with {DATABASE_NAME})")
        return 0
    rows = []
    for o in overviews:
        name = relative_name(Path(o["run"]), Path(args.dir))
        if "error" in o:
            rows.append([name, "—", "—", f"unreadable: {o['error']}", "—", "—", "—", "—"])
            continue
        iterations = f"{o['iterations']}/{o['planned_iterations']}" if o["planned_iterations"] is not None else o["iterations"]
        rows.append([name, o["task"], format_time(o["started_at"]), o["status"], iterations, format_r2(o["best_validation_r2"]), format_r2(o["best_test_r2"]), format_tokens(o["prompt_tokens"], o["completion_tokens"])])
    print_table(f"Runs under {args.dir}", ["run", "task", "started", "status", "iterations", "best val R²", "its test R²", "tokens"], rows)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with open_run(args.run) as archive:
        failed = True if args.failed else None
        records = archive.programs(island=args.island, failed=failed, order="r2", limit=args.top)
    if args.csv:
        from evolve.report.export import write_csv

        write_csv(records, Path(args.csv))
        print(f"wrote {len(records)} programs to {args.csv}", file=sys.stderr)
        if not args.json:
            return 0
    if args.json:
        print(json.dumps([record_summary(r) for r in records], indent=2))
        return 0
    rows = [
        [r.id, r.island, r.iteration, r.parent_id if r.parent_id is not None else "—", r.proposer, r.validation.status,
         format_r2(r2_or_none(r.validation)), format_r2(r2_or_none(r.test)), r.n_params if r.n_params is not None else "—",
         r.complexity, format_tokens(r.prompt_tokens, r.completion_tokens)]
        for r in records
    ]  # fmt: skip
    print_table(f"Programs of {args.run} (best validation R² first)", ["id", "island", "iter", "parent", "proposer", "status", "val R²", "test R²", "params", "size", "tokens"], rows)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with open_run(args.run) as archive:
        record = archive.get(args.id)
        task = run_task(archive) if not args.no_formula or args.json else None
    formula = None
    if not args.no_formula and task is not None:
        from evolve.scoring.formula_jobs import formulas_for

        formula = formulas_for([record], task).get(record.id)
    if args.json:
        print(json.dumps({**record_details(record), "formula": formula.to_dict() if formula else None}, indent=2))
        return 0
    show_record(record, formula, args.no_formula)
    return 0


def show_record(record: ProgramRecord, formula, formula_skipped: bool) -> None:
    from evolve.report.export import params_source

    console = Console()
    v = record.validation
    console.print(f"[bold]program {record.id}[/bold]: island {record.island}, iteration {record.iteration}, parent {record.parent_id if record.parent_id is not None else '— (seed)'}, {record.proposer}{' (' + record.model + ')' if record.model else ''}", highlight=False)
    status = "[green]ok[/green]" if v.ok else f"[red]{v.status}[/red]"
    console.print(f"status {status}; validation R² {format_r2(r2_or_none(v))}, NMSE {v.metrics.nmse:.6g}, NMAE {v.metrics.nmae:.6g}; test R² {format_r2(r2_or_none(record.test)) if record.test else 'not scored'}", highlight=False)
    console.print(f"{record.n_params if record.n_params is not None else '—'} fitted parameters per group; size {record.complexity} AST nodes; cell {record.cell}; tokens {record.prompt_tokens} prompt + {record.completion_tokens} completion", highlight=False)
    if record.explanation:
        console.print(f"explanation: {record.explanation}", markup=False, highlight=False)
    if v.message:
        console.print(f"message: {v.message}", markup=False, highlight=False)
    if formula is not None:
        console.print(f"formula{'' if formula.verified else ' (not checked on data)'}:", highlight=False)
        for expression, latex in zip(formula.expressions, formula.latex):
            console.print(f"  {expression}\n  LaTeX: {latex}", markup=False, highlight=False)
    elif record.ok:
        console.print("formula: skipped (--no-formula)" if formula_skipped else "formula: could not be recovered from the code", highlight=False)
    source, evaluation = params_source(record)
    if evaluation.params:
        rows = [[group, format_params(values)] for group, values in sorted(evaluation.params.items())]
        print_table(f"fitted parameters per group (from the {source})", ["group", "parameters"], rows, console)
    console.print(Syntax(record.code or "# (no code: the proposal failed)", "python", line_numbers=True, word_wrap=True))


def cmd_diff(args: argparse.Namespace) -> int:
    with open_run(args.run) as archive:
        first, second = archive.get(args.id1), archive.get(args.id2)
    lines = difflib.unified_diff(
        first.code.splitlines(keepends=True),
        second.code.splitlines(keepends=True),
        fromfile=f"program {first.id} (validation R² {format_r2(r2_or_none(first.validation))})",
        tofile=f"program {second.id} (validation R² {format_r2(r2_or_none(second.validation))})",
    )
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    if sys.stdout.isatty() and text:
        Console().print(Syntax(text, "diff"))
    else:
        sys.stdout.write(text)
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    with open_run(args.run) as archive:
        chain = archive.lineage(args.id)
    if args.json:
        print(json.dumps([record_summary(r) for r in chain], indent=2))
        return 0
    rows = []
    for record, parent in zip(chain, chain[1:] + [None]):
        gain = record.r2 - parent.r2 if parent is not None and record.ok and parent.ok else None
        rows.append([record.id, record.iteration, record.island, record.proposer, record.validation.status, format_r2(r2_or_none(record.validation)), "—" if gain is None else f"{gain:+.4f}", record.n_params if record.n_params is not None else "—", shorten(record.explanation)])
    print_table(f"Lineage of program {args.id}, back to its seed", ["id", "iter", "island", "proposer", "status", "val R²", "gain", "params", "explanation"], rows)
    return 0


def shorten(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_export(args: argparse.Namespace) -> int:
    from evolve.report.export import export_program

    with open_run(args.run) as archive:
        record = archive.get(args.id)
        task = run_task(archive)
        text = export_program(record, task, run_name(archive), args.api)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote program {record.id} ({args.api} API) to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    from evolve.report.html import pareto_front

    with open_run(args.run) as archive:
        front = pareto_front(archive.programs(failed=False, order="id"))
    if args.json:
        print(json.dumps([record_summary(r) for r in front], indent=2))
        return 0
    rows = [[r.n_params, format_r2(r.r2), format_r2(r2_or_none(r.test)), r.id, r.iteration, r.proposer, r.complexity] for r in front]
    print_table(f"Pareto front of {args.run}: validation R² against fitted parameters per group", ["params", "val R²", "test R²", "id", "iter", "proposer", "size"], rows)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from evolve.report.html import write_report

    output = Path(args.output) if args.output else database_path(args.run).parent / "report.html"
    write_report(Path(args.run), output, run_code=not args.no_exec)
    print(f"wrote {output}")
    return 0


# ---------------------------------------------------------------- the parsers


def add_commands(commands) -> None:
    """Register runs, archive and report on the `evolve` subparsers."""
    runs = commands.add_parser("runs", help="list the runs under a directory")
    runs.add_argument("--dir", default="archive", help="where to look for runs (default: archive)")
    runs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    runs.set_defaults(handler=cmd_runs)

    archive = commands.add_parser("archive", help="inspect one run: list, show, diff, lineage, export, pareto")
    archive.add_argument("run", help="a run directory (holding archive.db)")
    sub = archive.add_subparsers(dest="archive_command", required=True)
    add_archive_commands(sub)

    report = commands.add_parser("report", help="write a self-contained HTML report of a run")
    report.add_argument("run", help="a run directory (holding archive.db)")
    report.add_argument("-o", "--output", help="the HTML file to write (default: RUN/report.html)")
    report.add_argument("--no-exec", action="store_true", help="do not run any program (no fit plots, no formulas)")
    report.set_defaults(handler=cmd_report)


def add_archive_commands(sub) -> None:
    listing = sub.add_parser("list", help="programs, best validation R² first")
    listing.add_argument("--top", type=int, help="only the N best")
    listing.add_argument("--island", type=int, help="only this island")
    listing.add_argument("--failed", action="store_true", help="only failed programs")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.add_argument("--csv", metavar="FILE", help="also write the listed programs as CSV")
    listing.set_defaults(handler=cmd_list)

    show = sub.add_parser("show", help="one program: code, metrics, parent, fitted parameters, formula")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    show.add_argument("--no-formula", action="store_true", help="do not run the program to recover its formula")
    show.set_defaults(handler=cmd_show)

    diff = sub.add_parser("diff", help="unified diff of two programs' code")
    diff.add_argument("id1", type=int)
    diff.add_argument("id2", type=int)
    diff.set_defaults(handler=cmd_diff)

    lineage = sub.add_parser("lineage", help="a program's ancestry back to its seed")
    lineage.add_argument("id", type=int)
    lineage.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lineage.set_defaults(handler=cmd_lineage)

    export = sub.add_parser("export", help="a standalone program file with its fitted parameters")
    export.add_argument("id", type=int)
    export.add_argument("--api", choices=["fit", "law"], default="fit", help="fit: fit_scaling_law/scaling_law_func; law: law(input_data, group) with the fitted parameters embedded")
    export.add_argument("-o", "--output", help="the file to write (default: standard output)")
    export.set_defaults(handler=cmd_export)

    pareto = sub.add_parser("pareto", help="non-dominated programs: validation R² against fitted parameters")
    pareto.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pareto.set_defaults(handler=cmd_pareto)

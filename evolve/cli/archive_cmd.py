"""Inspection commands: `evolve runs`, `evolve archive RUN ...` and `evolve report RUN`.

They open run databases read-only, so they never change a run and can look at one that
is still going. Output is a rich table on a terminal and JSON with --json; a missing
run, a file that is not a run database or an unknown program id is one line on stderr
(ArchiveError / TaskError, printed by evolve.cli.main) and exit status 2.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax

from evolve.cli.display import console as display_console, format_params, format_r2, format_tokens, print_code, print_table, r2_or_none, safe_text
from evolve.extrapolation import stored_warnings, warning_lines
from evolve.records import ProgramRecord
from evolve.text import format_timestamp, one_line, strict_json
from evolve.store.rundir import DATABASE_NAME, database_path, find_runs, open_read_only, relative_name, run_name, run_overview, run_task



# ---------------------------------------------------------------- opening runs


# ---------------------------------------------------------------- plain data


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
        "node": record.validation.node,
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


def pick(records: list[ProgramRecord], limit: int | None) -> list[ProgramRecord]:
    return records if limit is None else records[: max(0, limit)]


# ---------------------------------------------------------------- commands


def cmd_runs(args: argparse.Namespace) -> int:
    overviews = [run_overview(d, db) for d, db in find_runs(Path(args.dir))]
    if args.json:
        print(strict_json(overviews))
        return 0
    if not overviews:
        print(f"no runs under {args.dir} (a run is a directory with {DATABASE_NAME})")
        return 0
    rows = []
    for o in overviews:
        name = relative_name(Path(o["run"]), Path(args.dir))
        if "error" in o:
            rows.append([name, "—", "—", f"unreadable: {o['error']}", "—", "—", "—", "—", "—", "—"])
            continue
        iterations = f"{o['iterations']}/{o['planned_iterations']}" if o["planned_iterations"] is not None else o["iterations"]
        law = "—" if o["law_id"] is None else f"{o['law_id']}{'' if o['law_chosen'] else '*'}"
        rows.append([name, o["task"], format_timestamp(o["started_at"]), o["status"], iterations, law,
                     format_r2(o["law_validation_r2"]), format_r2(o["law_test_r2"]), format_r2(o["best_validation_r2"]), format_tokens(o["prompt_tokens"], o["completion_tokens"])])
    print_table(f"Runs under {args.dir} (law: the one the run returned, its best.py)", ["run", "task", "started", "status", "iterations", "law", "its val R²", "its test R²", "best val R²", "tokens"], rows)
    if any(o.get("law_chosen") is False and o.get("law_id") is not None for o in overviews):
        print("* not chosen yet (the run stopped, or is still going, before its end): the best by validation R²; `evolve run --resume RUN` finishes it")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with open_read_only(args.run) as archive:
        failed = True if args.failed else None
        records = archive.programs(island=args.island, failed=failed, order="r2", limit=args.top)
    if args.csv:
        from evolve.report.export import write_csv

        write_csv(records, Path(args.csv))
        print(f"wrote {len(records)} programs to {args.csv}", file=sys.stderr)
        if not args.json:
            return 0
    if args.json:
        print(strict_json([record_summary(r) for r in records]))
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
    with open_read_only(args.run) as archive:
        record = archive.get(args.id)
        task = run_task(archive) if not args.no_formula or args.json else None
        beyond = stored_warnings(archive, record.id)
    formula = None
    if not args.no_formula and task is not None:
        from evolve.report.formula import formulas_of_records

        formula = formulas_of_records([record], task).get(record.id)
    if args.json:
        print(strict_json({**record_details(record), "formula": formula.to_dict() if formula else None, "extrapolation_warnings": beyond}))
        return 0
    show_record(record, formula, args.no_formula, task, beyond)
    return 0


def show_record(record: ProgramRecord, formula, formula_skipped: bool, task=None, beyond: list[str] | None = None) -> None:
    """`beyond`: the run's check of its chosen law beyond the data (None: not checked)."""
    from evolve.report.export import params_source

    console = display_console()
    v = record.validation
    console.print(f"[bold]program {record.id}[/bold]: island {record.island}, iteration {record.iteration}, parent {record.parent_id if record.parent_id is not None else ('— (seed)' if record.proposer == 'seed' else '— (written fresh)')}, {escape(safe_text(record.proposer))}{' (' + escape(safe_text(record.model)) + ')' if record.model else ''}", highlight=False)
    status = "[green]ok[/green]" if v.ok else f"[red]{v.status}[/red]"
    console.print(f"status {status}; validation R² {format_r2(r2_or_none(v))}, NMSE {v.metrics.nmse:.6g}, NMAE {v.metrics.nmae:.6g}; test R² {format_r2(r2_or_none(record.test)) if record.test else 'not scored'}", highlight=False)
    console.print(f"{record.n_params if record.n_params is not None else '—'} fitted parameters per group; size {record.complexity} AST nodes; cell {record.cell}; tokens {record.prompt_tokens} prompt + {record.completion_tokens} completion", highlight=False)
    if v.node:
        console.print(f"scored on node {safe_text(v.node)}", markup=False, highlight=False)
    if record.explanation:
        console.print(f"proposer's note: {safe_text(record.explanation)}", markup=False, highlight=False)
    if v.message:
        console.print(f"message: {safe_text(v.message)}", markup=False, highlight=False)
    if formula is not None:
        others = len(record.test.params if record.test is not None and record.test.params else record.validation.params) - 1
        console.print(f"law of group {safe_text(formula.group)} with its fitted constants (checked against the program on the group's rows; numbers rounded for reading)"
                      + (f"; the other {others} group(s) have their own constants, below:" if others > 0 else ":"), markup=False, highlight=False)
        for line, latex in zip(formula.lines(task.targets if task is not None else ("y",) * len(formula.text)), formula.latex):
            console.print(f"  {safe_text(line)}\n  LaTeX: {safe_text(latex)}", markup=False, highlight=False, soft_wrap=True)  # one line each: copyable
    elif record.ok:
        console.print("formula: skipped (--no-formula)" if formula_skipped else "formula: could not be recovered from the code", highlight=False)
    source, evaluation = params_source(record)
    if evaluation.params:
        rows = [[group, format_params(values)] for group, values in sorted(evaluation.params.items())]
        print_table(f"fitted parameters per group (from the {source})", ["group", "parameters"], rows, console)
    if record.test is not None and record.test.by_group:
        show_groups(record.test.by_group, console)
    if beyond is not None:
        lines = warning_lines(beyond) or ["beyond the data: the law keeps train's trends along every scale feature (checked when the run ended)"]
        console.print("\n".join(safe_text(line, keep_newlines=False) for line in lines), markup=False, highlight=False)
    print_code(console, safe_text(record.code, limit=0) or "# (no code: the proposal failed)", line_numbers=True)
    show_exchange(record, console)


GROUPS_SHOWN = 20  # test rows per group, worst first; the rest are counted (all in --json)


def show_groups(by_group: dict[str, dict], console: Console) -> None:
    """Test per group, worst relative error first: the pooled R² hides one group gone wrong."""
    from evolve.metrics import worst_first

    order = worst_first(by_group)
    rows = [[group, scores.get("rows", "—"), format_r2(scores.get("r2")) if scores.get("r2") is not None else "—",
             percent(scores.get("mean_relative_error")), percent(scores.get("max_relative_error"))] for group, scores in order[:GROUPS_SHOWN]]
    more = f"; {len(order) - GROUPS_SHOWN} more in --json" if len(order) > GROUPS_SHOWN else ""
    print_table(f"test per group, worst first (R² of a group's own rows needs 3 or more{more})",
                ["group", "test rows", "R²", "mean |error|/|y|", "largest |error|/|y|"], rows, console)


def percent(value) -> str:
    return f"{100 * value:.3g}%" if isinstance(value, (int, float)) else "—"


def show_exchange(record: ProgramRecord, console: Console) -> None:
    """The prompt a model was sent and the reply it gave, so a run can be audited."""
    prompt = record.extra.get("prompt")
    if prompt:
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
        for message in messages:
            role = message.get("role", "?") if isinstance(message, dict) else "?"
            content = message.get("content", "") if isinstance(message, dict) else str(message)
            console.print(f"[bold]prompt ({escape(safe_text(role))}):[/bold]")
            console.print(safe_text(content, limit=0), markup=False, highlight=False)
    reply = record.extra.get("reply")
    if reply is not None:
        console.print("[bold]reply:[/bold]")
        console.print(safe_text(reply, limit=0) or "(empty reply)", markup=False, highlight=False)


def cmd_diff(args: argparse.Namespace) -> int:
    with open_read_only(args.run) as archive:
        first, second = archive.get(args.id1), archive.get(args.id2)
    lines = difflib.unified_diff(  # program text: controls and escapes made harmless first
        safe_text(first.code, limit=0).splitlines(keepends=True),
        safe_text(second.code, limit=0).splitlines(keepends=True),
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
    with open_read_only(args.run) as archive:
        chain = archive.lineage(args.id)
    if args.json:
        print(strict_json([record_summary(r) for r in chain]))
        return 0
    rows = []
    for record, parent in zip(chain, chain[1:] + [None]):
        gain = record.r2 - parent.r2 if parent is not None and record.ok and parent.ok else None
        rows.append([record.id, record.iteration, record.island, record.proposer, record.validation.status, format_r2(r2_or_none(record.validation)), "—" if gain is None else f"{gain:+.4f}", record.n_params if record.n_params is not None else "—", one_line(safe_text(record.explanation))])  # whole: the table folds it
    print_table(f"Lineage of program {args.id}, back to its seed", ["id", "iter", "island", "proposer", "status", "val R²", "gain", "params", "explanation"], rows)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from evolve.report.export import export_program

    with open_read_only(args.run) as archive:
        record = archive.get(args.id)
        task = run_task(archive)
        text = export_program(record, task, run_name(archive), args.api)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote program {record.id} ({args.api} API) to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(safe_text(text, limit=0))  # program-written: no escape sequence reaches a terminal
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    from evolve.report.analysis import pareto_front

    with open_read_only(args.run) as archive:
        front = pareto_front(archive.programs(failed=False, order="id"))
    if args.json:
        print(strict_json([record_summary(r) for r in front]))
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


# ---------------------------------------------------------------- the commands


def namespace(ctx: click.Context, **values) -> argparse.Namespace:
    return argparse.Namespace(run=ctx.obj, **values)


@click.command("runs", help="List the runs under a directory.")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--dir", "dir_option", type=click.Path(path_type=Path), help="the same as DIRECTORY (default: archive)")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def runs_command(directory: Path | None, dir_option: Path | None, as_json: bool) -> int:
    return cmd_runs(argparse.Namespace(dir=str(directory or dir_option or "archive"), json=as_json))


@click.group("archive", help="Inspect one run: list, show, diff, lineage, export, pareto.")
@click.argument("run", type=click.Path(path_type=Path))
@click.pass_context
def archive_group(ctx: click.Context, run: Path) -> None:
    ctx.obj = str(run)


@archive_group.command("list", help="Programs, best validation R² first.")
@click.option("--top", type=int, help="only the N best")
@click.option("--island", type=int, help="only this island")
@click.option("--failed", is_flag=True, help="only failed programs")
@click.option("--json", "json_", is_flag=True, help="print JSON instead of a table")
@click.option("--csv", metavar="FILE", help="also write the listed programs as CSV")
@click.pass_context
def list_command(ctx, top, island, failed, json_, csv) -> int:
    return cmd_list(namespace(ctx, top=top, island=island, failed=failed, json=json_, csv=csv))


@archive_group.command("show", help="One program: code, metrics, parent, fitted parameters, formula, prompt and reply.")
@click.argument("id", type=int)
@click.option("--json", "json_", is_flag=True, help="print JSON instead of text")
@click.option("--no-formula", is_flag=True, help="do not run the program to recover its formula")
@click.pass_context
def show_command(ctx, id, json_, no_formula) -> int:
    return cmd_show(namespace(ctx, id=id, json=json_, no_formula=no_formula))


@archive_group.command("diff", help="Unified diff of two programs' code.")
@click.argument("id1", type=int)
@click.argument("id2", type=int)
@click.pass_context
def diff_command(ctx, id1, id2) -> int:
    return cmd_diff(namespace(ctx, id1=id1, id2=id2))


@archive_group.command("lineage", help="A program's ancestry back to its seed.")
@click.argument("id", type=int)
@click.option("--json", "json_", is_flag=True, help="print JSON instead of a table")
@click.pass_context
def lineage_command(ctx, id, json_) -> int:
    return cmd_lineage(namespace(ctx, id=id, json=json_))


@archive_group.command("export", help="A standalone program file with its fitted parameters.")
@click.argument("id", type=int)
@click.option("--api", type=click.Choice(["fit", "law"]), default="fit", show_default=True,
              help="fit: fit_scaling_law/scaling_law_func; law: law(input_data, group) with the fitted parameters embedded")
@click.option("-o", "--output", help="the file to write (default: standard output)")
@click.pass_context
def export_command(ctx, id, api, output) -> int:
    return cmd_export(namespace(ctx, id=id, api=api, output=output))


@archive_group.command("pareto", help="Non-dominated programs: validation R² against fitted parameters.")
@click.option("--json", "json_", is_flag=True, help="print JSON instead of a table")
@click.pass_context
def pareto_command(ctx, json_) -> int:
    return cmd_pareto(namespace(ctx, json=json_))


@click.command("report", help="Write a self-contained HTML report of a run.")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("-o", "--output", help="the HTML file to write (default: RUN/report.html)")
@click.option("--no-exec", is_flag=True, help="do not run any program (no fit plots, no formulas)")
def report_command(run, output, no_exec) -> int:
    return cmd_report(argparse.Namespace(run=str(run), output=output, no_exec=no_exec))

"""`evolve tasks`: list the tasks; `evolve tasks new`: make one from your CSV."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from evolve.cli.display import print_table, safe_text
from evolve.tasks import SCALE_SPAN, TaskError, create_task_folder, load_task, read_csv_records, resolve_task_dir, shipped_task_names


def validation_cell(summary: dict) -> str:
    """Held-out rows of the first validation fold, and how many folds there are."""
    folds = summary["validation_folds"]
    return f"{summary['validation_rows']}" + (f" ({folds} folds)" if folds > 1 else "")


COLUMNS = ["task", "features → targets", "groups", "train", "validation (of train)", "test", "cap"]


def summary_row(s: dict) -> list:
    return [s["name"], f"{', '.join(s['features'])} → {', '.join(s['targets'])}", s["groups"], s["train_rows"],
            validation_cell(s), s["test_rows"], s["param_cap"] or "none"]


def user_task_summaries(folder: Path) -> tuple[list[dict], list[str]]:
    """The task folders directly inside `folder` (what `evolve tasks new` writes), summarized;
    and one line for each that does not load, so a broken folder is named, not hidden."""
    summaries, broken = [], []
    shipped = {resolve_task_dir(name).resolve() for name in shipped_task_names()}
    for toml in sorted(folder.glob("*/task.toml")):
        if toml.parent.resolve() in shipped:  # run from the shipped tasks' own folder: listed once, above
            continue
        try:
            summary = load_task(toml.parent).summary()
        except TaskError as error:
            broken.append(f"{toml.parent}: {error}")
            continue
        summaries.append({**summary, "path": str(toml.parent)})
    return summaries, broken


@click.group("tasks", invoke_without_command=True,
             help="List the shipped tasks and the task folders in DIR (default: the current folder), or make one from your CSV (tasks new).")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.option("--dir", "folder", type=click.Path(path_type=Path, file_okay=False), default=".", show_default=True,
              help="where to look for your task folders")
@click.pass_context
def tasks_command(ctx: click.Context, as_json: bool, folder: Path) -> int | None:
    if ctx.invoked_subcommand is not None:
        return None
    if not folder.is_dir():
        raise TaskError(f"--dir {folder}: no such folder")
    shipped = [load_task(name).summary() for name in shipped_task_names()]
    mine, broken = user_task_summaries(folder)
    if as_json:
        click.echo(json.dumps(shipped + mine, indent=2))
        return 0
    print_table("SLDBench tasks", COLUMNS, [summary_row(s) for s in shipped])
    if mine:
        print_table(f"Your tasks in {folder} (run one with: evolve run FOLDER)", COLUMNS,
                    [summary_row({**s, "name": s["path"]}) for s in mine])
    for line in broken:
        click.echo(f"not a usable task: {line}", err=True)
    return 0


def split_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise TaskError("give at least one column name")
    return names


def parse_fraction(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TaskError(f"{flag}: the fraction must be a number between 0 and 1, not {text!r}") from None
    if not 0 < value < 1:
        raise TaskError(f"{flag}: the fraction must be between 0 and 1, not {text}")
    return value


@tasks_command.command("new", help="Write a task folder from one CSV.")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--csv", "csv_path", required=True, type=click.Path(path_type=Path), help="the CSV with feature and target columns")
@click.option("--features", required=True, help="comma-separated feature columns")
@click.option("--targets", required=True, help="comma-separated target columns")
@click.option("--group-column", help="column naming each row's group (default: one group)")
@click.option("--test-largest", nargs=2, metavar="COLUMN FRACTION",
              help="per group, hold out this fraction of rows with the largest COLUMN as the test split; COLUMN is any numeric column or a product such as params*tokens (default: first feature, 0.2)")
@click.option("--param-cap", type=click.IntRange(min=1), help="most fitted parameters per group a law may use (default: none)")
@click.option("--validation", "validation_rule", metavar="auto|FRACTION[:FOLDS]", default="auto", show_default=True,
              help="how laws are validated: auto (chosen from train alone at run time) or a held-out fraction of the largest rows and a fold count")
@click.option("--description", help="one paragraph on the experiment, shown to the model")
@click.option("--drop-missing", is_flag=True, help="leave out rows with an empty cell in a column used (default: refuse them)")
def tasks_new_command(folder: Path, csv_path: Path, features: str, targets: str, group_column: str | None,
                      test_largest: tuple[str, str] | None, param_cap: int | None, validation_rule: str, description: str | None,
                      drop_missing: bool) -> int:
    column, fraction = (test_largest[0], parse_fraction(test_largest[1], "--test-largest")) if test_largest else (None, 0.2)
    task = create_task_folder(
        folder, csv_path, split_names(features), split_names(targets),
        group_column=group_column, test_column=column, test_fraction=fraction,
        description=description or "", param_cap=param_cap, validation=parse_validation(validation_rule),
        drop_missing=drop_missing,
    )
    s = task.summary()
    dropped = len(read_csv_records(csv_path)[1]) - len(task.train) - len(task.test) if drop_missing else 0
    note = f"; {dropped} row(s) with an empty cell left out" if dropped else ""
    folds = f" by the first of {s['validation_folds']} folds" if s["validation_folds"] > 1 else ""
    click.echo(f"wrote task {task.path}: {s['groups']} group(s), {s['train_rows']} train rows ({s['validation_rows']} of them held out "
               f"for validation{folds}), {s['test_rows']} test rows{note}")
    if not test_largest:
        click.echo(f"note: test is the largest {fraction:.0%} of {split_names(features)[0]} per group (the first feature; "
                   "--test-largest COLUMN FRACTION chooses, e.g. params*tokens for compute)", err=True)
    for line in suspicious_feature_values(task):
        click.echo(f"note: {safe_text(line, keep_newlines=False)}", err=True)  # the names are the CSV's
    share = len(task.test) / max(1, len(task.train) + len(task.test))
    if abs(share - fraction) > max(0.05, 0.25 * fraction):
        click.echo(f"note: test is {share:.0%} of the rows, not the {fraction:.0%} asked: rows that share a value of "
                   f"{column or split_names(features)[0]} go to the same side (replicates, a grid of few scales), "
                   "and every group keeps two rows to fit on", err=True)
    return 0


def suspicious_feature_values(task) -> list[str]:
    """Features that span scales (positive values over more than a factor of 20) yet have a
    few rows at zero or below: likely a typo or a missing value written as 0, and a power
    of the feature (every generic seed law) cannot be fitted through such a row. And
    features with one value in every train row, whose effect no fit can see."""
    X = np.concatenate([task.train.X, task.test.X])
    groups = task.train.group_names()
    found = []
    for j, name in enumerate(task.features):
        column = X[:, j]
        positive, bad = column[column > 0], int((column <= 0).sum())
        if bad and bad <= 0.05 * len(column) and len(positive) and positive.max() / positive.min() > SCALE_SPAN:
            found.append(f"{bad} row(s) have {name} <= 0 ({name} otherwise spans {positive.min():.3g} to {positive.max():.3g}): "
                         "powers of it cannot fit them; check those rows")
        fitted = task.train.X[:, j]
        if np.all(fitted == fitted[0]):
            found.append(f"{name} is {fitted[0]:.6g} in every train row: no law can learn its effect from them "
                         "(leave it out of --features, or predict only at that value)")
        elif len(groups) > 1 and all(len(np.unique(fitted[task.train.groups == g])) == 1 for g in groups):
            found.append(f"{name} has one value in each group: each group's own fit cannot learn its effect "
                         "(a group column naming the model holds the model size fixed within a group)")
    return found + data_shape_notes(task)


def data_shape_notes(task) -> list[str]:
    """Rows that repeat another exactly (every feature, target and group: copies, or true
    replicates), and validation folds that leave a group fewer rows to fit on than the
    generic power law's parameters (laws larger than that cannot be judged there)."""
    found = []
    rows = np.column_stack([task.train.X, task.train.y.reshape(len(task.train.y), -1)])
    keys = [(g, *row) for g, row in zip(task.train.groups.tolist(), rows.tolist())]
    repeats = len(keys) - len(set(keys))
    if repeats:
        found.append(f"{repeats} train row(s) repeat another exactly (features, targets and group): they count as "
                     "replicates of one run; remove them if they are copies")
    generic = 1 + 2 * len(task.features)  # c + Σ a_i x_i^(-b_i)
    fitted = [int((fit.groups == g).sum()) for fit, held in task.validation_folds() for g in set(held.groups.tolist())]
    fewest = min((n for n in fitted if n), default=None)  # a group with no fit rows in a fold is not judged there
    if fewest is not None and fewest < generic:
        found.append(f"validation fits a group on as few as {fewest} row(s), fewer than the {generic} parameters of the "
                     "generic power law: laws that large cannot be judged (more rows, or a smaller --validation fraction)")
    return found


def parse_validation(text: str) -> tuple[float, int] | None:
    """None for auto; else (fraction, folds) from 'FRACTION' or 'FRACTION:FOLDS'."""
    if text.strip().lower() == "auto":
        return None
    fraction_text, _, folds_text = text.partition(":")
    fraction = parse_fraction(fraction_text, "--validation")
    try:
        folds = int(folds_text) if folds_text else 1
    except ValueError:
        raise TaskError(f"--validation: the fold count must be a whole number, not {folds_text!r}") from None
    if not 1 <= folds <= 5:
        raise TaskError("--validation: the fold count must be between 1 and 5")
    return fraction, folds

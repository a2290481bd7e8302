"""`evolve predict` and `evolve optimize`: use a run's law on new points."""

from __future__ import annotations

import csv
import os
import sys
import warnings
from pathlib import Path

import click
import numpy as np

from evolve.allocation import allocation_caveats, size_and_data_features
from evolve.api import IntervalWarning, LawError, check_groups, open_run
from evolve.cli.display import console, print_table, safe_text
from evolve.tasks import GROUP_COLUMN, TaskError, read_csv_records, rows_from_records
from evolve.text import name_some


def pick_law(run: Path, program_id: int | None):
    opened = open_run(run)
    if program_id is not None:
        return opened, opened.law(program_id)
    law = opened.best
    if opened.returned_id is None:  # interrupted, or still going: no law chosen yet
        click.echo(f"note: {run} has not chosen its law (it stopped, or is still going, before its end): using program "
                   f"{law.record.id}, the best by validation R²; `evolve run --resume {run}` finishes it", err=True)
    return opened, law


def rows_to_predict(csv_path: Path, task, group: str | None, table: tuple[list[str], list[dict]] | None = None):
    """The rows of a CSV to predict, each row's group, and the CSV's group column (None when
    it has none): --group, else the group column of the CSV the task was made from (its own
    name for groups: a CSV may also carry an unrelated 'group'), else the CSV's 'group'
    column, else the task's one group. A --group that contradicts the
    CSV's group column is refused rather than silently preferred (blank cells take it).
    `table`: the CSV's header and records when the caller has read them already."""
    header, records = table if table is not None else read_csv_records(csv_path)
    longer = next((n for n, r in enumerate(records, start=2) if None in r), None)
    if longer is not None:
        raise TaskError(f"{csv_path}: line {longer} has more cells than the header's {len(header)} columns")
    column = next((c for c in (task.source_group_column, GROUP_COLUMN) if c and c in header), None)
    if group is not None:
        rows = rows_from_records(csv_path, header, records, task.features, (), None)
        others = sorted({str(r.get(column) or "").strip() for r in records} - {group, ""}) if column else []
        if others:
            raise TaskError(f"{csv_path}: --group {group!r}, but its column '{column}' names other groups "
                            f"({name_some(others, 5)}): drop --group to use the column")
        return rows, np.array([group] * len(rows), dtype=object), column
    rows = rows_from_records(csv_path, header, records, task.features, (), column)
    if column is None:
        if len(task.train.group_names()) != 1:
            named = f"a '{GROUP_COLUMN}' column" + (f" or a '{task.source_group_column}' column" if task.source_group_column else "")
            raise TaskError(f"{csv_path}: no group column ({named}); name the group with --group (groups: {name_some(task.train.group_names(), 8)})")
        return rows, np.array(task.train.group_names() * len(rows), dtype=object), None
    return rows, rows.groups, column


def outside_the_domain(task, X: np.ndarray) -> list[str]:
    """Features of the rows to predict that are zero or negative where every train row has
    them positive: the law's guards (a floor at 1e-12 before a power or a log) then answer
    for a value it was never fitted at, and silently."""
    found = []
    for j, name in enumerate(task.features):
        bad = int((X[:, j] <= 0).sum())
        if bad and np.all(task.train.X[:, j] > 0):
            found.append(f"{bad} row(s) have {name} <= 0, where every train row has it positive: the law is not "
                         "defined there, and what it predicts for them means nothing")
    return found


def across_zero(task, predicted: np.ndarray) -> list[str]:
    """Notes for predictions on the other side of zero from every train value of their
    target (a negative loss): the law is past anything its data hold there."""
    from evolve.intervals import observed_sign

    found = []
    for j, target in enumerate(task.targets):
        sign = observed_sign(task.train.y.reshape(len(task.train.y), -1)[:, j])
        beyond = predicted[:, j] * sign < 0
        if sign and beyond.any():
            found.append(f"{int(beyond.sum())} row(s) have predicted {target} {'below' if sign > 0 else 'above'} zero, where no "
                         "train row has it: the law is past anything its data hold there")
    return found


def check_writable(output: Path) -> None:
    folder = output.parent if str(output.parent) else Path(".")
    if output.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        raise TaskError(f"cannot write {output}: " + ("it is a folder" if output.is_dir() else f"no writable folder {folder}"))


@click.command("predict", help="Predict new points with a run's law (the one it returned, its best.py, unless --id).")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--csv", "csv_path", required=True, type=click.Path(path_type=Path), help="rows with the task's feature columns (and a group column unless --group)")
@click.option("--id", "program_id", type=int, help="the program to use (default: the law the run returned, its best.py)")
@click.option("--group", help="the group every row belongs to (default: the CSV's 'group' column, or the group column of the CSV the task was made from)")
@click.option("--interval", type=click.FloatRange(0, 1, min_open=True, max_open=True), help="also a prediction interval at this level (e.g. 0.9)")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="write the CSV here (default: standard output)")
def predict_command(run: Path, csv_path: Path, program_id: int | None, group: str | None, interval: float | None, output: Path | None) -> int:
    opened, law = pick_law(run, program_id)
    task = opened.task
    header, records = read_csv_records(csv_path)  # the rows as given: every column is kept, in its order
    rows, groups, group_column = rows_to_predict(csv_path, task, group, (header, records))
    check_groups(task, groups.tolist(), f"{csv_path}: ")  # before the fits, which take seconds to minutes
    if output is not None:
        check_writable(output)  # before the fits, which take seconds to minutes
    for line in outside_the_domain(task, rows.X):
        click.echo(f"note: {line}", err=True)
    fitted = law.fit()
    value_columns = [f"predicted_{t}" for t in task.targets]
    if interval:
        value_columns += [f"{t}_{side}" for t in task.targets for side in ("low", "high")]
    only_group = group is None and group_column is None  # a one-group task, no group named: nothing to say
    group_added = [] if group_column or only_group else [GROUP_COLUMN]  # the group each row was predicted for
    columns = header + [c for c in (*group_added, *value_columns) if c not in header]
    stale = [c for t in task.targets for c in (f"predicted_{t}", f"{t}_low", f"{t}_high") if c in header and c not in value_columns]
    if stale:  # an earlier output read back in: its figures are not this call's
        click.echo(f"note: the input's {', '.join(stale)} column(s) are left empty: this call does not compute them", err=True)
    out_rows = [{**record, **dict.fromkeys(stale, "")} for record in records]
    predictions, notes = [], []
    for name in sorted(set(groups.tolist())):
        mask = groups == name
        values = np.asarray(fitted.predict(rows.X[mask], name), dtype=float).reshape(int(mask.sum()), -1)
        predictions.append(values)
        if interval:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", IntervalWarning)
                low, high = (np.asarray(side, dtype=float).reshape(len(values), -1) for side in fitted.interval(rows.X[mask], name, interval))
            for w in caught:  # the interval's own warnings become notes; any other is passed on as it came
                if not issubclass(w.category, IntervalWarning):
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
                elif str(w.message) not in notes:
                    notes.append(str(w.message))
            values = np.column_stack([values, *[np.column_stack([low[:, k], high[:, k]]) for k in range(values.shape[1])]])
        for index, row_values in zip(np.flatnonzero(mask), values):
            filled = [group_column] if group_column and not str(out_rows[index].get(group_column) or "").strip() else []
            out_rows[index].update({**dict.fromkeys([*group_added, *filled], name), **dict(zip(value_columns, row_values.tolist()))})
    for line in [*notes, *across_zero(task, np.concatenate(predictions))]:
        click.echo(f"note: {safe_text(line, keep_newlines=False)}", err=True)  # group and column names are the data's
    try:
        handle = open(output, "w", newline="") if output else sys.stdout
    except OSError as exc:
        raise TaskError(f"cannot write {output}: {exc.strerror or exc}") from None
    try:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(out_rows)
    finally:
        if output:
            handle.close()
            click.echo(f"wrote {len(out_rows)} predictions of program {law.record.id} to {output}", err=True)
    return 0


@click.command("optimize", help="The compute-optimal model size and data under C ≈ 6·N·D for a run's law.")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--compute", required=True, type=click.FloatRange(min=0, min_open=True), multiple=True, help="training compute in FLOPs (repeat for several)")
@click.option("--group", help="the group (default: every group)")
@click.option("--id", "program_id", type=int, help="the program to use (default: the law the run returned, its best.py)")
@click.option("--size", "size_feature", metavar="FEATURE", help="the model-size feature N (default: found by name: params, N, model_size, ...)")
@click.option("--data", "data_feature", metavar="FEATURE", help="the data feature D (default: found by name: tokens, D, data, ...)")
def optimize_command(run: Path, compute: tuple[float, ...], group: str | None, program_id: int | None,
                     size_feature: str | None, data_feature: str | None) -> int:
    opened, law = pick_law(run, program_id)
    n, d = size_and_data_features(opened.task.features, size_feature, data_feature)  # before any fit: a task it does not apply to is one line
    if group is not None:
        check_groups(opened.task, [group])
    fitted = law.fit()
    groups = [group] if group else opened.task.train.group_names()
    rows = []
    for name in groups:
        for c in compute:
            best = fitted.optimal(c, name, size=size_feature, data=data_feature)
            caveats = allocation_caveats(best)
            rows.append([name, f"{c:.3g}", f"{best['N']:.4g}", f"{best['D']:.4g}", f"{best['loss']:.5g}", caveats])
    target = opened.task.targets[0]
    if rises_with_scale(opened.task, n, d):
        print(f"warning: {safe_text(target, keep_newlines=False)} rises with {safe_text(opened.task.features[n], keep_newlines=False)} and {safe_text(opened.task.features[d], keep_newlines=False)} in the train rows, so higher looks better; this allocation minimises it", file=sys.stderr)
    print_table(f"Compute-optimal allocation of program {law.record.id}: the N, D with C ≈ 6·N·D that minimise predicted {target} (N = {opened.task.features[n]}, D = {opened.task.features[d]})",
                ["group", "compute", "N", "D", f"predicted {target}", "caveat"], rows, console())
    return 0


def rises_with_scale(task, n: int, d: int) -> bool:
    """Whether the first target grows with N·D on train (rank correlation): a loss falls with
    scale, an accuracy rises, and `optimize` minimises, so for an accuracy it says so."""
    from scipy.stats import spearmanr

    X, y = task.train.X, task.train.y[:, 0] if task.train.y.ndim > 1 else task.train.y
    with np.errstate(all="ignore"):
        rho = spearmanr(X[:, n] * X[:, d], y).statistic
    return bool(np.isfinite(rho) and rho > 0)


__all__ = ["predict_command", "optimize_command", "LawError"]

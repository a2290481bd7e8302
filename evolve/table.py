"""Reading and writing the CSV files of a task: rows of features, targets and each row's
group, refused with one line (a TaskError) when a file is malformed."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GROUP_COLUMN = "group"


class TaskError(ValueError):
    """A task that cannot be found or whose files are malformed; its message is one line."""


@dataclass(frozen=True)
class Rows:
    """Rows of one split: features (n, f), targets (n, t) and each row's group name."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray

    def __len__(self) -> int:
        return len(self.groups)

    def select(self, mask: np.ndarray) -> "Rows":
        return Rows(self.X[mask], self.y[mask], self.groups[mask])

    def group_names(self) -> list[str]:
        """Groups in the order the official evaluator visits them: sorted by name."""
        return sorted(set(self.groups.tolist()))

    def replicate_labels(self) -> np.ndarray:
        """Per row, in the order group by group (sorted, as group_names) then file order
        within a group, a label shared by the rows of one group at the same inputs: the
        replicates of one configuration (seeds, repeated runs), which share a law's error
        there and are one independent observation, not several (evolve.selection's
        standard errors, evolve.intervals' bootstrap)."""
        labels, offset = [], 0
        for group in self.group_names():
            own = replicate_labels(self.X[self.groups == group])
            labels.append(own + offset)
            offset += int(own.max()) + 1 if len(own) else 0
        return np.concatenate(labels) if labels else np.zeros(0, dtype=int)


def replicate_labels(X: np.ndarray) -> np.ndarray:
    """Per row of X, the index of its distinct input vector in order of first appearance
    (rows 0..n-1 when every row is distinct)."""
    if not len(X):
        return np.zeros(0, dtype=int)
    rows = np.ascontiguousarray(np.asarray(X, dtype=float).reshape(len(X), -1))
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # unique's sorted labels renumbered by first appearance
    return order[inverse.reshape(-1)]


def read_rows(path: Path, features: tuple[str, ...], targets: tuple[str, ...], group_column: str | None = GROUP_COLUMN,
              drop_missing: bool = False, empty_hint: str = "") -> Rows:
    """Read a CSV into arrays, refusing missing columns, non-numbers, NaN and empty groups.

    `group_column` None (or a column the file lacks) puts every row in one group. With
    `drop_missing`, rows with an empty cell in a column read here are left out (the
    caller says how many); without it an empty cell is refused, with the count and
    `empty_hint` (what the caller offers instead)."""
    header, records = read_csv_records(path)
    return rows_from_records(path, header, records, features, targets, group_column, drop_missing, empty_hint)


def rows_from_records(path: Path, header: list[str], records: list[dict], features: tuple[str, ...], targets: tuple[str, ...],
                      group_column: str | None = GROUP_COLUMN, drop_missing: bool = False, empty_hint: str = "") -> Rows:
    """`read_rows` of a CSV already read (`read_csv_records`); `path` names it in messages."""
    missing = [c for c in (*features, *targets) if c not in header]
    if missing:
        raise TaskError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(header)})")
    if not records:
        raise TaskError(f"{path}: no data rows")
    columns = (*features, *targets)
    grouped = group_column is not None and group_column in header
    used = (*columns, group_column) if grouped else columns
    lines = [(n, r) for n, r in enumerate(records, start=2) if not drop_missing or not has_empty_cell(r, used)]  # line 1 is the header
    if not lines:
        raise TaskError(f"{path}: every row has an empty cell in {', '.join(used)}")
    values = np.empty((len(lines), len(columns)))
    groups = []
    for i, (row_number, record) in enumerate(lines):
        group = record.get(group_column) if grouped else "all_data"
        if group is None or not str(group).strip():
            raise TaskError(f"{path}: line {row_number}: empty group in column '{group_column}'{empty_cells_hint(records, used, empty_hint)}")
        groups.append(str(group))
        for j, column in enumerate(columns):
            text = record.get(column)
            if text is None or not text.strip():
                raise TaskError(f"{path}: line {row_number}: column '{column}' is empty{empty_cells_hint(records, used, empty_hint)}")
            values[i, j] = parse_number(text, path, row_number, column)
    return Rows(values[:, : len(features)], values[:, len(features):], np.array(groups, dtype=object))


def has_empty_cell(record: dict, columns: tuple[str, ...]) -> bool:
    return any(record.get(c) is None or not str(record.get(c)).strip() for c in columns)


def empty_cells_hint(records: list[dict], columns: tuple[str, ...], offer: str) -> str:
    """How many rows have an empty cell, and what the caller offers instead."""
    count = sum(has_empty_cell(r, columns) for r in records)
    return f" ({count} of {len(records)} rows have an empty cell in the columns read{'; ' + offer if offer else ''})"


def read_csv_records(path: Path, header_only: bool = False) -> tuple[list[str], list[dict]]:
    """The header and the rows of a comma-separated file (a UTF-8 byte-order mark, as
    spreadsheets write it, is dropped), refusing an empty file and repeated column names."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            records = [] if header_only else list(reader)
    except FileNotFoundError:
        raise TaskError(f"missing data file {path}") from None
    except IsADirectoryError:
        raise TaskError(f"{path} is a folder, not a CSV file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TaskError(f"cannot read {path}: {exc}") from None
    check_header(path, header)
    return header, records


def check_header(path: Path, header: list[str]) -> None:
    if not header:
        raise TaskError(f"{path} is empty: the first line must name the columns")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise TaskError(f"{path}: column name(s) {', '.join(map(repr, repeated))} appear more than once")
    if len(header) == 1:
        separator = next((s for s in (";", "\t", "|") if s in header[0]), None)
        if separator:
            raise TaskError(f"{path}: one column {header[0]!r}: the file looks {separator!r}-separated; evolve reads comma-separated CSV")


def parse_number(text: str | None, path: Path, row_number: int, column: str) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TaskError(f"{path}: line {row_number}: column '{column}' is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise TaskError(f"{path}: line {row_number}: column '{column}' is {text!r}; values must be finite")
    return value


def read_header(path: Path) -> list[str]:
    return read_csv_records(path, header_only=True)[0]


def write_rows(path: Path, rows: Rows, features: list[str], targets: list[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([GROUP_COLUMN, *features, *targets])
        for group, x, y in zip(rows.groups, rows.X, rows.y):
            writer.writerow([group, *map(repr, map(float, x)), *map(repr, map(float, y))])

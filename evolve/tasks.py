"""Tasks: a folder with train.csv, test.csv and task.toml, loaded into numpy arrays.

A task is found by name among the shipped tasks (the repository's `tasks/` folder, or the
copy inside the installed package) or by a path to any folder with the same files, so a
user's own data is a task like the SLDBench ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evolve.config import TOMLDecodeError, load_toml
from evolve.table import GROUP_COLUMN, Rows, TaskError, read_csv_records, read_header, read_rows, replicate_labels, rows_from_records, write_rows  # noqa: F401 - part of evolve.tasks

SPLITS = ("validation", "test", "train")
VALIDATION_SEED = 20250721


def data_root(name: str) -> Path:
    """Where a shipped data folder ('tasks' or 'prompts') lives: the checkout, or the package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / name, here / "_data" / name):
        if candidate.is_dir():
            return candidate
    raise TaskError(f"cannot find the shipped '{name}' folder next to {here}")


@dataclass(frozen=True)
class ValidationRule:
    """How the validation split is cut from train, per group.

    With a column: the rows with the largest values of that column (at least a
    `fraction` of the group's rows, all ties included), so laws are judged on
    extrapolation like the test split. Without one: a seeded random `fraction`.

    With `folds` > 1 the cut is repeated on the rows left to fit on (a rolling origin:
    the second fold fits on smaller scales and predicts the next ones), and a program's
    validation score averages the folds. One held-out fold is a small sample: a search
    that ranks thousands of laws on it finds laws that fit those few rows by luck and
    extrapolate worse. A second fold makes such luck twice as hard to come by.
    """

    column: str
    fraction: float
    folds: int = 1  # rolling origin: fold k holds out the largest rows of what fold k-1 fits on


@dataclass(frozen=True)
class Task:
    name: str
    path: Path
    features: tuple[str, ...]
    targets: tuple[str, ...]
    description: str
    param_cap: int | None
    validation: ValidationRule
    train: Rows
    test: Rows
    source_group_column: str | None = None  # the group column of the CSV the task was made from ([source] in task.toml)

    def fit_and_score_rows(self, split: str) -> tuple[Rows, Rows]:
        """The rows a program is fitted on and the rows it is scored on, for a split.

        validation: train minus the held-out rows, then the held-out rows (ranking).
        test: all of train, then test (reporting only). train: all of train, twice
        (the in-sample figure of the SLDBench leaderboard).
        """
        if split == "validation":
            return self.validation_folds()[0]
        if split == "test":
            return self.train, self.test
        if split == "train":
            return self.train, self.train
        raise TaskError(f"unknown split '{split}' (choose from {', '.join(SPLITS)})")

    def folds(self, split: str) -> list[tuple[Rows, Rows]]:
        """(fit rows, scored rows) of each fold of a split: several for validation, else one."""
        return self.validation_folds() if split == "validation" else [self.fit_and_score_rows(split)]

    def validation_folds(self) -> list[tuple[Rows, Rows]]:
        """Rolling-origin folds: each cuts its held-out rows from the previous fold's fit rows.

        A fold that would leave nothing to hold out (groups too small) is not made.
        """
        folds, remaining = [], self.train
        for _ in range(self.validation.folds):
            held_out = validation_mask(remaining, self.features, self.validation)
            if not held_out.any():
                break
            folds.append((remaining.select(~held_out), remaining.select(held_out)))
            remaining = folds[-1][0]
        return folds or [(self.train, self.train.select(np.zeros(len(self.train), dtype=bool)))]

    def summary(self) -> dict:
        folds = self.validation_folds()
        held_out = len(folds[0][1])
        return {
            "name": self.name,
            "features": list(self.features),
            "targets": list(self.targets),
            "groups": len(self.train.group_names()),
            "train_rows": len(self.train),  # train.csv's rows, as `evolve tasks new` counts them
            "validation_rows": held_out,  # of them, held out by the first validation fold
            "fit_rows": len(self.train) - held_out,
            "validation_folds": len(folds),
            "test_rows": len(self.test),
            "param_cap": self.param_cap,
        }


def validation_mask(rows: Rows, features: tuple[str, ...], rule: ValidationRule) -> np.ndarray:
    """The held-out rows of one fold: per group the largest by the rule's column, or a
    seeded random fraction when the rule has no column.

    The random cut draws configurations, not rows: the replicates of one input (the same
    configuration run again) are held out together or fitted together, since a law fitted on
    one replicate has already seen the others' observation (the column cut keeps them
    together already: ties are held out together). With every input distinct the draws are
    those of a row cut, exactly."""
    if rule.column:
        return largest_mask(rows.groups, column_values(rows.X, features, rule.column), rule.fraction)
    mask = np.zeros(len(rows), dtype=bool)
    rng = np.random.default_rng(VALIDATION_SEED)
    for group in rows.group_names():
        index = np.flatnonzero(rows.groups == group)
        labels = replicate_labels(rows.X[index])
        units = int(labels.max()) + 1  # a group of rows has at least one
        if units < 3:
            continue  # too few configurations to hold any out and still fit
        k = min(units - 2, max(1, math.ceil(rule.fraction * units)))
        mask[index[np.isin(labels, rng.choice(units, size=k, replace=False))]] = True
    return mask


def column_names(expression: str) -> list[str]:
    """The columns of a scale expression: one column, or a product such as 'params*tokens'."""
    return [name.strip() for name in expression.split("*")]


def column_values(X: np.ndarray, features: tuple[str, ...], expression: str) -> np.ndarray:
    """The values of a scale expression over feature columns (a product of features)."""
    values = np.ones(len(X))
    for name in column_names(expression):
        values = values * X[:, features.index(name)]
    return values


TIE_RTOL = 1e-9  # float rounding of a computed column, far below any real difference of scale


def largest_mask(groups: np.ndarray, values: np.ndarray, fraction: float) -> np.ndarray:
    """Per group, the rows with the largest `values` (a `fraction` of the group, ties
    included), keeping at least two rows of each group to fit on. Values within TIE_RTOL of
    the cut are ties: a product of columns (`params*tokens`) gave one FLOP budget's points
    values differing in the last bit, and the cut split the budget between train and test."""
    mask = np.zeros(len(groups), dtype=bool)
    for group in sorted(set(groups.tolist())):
        index = np.flatnonzero(groups == group)
        if len(index) < 3:
            continue
        k = min(len(index) - 2, max(1, math.ceil(fraction * len(index))))
        threshold = np.sort(values[index])[::-1][k - 1]
        chosen = index[values[index] >= threshold - TIE_RTOL * abs(threshold)]
        if len(chosen) > len(index) - 2:
            chosen = index[np.argsort(-values[index], kind="stable")[:k]]
        mask[chosen] = True
    return mask


SCALE_SPAN = 20  # a positive feature spanning more than this factor looks like a scale


def wide_positive_features(X: np.ndarray, features: tuple[str, ...]) -> list[str]:
    """Features that look like scales: positive and spanning more than a factor of 20."""
    found = []
    for j, name in enumerate(features):
        column = X[:, j]
        if len(column) and column.min() > 0 and column.max() / column.min() > SCALE_SPAN:
            found.append(name)
    return found


FEW_SCALES = 6  # a group with at most this many distinct values of the order column spans few scales


def auto_validation_rule(train: Rows, features: tuple[str, ...], test_column: str, test_fraction: float) -> ValidationRule:
    """How to validate a task nobody tuned, decided from train and the test split's own rule.

    The principle: validation should ask the question the test split asks, one step earlier.
    - Order by the column test is split by when it is made of features (a product such as
      params*tokens included); else by the product of the scale-like features (positive,
      spanning over 20x: compute-like); with neither, a seeded random cut (no axis to
      extrapolate along, as in a mixture sweep). Never by the labels.
    - Hold out as much of what train keeps as test holds out of the whole group:
      fraction f/(1-f) of train for a test fraction f (clipped to 0.1..0.5), so the
      extrapolation judged has the reach of the one that matters.
    - When groups span few scales (at most 6 distinct values of the order column, as a
      sweep over five model sizes): hold out about half of them, keeping at least two to
      fit on. One held-out scale measures a level, which a flexible law matches by
      bending; several measure the trend across scales, which is what extrapolates.
    - Two rolling-origin folds when every group keeps at least 4 rows (and, with few
      scales, 4 scales) to fit on after both cuts: one small held-out fold lets a search
      that ranks hundreds of laws pick one that fits those few rows by luck; one fold
      when groups are too small for two.
    Nothing here reads a target value or the test rows (the shipped tasks' rules were
    compared with this one on train alone: bench/results/selection.md).
    """
    names = column_names(test_column) if test_column else []
    if names and all(n in features for n in names):
        column = test_column
    else:
        scales = wide_positive_features(train.X, features)
        column = "*".join(scales)  # no scale-like feature: no axis to extrapolate along, a random cut
    fraction = float(min(0.5, max(0.1, test_fraction / max(1e-9, 1 - test_fraction))))
    few = few_scales_fraction(train, features, column) if column else None
    if few is not None:
        fraction, kept_scales = max(fraction, few[0]), few[1]
    sizes = [int(np.sum(train.groups == g)) for g in train.group_names()]
    two_folds = all(size - 2 * max(1, math.ceil(fraction * size)) >= 4 for size in sizes)
    if few is not None:
        two_folds = two_folds and kept_scales >= 4
    return ValidationRule(column, fraction, 2 if two_folds else 1)


def few_scales_fraction(train: Rows, features: tuple[str, ...], column: str) -> tuple[float, int] | None:
    """When every group spans few distinct scales: the row fraction that holds out the
    largest half of them (at least one, leaving two to fit on; the median over groups), and
    how many scales the fit keeps. None when some group spans many (the fraction rule then)."""
    values = column_values(train.X, features, column)
    fractions, kept = [], []
    for group in train.group_names():
        v = values[train.groups == group]
        distinct = np.unique(v)[::-1]
        if len(distinct) > FEW_SCALES or len(distinct) < 3:
            return None
        held = max(1, min(math.ceil(len(distinct) / 2), len(distinct) - 2))
        above = int(np.sum(v > distinct[held - 1]))  # rows in the larger held-1 scales
        fractions.append((above + 1) / len(v))  # one more row reaches the held-th scale (ties join)
        kept.append(len(distinct) - held)
    return float(np.median(fractions)), int(min(kept))


def shipped_task_names() -> list[str]:
    root = data_root("tasks")
    return sorted(p.parent.name for p in root.glob("*/task.toml"))


def resolve_task_dir(name_or_path: str | Path) -> Path:
    """A shipped task's folder by name, or a user's task folder by path."""
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if (candidate / "task.toml").is_file():
        return candidate.resolve()
    shipped = data_root("tasks") / text
    if "/" not in text and (shipped / "task.toml").is_file():
        return shipped
    known = ", ".join(shipped_task_names())
    raise TaskError(f"unknown task '{text}': not a folder with task.toml, nor one of: {known}")


def load_task(name_or_path: str | Path) -> Task:
    folder = resolve_task_dir(name_or_path)
    config = read_task_config(folder / "task.toml")
    features = tuple(config["features"])
    targets = tuple(config["targets"])
    validation = config.get("validation", {})
    if not isinstance(validation, dict):
        raise TaskError(f"{folder / 'task.toml'}: [validation] must be a table")
    train = read_rows(folder / "train.csv", features, targets)
    if validation.get("rule", "") == "auto":
        test = config.get("test", {}) if isinstance(config.get("test", {}), dict) else {}
        rule = auto_validation_rule(train, features, str(test.get("column", "")), float(test.get("fraction", 0.2)))
        return make_task(config, folder, features, targets, rule, train)
    folds = validation.get("folds", 1)
    if not isinstance(folds, int) or isinstance(folds, bool) or not 1 <= folds <= 5:
        raise TaskError(f"{folder / 'task.toml'}: validation folds must be a whole number from 1 to 5")
    rule = ValidationRule(str(validation.get("column", "")), float(validation.get("fraction", 0.2)), folds)
    if rule.column and not all(name in features for name in column_names(rule.column)):
        raise TaskError(f"{folder / 'task.toml'}: validation column '{rule.column}' is not a feature (or a product of features)")
    if not 0 < rule.fraction < 1:
        raise TaskError(f"{folder / 'task.toml'}: validation fraction must be between 0 and 1")
    return make_task(config, folder, features, targets, rule, train)


def make_task(config: dict, folder: Path, features: tuple[str, ...], targets: tuple[str, ...], rule: ValidationRule, train: Rows) -> Task:
    cap = config.get("param_cap")
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
        raise TaskError(f"{folder / 'task.toml'}: param_cap must be a whole number of at least 1")
    return Task(
        name=str(config.get("name", folder.name)),
        path=folder,
        features=features,
        targets=targets,
        description=" ".join(str(config.get("description", "")).split()),
        param_cap=int(cap) if cap is not None else None,
        validation=rule,
        train=train,
        test=read_rows(folder / "test.csv", features, targets),
        source_group_column=source_group_column(config, folder),
    )


def source_group_column(config: dict, folder: Path) -> str | None:
    source = config.get("source", {})
    if not isinstance(source, dict) or not isinstance(source.get("group_column", ""), str):
        raise TaskError(f"{folder / 'task.toml'}: [source] must be a table with a text group_column")
    return source.get("group_column") or None


def read_task_config(path: Path) -> dict:
    try:
        config = load_toml(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskError(f"cannot read {path}: {exc}") from None
    except TOMLDecodeError as exc:
        raise TaskError(f"{path} is not valid TOML: {exc}") from None
    for key in ("features", "targets"):
        value = config.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise TaskError(f"{path}: '{key}' must be a non-empty list of column names")
    return config


def create_task_folder(
    folder: Path,
    csv_path: Path,
    features: list[str],
    targets: list[str],
    group_column: str | None = None,
    test_column: str | None = None,
    test_fraction: float = 0.2,
    description: str = "",
    param_cap: int | None = None,
    validation: tuple[float, int] | None = None,
    drop_missing: bool = False,
) -> Task:
    """Write a task folder from one CSV: per group, the rows with the largest `test_column`
    values (a `test_fraction` of them) become test.csv, the rest train.csv.

    `test_column` is any numeric column of the CSV, or a product of columns
    ('params*tokens': compute, up to the constant 6). `validation` is (fraction, folds) of
    the largest train rows by the same order, or None for the automatic rule chosen from
    train alone (`auto_validation_rule`). `drop_missing` leaves out rows with an empty cell
    in a column used (else such a row is refused). The CSV is checked first (columns, numbers,
    NaN, empty groups, every group with train, validation and test rows), so a refused
    file leaves nothing half-written.
    """
    test_column = "*".join(column_names(test_column or features[0]))
    repeated = sorted({n for n in (*features, *targets) if [*features, *targets].count(n) > 1} - (set(features) & set(targets)))
    if repeated:
        raise TaskError(f"{', '.join(repeated)} named twice in --features/--targets")
    both = sorted(set(features) & set(targets))
    if both:
        raise TaskError(f"{', '.join(both)} cannot be both a feature and a target")
    if not 0 < test_fraction < 1:
        raise TaskError("the test fraction must be between 0 and 1")
    if param_cap is not None and param_cap < 1:
        raise TaskError("the parameter cap must be at least 1")
    header = read_header(Path(csv_path))
    for role, names in (("feature column", features), ("target column", targets), ("column (for --test-largest)", column_names(test_column))):
        unknown = [n for n in names if n not in header]
        if unknown:
            raise TaskError(f"{csv_path}: no {role} {', '.join(map(repr, unknown))} (has {', '.join(map(repr, header))})")
    if group_column and group_column not in header:
        raise TaskError(f"{csv_path}: missing group column '{group_column}' (has {', '.join(map(repr, header))})")
    if group_column in (*features, *targets):
        raise TaskError(f"{group_column} cannot be both the group column and a feature or target")
    scale_names = column_names(test_column)
    extra = tuple(n for n in scale_names if n not in features)
    every = read_rows(Path(csv_path), (*features, *extra), tuple(targets), group_column or None, drop_missing=drop_missing,
                      empty_hint="--drop-missing leaves them out")
    rows = Rows(every.X[:, : len(features)], every.y, every.groups)
    scale = every.X[:, [(*features, *extra).index(n) for n in scale_names]].prod(axis=1)
    test_mask = largest_mask(rows.groups, scale, test_fraction)
    train = rows.select(~test_mask)
    check_every_group_splits(rows, test_mask, train, tuple(features), validation, test_column, test_fraction)
    if (folder / "task.toml").exists():
        raise TaskError(f"{folder} already holds a task")
    text = description or f"User data from {Path(csv_path).name}: features {', '.join(features)}; targets {', '.join(targets)}."
    config = (
        f"name = {json.dumps(folder.name)}\n"
        f"features = {json.dumps(features)}\n"
        f"targets = {json.dumps(targets)}\n"
        + (f"param_cap = {param_cap}\n" if param_cap is not None else "")
        + f"description = {json.dumps(text)}\n\n"
        f"[test]  # how test.csv was cut: per group, the rows with the largest values\ncolumn = {json.dumps(test_column)}\nfraction = {test_fraction}\n\n"
        + validation_toml(validation, test_column)
        + source_toml(Path(csv_path), group_column)
    )
    write_task_files(folder, {"train.csv": train, "test.csv": rows.select(test_mask)}, features, targets, config)
    return load_task(folder)


def source_toml(csv_path: Path, group_column: str | None) -> str:
    """Where the rows came from: `evolve predict` reads the same group column in new CSVs."""
    group = f"group_column = {json.dumps(group_column)}\n" if group_column else ""
    return f"\n[source]  # the CSV this task was made from\ncsv = {json.dumps(csv_path.name)}\n{group}"


def write_task_files(folder: Path, splits: dict[str, Rows], features: list[str], targets: list[str], config: str) -> None:
    """Write the CSVs and task.toml; on a failed write, nothing this call created is left."""
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows in splits.items():
            write_rows(folder / name, rows, features, targets)
        (folder / "task.toml").write_text(config)
    except OSError as exc:
        if folder.is_dir():
            for name in (*splits, "task.toml"):
                (folder / name).unlink(missing_ok=True)
            if created:
                folder.rmdir()
        raise TaskError(f"cannot write the task folder {folder}: {exc.strerror or exc}") from None


def validation_toml(validation: tuple[float, int] | None, test_column: str) -> str:
    if validation is None:
        return "[validation]  # chosen from train alone when the task loads (evolve.tasks.auto_validation_rule)\nrule = \"auto\"\n"
    fraction, folds = validation
    return f"[validation]\ncolumn = {json.dumps(test_column)}\nfraction = {fraction}\nfolds = {folds}\n"


def check_every_group_splits(rows: Rows, test_mask: np.ndarray, train: Rows, features: tuple[str, ...],
                             validation: tuple[float, int] | None, test_column: str, test_fraction: float) -> None:
    """Refuse, naming the group, a split that leaves a group without test or validation rows."""
    for group in rows.group_names():
        if not test_mask[rows.groups == group].any():
            raise TaskError(f"group '{group}' has too few rows ({int(np.sum(rows.groups == group))}) for a test split: each group needs 5 or more")
    if validation is None:
        rule = auto_validation_rule(train, features, test_column, test_fraction)
    else:
        column = test_column if all(n in features for n in column_names(test_column)) else ""
        if not column:
            raise TaskError(f"--validation with a fraction needs --test-largest over features; {test_column} is not one (use --validation auto)")
        rule = ValidationRule(column, validation[0], validation[1])
    held_out = validation_mask(train, features, rule) if rule.column else np.zeros(len(train), dtype=bool)
    for group in train.group_names():
        if rule.column and not held_out[train.groups == group].any():
            raise TaskError(f"group '{group}' keeps too few train rows ({int(np.sum(train.groups == group))}) for a validation split: each group needs 5 or more rows")

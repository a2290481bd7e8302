"""Take a law out of a run: a standalone program file in either API, or the archive as CSV.

The fit-API file is the program as evolved, with its scores and fitted parameters in a
header. The law-API file adds `law(input_data, group)` that predicts with the stored
fitted parameters of each group, so it works without refitting. Parameters come from
the stored test evaluation (fitted on all training rows) when there is one, else from
the validation evaluation (fitted on the training rows minus the held-out ones); the
header says which.
"""

from __future__ import annotations

import csv
import re
import textwrap
from pathlib import Path

from evolve.store.errors import ArchiveError
from evolve.program import LAW_FUNCTION, ProgramError, detect_api, top_level_functions
from evolve.records import ProgramRecord
from evolve.scoring.scorer import Evaluation
from evolve.tasks import Task
from evolve.text import csv_cell, format_r2, one_line

APIS = ("fit", "law")
FORMULA_HEADER = "# The law of group"  # where a file's header gives the checked formula (`evolve run` prints it from best.py)
GIVEN_PARAMS_SOURCE = "Law.fit(): each group fitted on all its training rows"  # where parameters passed in come from


def params_source(record: ProgramRecord) -> tuple[str, Evaluation]:
    """Which stored evaluation the exported parameters come from, and why."""
    if record.test is not None and record.test.ok and record.test.params:
        return "test evaluation, fitted on all training rows", record.test
    return "validation evaluation, fitted on the training rows minus the validation rows", record.validation


def r2_or_status(evaluation: Evaluation | None) -> str:
    """An evaluation's R² for a file header, or why it has none."""
    if evaluation is None:
        return "not scored"
    return format_r2(evaluation.metrics.r2, digits=6) if evaluation.ok else f"failed ({evaluation.status})"


def header(record: ProgramRecord, task: Task, run_name: str, api: str, given_params: bool = False) -> list[str]:
    source, evaluation = params_source(record)
    source = GIVEN_PARAMS_SOURCE if given_params else f"the stored {source}"
    lines = [
        f"# Law exported from run {run_name}, program {record.id}, task {task.name} ({api} API).",
        f"# Features: {', '.join(task.features)}; targets: {', '.join(task.targets)}.",
        f"# Validation R2: {r2_or_status(record.validation)}; test R2: {r2_or_status(record.test)}.",
        f"# Fitted parameters ({evaluation.n_params} per group) come from {source}.",
    ]
    if api == "fit":
        lines.append("# fit_scaling_law refits them on your data; they are listed in FITTED_PARAMS for reference.")
    else:
        lines.append("# law(input_data, group) predicts with them as they are; it does not refit.")
    return lines


def params_literal(params: dict[str, list[float] | None]) -> str:
    """A Python dict literal of the parameters per group, one group a line, exact floats."""
    lines = ["{"]
    for group, values in sorted(params.items()):
        shown = "None" if values is None else "[" + ", ".join(repr(float(v)) for v in values) + "]"
        lines.append(f"    {group!r}: {shown},")
    lines.append("}")
    return "\n".join(lines)


def law_adapter(task: Task) -> str:
    """The law() entry point over scaling_law_func and the embedded parameters."""
    return textwrap.dedent(
        f'''
        EXPORTED_FEATURES = {list(task.features)!r}
        EXPORTED_TARGETS = {list(task.targets)!r}


        def law(input_data, group):
            """Predict {", ".join(task.targets)} for a list of dicts of {", ".join(task.features)}, with the fitted parameters of `group`."""
            import numpy as np

            if group not in FITTED_PARAMS or FITTED_PARAMS[group] is None:
                known = ", ".join(repr(g) for g in sorted(FITTED_PARAMS))
                raise KeyError(f"no fitted parameters for group {{group!r}}; known groups: {{known}}")
            rows = np.array([[float(row[f]) for f in EXPORTED_FEATURES] for row in input_data], dtype=float)
            rows = rows.reshape(len(input_data), len(EXPORTED_FEATURES))
            predictions = np.asarray(scaling_law_func(rows, np.asarray(FITTED_PARAMS[group], dtype=float)), dtype=float)
            predictions = predictions.reshape(len(input_data), len(EXPORTED_TARGETS))
            return [dict(zip(EXPORTED_TARGETS, map(float, p))) for p in predictions]
        '''
    )


FITTING_IMPORT = re.compile(r"^[ \t]*(from[ \t]+evolve\.fitting[ \t]+import[^\n]*|import[ \t]+evolve\.fitting[^\n]*)$", re.M)


def standalone_code(code: str) -> str:
    """The program with `evolve.fitting` copied in where it imports it, so the file needs
    only numpy and scipy: it runs where evolve is not installed."""
    if not FITTING_IMPORT.search(code):
        return code
    import evolve.fitting as fitting

    source = Path(fitting.__file__).read_text()
    source = re.sub(r"^from __future__ import annotations\n", "", source, flags=re.M)
    block = "# --- evolve.fitting, copied in so this file needs only numpy and scipy ---\n" + source.strip() + "\n# --- end of evolve.fitting ---"
    shown = [False]

    def replace(match: re.Match) -> str:
        if shown[0]:
            return ""
        shown[0] = True
        indent = match.group(0)[: len(match.group(0)) - len(match.group(0).lstrip())]
        return "\n".join(indent + line if line else line for line in block.splitlines())

    code = FITTING_IMPORT.sub(replace, code)
    return code.replace("import evolve.fitting as ", "# (evolve.fitting inlined above) ")


def standalone_program(record: ProgramRecord, task: Task, params: dict | None = None, run_name: str = "", formula=None) -> str:
    """The one writer of a standalone program file (the `fit` API), used by `archive export`,
    `best.py` and `Law.export`: its scores and fitted parameters in a header, and
    FITTED_PARAMS per group at the end (`params` overrides the stored ones). `formula` (a
    report.formula.ShownFormula) adds the law as shown by `archive show` and the report."""
    text = export_program(record, task, run_name or "(run)", "fit", params)
    if formula is not None:
        others = "; other groups have their own constants" if len(task.train.group_names()) > 1 else ""
        lines = [f"{FORMULA_HEADER} {formula.group!r} with its fitted constants (checked against this program on the",
                 f"# group's rows; numbers rounded for reading{others}):"]
        lines += [f"#     {one_line(line)}" for line in formula.lines(task.targets)]
        head, _, rest = text.partition("\n\n")
        text = head + "\n" + "\n".join(lines) + "\n\n" + rest
    return text


def export_program(record: ProgramRecord, task: Task, run_name: str, api: str = "fit", params: dict | None = None) -> str:
    """The program as a standalone file in the chosen API, with its fitted parameters: the
    stored ones, or `params` ({group: values}, from Law.fit()) when given."""
    if api not in APIS:
        raise ArchiveError(f"unknown API '{api}' (choose fit or law)")
    if not record.code.strip():
        raise ArchiveError(f"program {record.id} has no code (its proposal failed)")
    try:
        program_api = detect_api(record.code)
    except ProgramError as exc:
        raise ArchiveError(f"program {record.id} cannot be exported: {exc}") from None
    _, evaluation = params_source(record)
    lines = header(record, task, run_name, api, given_params=params is not None)
    code = standalone_code(record.code if record.code.endswith("\n") else record.code + "\n")
    if api == "law" and (program_api == "law" or LAW_FUNCTION in top_level_functions(record.code)):
        lines[-1] = "# law(input_data, group) is the program's own (a law with fixed coefficients)."
        return "\n".join(lines) + "\n\n" + code
    embedded = evaluation.params if params is None else params
    literal = params_literal(embedded)
    if api == "fit":
        return "\n".join(lines) + "\n\n" + code + f"\n\nFITTED_PARAMS = {literal}\n"
    if not embedded or all(v is None for v in embedded.values()):
        raise ArchiveError(f"program {record.id} has no numeric fitted parameters to embed; export it with --api fit")
    return "\n".join(lines) + "\n\n" + code + f"\n\nFITTED_PARAMS = {literal}\n" + law_adapter(task)


CSV_COLUMNS = (
    "id", "island", "iteration", "parent_id", "proposer", "model", "status", "validation_r2",
    "validation_nmse", "validation_nmae", "test_status", "test_r2", "n_params", "complexity",
    "cell_params", "cell_complexity", "prompt_tokens", "completion_tokens", "created_at",
    "explanation", "message",
)  # fmt: skip


def csv_row(record: ProgramRecord) -> list:
    validation, test = record.validation, record.test
    cell = record.cell or (None, None)
    return [
        record.id, record.island, record.iteration, record.parent_id, record.proposer, record.model or "",
        validation.status, validation.metrics.r2 if validation.ok else "", validation.metrics.nmse if validation.ok else "",
        validation.metrics.nmae if validation.ok else "", test.status if test else "",
        test.metrics.r2 if test and test.ok else "", record.n_params if record.n_params is not None else "",
        record.complexity, cell[0], cell[1], record.prompt_tokens, record.completion_tokens, record.created_at,
        record.explanation, validation.message,
    ]  # fmt: skip


def write_csv(records: list[ProgramRecord], path: Path) -> None:
    """The listed programs as CSV, one row each (scores empty for failures)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for record in records:
            writer.writerow([csv_cell(value) for value in csv_row(record)])

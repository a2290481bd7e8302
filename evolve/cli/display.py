"""How the CLI shows things: tables that never cut a name or a number, and program text made
safe before it reaches a terminal (see `evolve.text.safe_text`)."""

from __future__ import annotations

import sys

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from evolve.text import format_params, format_r2, safe_text

__all__ = ["console", "print_code", "print_table", "format_r2", "format_params", "safe_text", "show_evaluation", "r2_or_none", "format_tokens"]


def console(stderr: bool = False) -> Console:
    """A terminal folds long lines at its width; a pipe or a file gets every line whole
    (rich would otherwise fold at 80 columns, splitting sentences, numbers and code)."""
    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal:
        out.soft_wrap = True
    return out


def print_code(out: Console, source: str, line_numbers: bool = False) -> None:
    """Program text (already made safe): highlighted on a terminal, else plain whole lines."""
    if out.is_terminal:
        out.print(Syntax(source, "python", theme="ansi_dark", line_numbers=line_numbers, word_wrap=True))
        return
    lines = source.splitlines()
    width = len(str(len(lines)))
    out.file.write("".join((f"{i:>{width}} {line}\n" if line_numbers else line + "\n") for i, line in enumerate(lines, start=1)))


WHOLE_CELL = 24  # a cell with no space up to this long is never folded (0.795 / 4 reads as two numbers)
FOLDED_CELL = 8  # the narrowest a column of longer or spaced cells is allowed to fold to


def whole_width(cells: list[str]) -> int | None:
    """The width on screen that keeps every cell of a column in one piece, when all are
    short and spaceless (numbers, statuses, counts, names); None for a column that may fold."""
    if cells and all(cell_len(c) <= WHOLE_CELL and " " not in c for c in cells):
        return max(map(cell_len, cells))
    return None


def longest_word(texts: list[str]) -> int:
    return max((cell_len(word) for text in texts for word in text.split()), default=0)


def column_width(header: str, cells: list[str]) -> int:
    """The narrowest a column may be: its whole cells (see whole_width), else its longest
    word up to WHOLE_CELL (a group name is not split in the middle when it can be kept),
    and never narrower than the longest word of its header ("tokens" was cut to "t")."""
    whole = whole_width(cells)
    cell_part = whole if whole is not None else max(FOLDED_CELL, min(longest_word(cells), WHOLE_CELL))
    return max(cell_part, longest_word([header]))


def row_lines(columns: list[str], row: list[str], width: int) -> list[str]:
    """One row as "column value" pairs joined into lines of at most `width` cells: a narrow
    terminal breaks between fields, never inside one (a pair wider than the line is a line
    of its own, folded by the terminal)."""
    lines, line = [], ""
    for column, value in zip(columns, row):
        pair = f"{safe_text(column, keep_newlines=False)} {value}"
        if line and cell_len(line) + 2 + cell_len(pair) > width:
            lines.append(line + ",")
            line = "  " + pair
        else:
            line = f"{line}, {pair}" if line else pair
    return [*lines, line] if line else lines


def print_table(title: str, columns: list[str], rows: list[list], out: Console | None = None) -> None:
    """A table on a terminal (long cells fold onto more lines, never cut); plain
    tab-separated rows when the output is a pipe or a file, for scripts and `grep`."""
    cells = [[safe_text(v, keep_newlines=False) for v in row] for row in rows]
    out = out or console()
    if not out.is_terminal:
        out.file.write(title + "\n" + "\t".join(columns) + "\n")
        for row in cells:
            out.file.write("\t".join(row) + "\n")
        out.file.flush()
        return
    widths = [column_width(column, [row[k] for row in cells if k < len(row)]) for k, column in enumerate(columns)]
    needed = sum(w + 3 for w in widths) + 1  # each column's cells, padding and rule
    if needed > out.width:  # even folded, the table cannot fit: one paragraph per row, nothing cut
        out.print(Text(safe_text(title, keep_newlines=False)))
        for row in cells:
            for line in row_lines(columns, row, out.width - 1):
                out.print(Text(line))
        return
    table = Table(title=Text(safe_text(title, keep_newlines=False)), title_justify="left")  # Text: "[tokens]" is not markup
    for column, width in zip(columns, widths):
        table.add_column(Text(safe_text(column, keep_newlines=False)), overflow="fold", min_width=width)
    for row in cells:
        table.add_row(*map(Text, row))
    out.print(table)


def r2_or_none(evaluation) -> float | None:
    return evaluation.metrics.r2 if evaluation is not None and evaluation.ok else None


def format_tokens(prompt: int, completion: int) -> str:
    total = int(prompt or 0) + int(completion or 0)
    return f"{total:,}" if total else "0"


def show_evaluation(task, path, evaluation) -> None:
    out = console()
    m = evaluation.metrics
    status = "[green]ok[/green]" if evaluation.ok else f"[red]{evaluation.status}[/red]"
    folds = len(task.folds(evaluation.split))
    split = f"{evaluation.split} split" + (f", mean over {folds} folds" if folds > 1 else "")
    out.print(f"{escape(safe_text(path))} on {escape(task.name)} ({split}): {status}, {evaluation.seconds:.2f} s")
    if evaluation.message:
        out.print(safe_text(evaluation.message), markup=False)
    rows = [["all", f"{m.r2:.6f}", f"{m.nmse:.6f}", f"{m.nmae:.6f}", f"{m.combined_score:.6f}"]]
    if len(task.targets) > 1:
        for name, r2, nmse, nmae in zip(task.targets, m.r2_per_target, m.nmse_per_target, m.nmae_per_target):
            rows.append([name, f"{r2:.6f}", f"{nmse:.6f}", f"{nmae:.6f}", ""])
    print_table("metrics", ["target", "R²", "NMSE", "NMAE", "combined"], rows, out)
    if evaluation.params:
        shown = list(sorted(evaluation.params.items()))[:10]
        lines = [f"  {g}: {format_params(p)}" for g, p in shown]
        more = len(evaluation.params) - len(shown)
        out.print(f"fitted parameters ({evaluation.n_params} per group):")
        out.print("\n".join(lines) + (f"\n  … and {more} more groups" if more > 0 else ""), markup=False)


def write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()

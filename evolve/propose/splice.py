"""Turn a model's reply into a child program: find its code or diffs, splice them into the block.

A reply either rewrites the EVOLVE-BLOCK (a fenced or bare code block; when it repeats the
whole file with markers, only its block counts) or edits it with SEARCH/REPLACE diffs in
the OpenEvolve/aider format. Whatever the reply says, only the block of the parent
changes: the text outside the markers is copied byte for byte. A child that does not
parse or lacks the API functions is refused here, before it costs a scorer run.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

from evolve.status import Status
from evolve.program import (
    BLOCK_END,
    BLOCK_START,
    FIT_FUNCTIONS,
    ProgramError,
    block_bounds,
    parse_python,
    detect_api,
    ensure_block,
    extract_block,
    has_block,
    replace_block,
)

EDIT_MODES = ("diff", "full")
SPLICE_ERROR_KINDS = (Status.NO_CODE, Status.DIFF_NOT_APPLIED, Status.SYNTAX_ERROR, Status.MISSING_FUNCTION)
CODE_LANGUAGES = ("", "python", "py", "python3", "py3")

THINK_RE = re.compile(r"<think(?:ing)?>.*?</think(?:ing)?>", re.DOTALL | re.IGNORECASE)
FENCE_RE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:^[ \t]*\1[ \t]*$|\Z)", re.DOTALL | re.MULTILINE)
SEARCH_RE = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$")
DIVIDER_RE = re.compile(r"^\s*={5,9}\s*$")
REPLACE_RE = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$")
MAX_BARE_STARTS = 8
CODE_START_RE = re.compile(r"^(import |from \S+ import |def |async def |class |@|#|[A-Za-z_][\w, ]*\s*=[^=])")


class SpliceError(ValueError):
    """A reply that yields no scorable child; `kind` is one of SPLICE_ERROR_KINDS."""

    def __init__(self, kind: Status, reason: str):
        super().__init__(reason)
        self.kind = Status(kind)
        self.reason = reason


@dataclass(frozen=True)
class Splice:
    """A spliced child and how the reply edited the block ('diff' or 'full')."""

    program: str
    edit_mode: str


def strip_thinking(reply: str) -> str:
    """Blank out <think>...</think> sections (reasoning models put draft code there), keeping
    their line breaks so line numbers still count lines of the reply; unify line ends."""
    return THINK_RE.sub(lambda found: "\n" * found.group(0).count("\n"), (reply or "").replace("\r\n", "\n"))


# ---------------------------------------------------------------- code blocks


def fenced_blocks(reply: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block; an unclosed last fence runs to the end (truncated reply)."""
    return [(m.group(2).lower(), textwrap.dedent(m.group(3))) for m in FENCE_RE.finditer(reply)]


def parses(code: str) -> bool:
    try:
        parse_python(code)
    except (SyntaxError, ValueError):
        return False
    return True


def defines_api(code: str) -> bool:
    """True when the code (or its block) defines the fit functions or law(); broken code counts as not."""
    try:
        detect_api(code)
    except ProgramError:
        return False
    return True


def mentions_api(code: str, every: bool = True) -> bool:
    """A textual test for code that does not parse: does it at least define the fit
    functions (every one, or with `every=False` any one)?"""
    found = [bool(re.search(rf"^\s*def {name}\s*\(", code, re.MULTILINE)) for name in FIT_FUNCTIONS]
    return all(found) if every else any(found)


def pick_code_block(bodies: list[str]) -> str:
    """The block that defines the API (the last such, a model's final answer comes last), else the longest parsing one."""
    for test in (defines_api, mentions_api):
        chosen = [b for b in bodies if test(b)]
        if chosen:
            return chosen[-1]
    parsing = [b for b in bodies if parses(b)]
    return max(parsing or bodies, key=len)


def bare_code(text: str) -> str | None:
    """Code written without a fence: the run of lines from the first code-like line to the
    last one; when that does not parse, the longest run that parses and defines the API with
    only prose after it; else the unparsable run itself (so broken code is a syntax error,
    not a missing function).

    Runs start at code-like lines (only the first few are tried, to bound the work)."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if CODE_START_RE.match(line)][:MAX_BARE_STARTS]
    if not starts:
        return None
    if parses(text):
        return text
    run = code_run(lines, starts[0])
    if parses(run):
        return run
    longest = ""
    for first in starts:
        for end in range(len(lines), first, -1):
            candidate = "".join(lines[first:end])
            if parses(candidate):
                if defines_api(candidate) and not any(looks_like_code(line) for line in lines[end:]):
                    return candidate
                longest = max(longest, candidate, key=len)
                break
    if mentions_api(run, every=False) or not longest.strip():
        return run  # the API is there but broken: a syntax error, not a missing function
    return longest


def looks_like_code(line: str) -> bool:
    """An indented line, or one that starts like a statement."""
    return bool(line.strip()) and (line[:1].isspace() or bool(CODE_START_RE.match(line)) or line.lstrip()[:1] in ")]}")


def code_run(lines: list[str], first: int) -> str:
    """Lines from `first` to the last code-like one (indented, or starting like code), so
    the prose after unfenced code is not blamed for its syntax error."""
    last = len(lines)
    while last > first + 1 and not looks_like_code(lines[last - 1]):
        last -= 1
    return "".join(lines[first:last])


def extract_code(reply: str) -> str | None:
    """The code of a reply: the best fenced Python block, or the bare code when there is no fence."""
    text = strip_thinking(reply)
    if not text.strip():
        return None
    blocks = [body for language, body in fenced_blocks(text) if language in CODE_LANGUAGES and body.strip()]
    blocks = [b for b in blocks if not parse_diffs(b)]
    if blocks:
        return pick_code_block(blocks)
    if "```" in text or "~~~" in text:
        return None  # fenced, but only non-Python blocks (shell, output, text)
    return bare_code(text)


# ---------------------------------------------------------------- diffs


def is_marker(line: str) -> bool:
    stripped = line.strip()
    return stripped.startswith(BLOCK_START) or stripped.startswith(BLOCK_END)


def parse_diffs(reply: str) -> list[tuple[str, str]]:
    """(search, replace) texts of every SEARCH/REPLACE diff, in order; marker lines are dropped."""
    diffs: list[tuple[str, str]] = []
    state, search, replace = "outside", [], []
    for line in strip_thinking(reply).splitlines(keepends=True):
        bare = line.rstrip("\r\n")
        if state == "outside" and SEARCH_RE.match(bare):
            state, search, replace = "search", [], []
        elif state == "search" and DIVIDER_RE.match(bare):
            state = "replace"
        elif state == "replace" and REPLACE_RE.match(bare):
            diffs.append((joined(search), joined(replace)))
            state = "outside"
        elif state in ("search", "replace") and not is_marker(bare):
            (search if state == "search" else replace).append(bare + "\n")
    return diffs


def joined(lines: list[str]) -> str:
    return "".join(lines)


def leading(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def nonblank(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if line.strip()]


def tolerant_match(block_lines: list[str], search_lines: list[str]) -> tuple[int, int, int] | None:
    """Find SEARCH ignoring trailing spaces, blank lines and a uniform indentation shift.

    Returns (first block line, last block line + 1, indentation shift of the block
    relative to SEARCH), or None.
    """
    wanted = [search_lines[i] for i in nonblank(search_lines)]
    present = nonblank(block_lines)
    if not wanted:
        return None
    for start in range(len(present) - len(wanted) + 1):
        window = [block_lines[i] for i in present[start:start + len(wanted)]]
        shift = leading(window[0]) - leading(wanted[0])
        if all(b.strip() == s.strip() and leading(b) - leading(s) == shift for b, s in zip(window, wanted)):
            return present[start], present[start + len(wanted) - 1] + 1, shift
    return None


def longest_matched_prefix(block_lines: list[str], search_lines: list[str]) -> int:
    """How many leading non-blank SEARCH lines match somewhere: the next one is the culprit."""
    wanted = [search_lines[i] for i in nonblank(search_lines)]
    for k in range(len(wanted), 0, -1):
        if tolerant_match(block_lines, wanted[:k]) is not None:
            return k
    return 0


def reindent(lines: list[str], shift: int, unit: str) -> list[str]:
    """Shift REPLACE lines by the indentation difference found when matching SEARCH."""
    out = []
    for line in lines:
        if not line.strip():
            out.append("\n")
        elif shift >= 0:
            out.append(unit * shift + line)
        else:
            out.append(line[min(-shift, leading(line)):])
    return out


def apply_one(block: str, search: str, replace: str, number: int, outside: str = "") -> str:
    """Apply one diff: an exact match first, then a whitespace-tolerant one."""
    if not search.strip():
        return block + ("" if block.endswith("\n") or not block else "\n") + replace  # empty SEARCH appends
    at = line_start_find(block, search)
    if at >= 0:
        return block[:at] + replace + block[at + len(search):]
    block_lines = block.splitlines(keepends=True)
    if block_lines and not block_lines[-1].endswith("\n"):
        block_lines[-1] += "\n"
    search_lines = search.splitlines(keepends=True)
    found = tolerant_match(block_lines, search_lines)
    if found is None:
        raise SpliceError(Status.DIFF_NOT_APPLIED, unmatched_reason(block_lines, search_lines, number, outside, search))
    first, last, shift = found
    unit = "\t" if block_lines[first].startswith("\t") else " "
    new_lines = reindent(replace.splitlines(keepends=True), shift, unit)
    return "".join(block_lines[:first] + new_lines + block_lines[last:])


def line_start_find(text: str, part: str) -> int:
    """Index of the first occurrence of `part` that begins a line, or -1 (no mid-line matches)."""
    at = text.find(part)
    while at > 0 and text[at - 1] != "\n":
        at = text.find(part, at + 1)
    return at


def unmatched_reason(block_lines: list[str], search_lines: list[str], number: int, outside: str, search: str) -> str:
    wanted = [search_lines[i] for i in nonblank(search_lines)]
    k = longest_matched_prefix(block_lines, search_lines)
    culprit = wanted[min(k, len(wanted) - 1)].strip()
    where = "first line" if k == 0 else f"line {k + 1} of SEARCH (the {k} before it match)"
    reason = f"SEARCH block {number} not found in the EVOLVE-BLOCK; {where} does not match: {culprit[:120]!r}"
    if outside and search.strip() and search.strip() in outside:
        reason += " (that text is outside the EVOLVE-BLOCK, which is the only part that may change)"
    return reason


def apply_diffs(block: str, reply: str, outside: str = "") -> str:
    """The block after every diff of the reply, applied in order; raises SpliceError if one fails.

    `outside` (the program text around the block) only improves the error message.
    """
    diffs = parse_diffs(reply)
    if not diffs:
        raise SpliceError(Status.NO_CODE, "the reply has no SEARCH/REPLACE diff")
    for number, (search, replace) in enumerate(diffs, start=1):
        block = apply_one(block, search, replace, number, outside)
    return block


# ---------------------------------------------------------------- splicing


def block_of_reply_code(code: str) -> str:
    """A rewrite that repeats the whole file keeps only its block: the outside is not the model's to change.

    A stray marker line (one without its pair) is dropped, so the child keeps exactly one pair.
    """
    if has_block(code):
        try:
            return extract_block(code)
        except ProgramError:  # the end marker comes before the start marker
            pass
    return "".join(line for line in code.splitlines(keepends=True) if not is_marker(line))


def splice(program: str, reply: str, edit_mode: str) -> Splice:
    """The child program and how it was edited; raises SpliceError.

    Diffs are applied whatever the requested mode (the format is unambiguous); a reply
    without diffs is taken as a full rewrite of the block.
    """
    if edit_mode not in EDIT_MODES:
        raise ValueError(f"unknown edit mode {edit_mode!r} (choose from {', '.join(EDIT_MODES)})")
    program = ensure_block(program)
    if parse_diffs(reply):
        start, end = block_bounds(program)
        new_block = apply_diffs(program[start:end], reply, program[:start] + program[end:])
        mode = "diff"
    else:
        refuse_incomplete_diff(reply)
        code = extract_code(reply)
        if code is None or not code.strip():
            reason = "no SEARCH/REPLACE diff and no ```python block in the reply" if (reply or "").strip() else "the reply is empty"
            raise SpliceError(Status.NO_CODE, reason)
        new_block, mode = block_of_reply_code(code), "full"
        if not new_block.strip():
            raise SpliceError(Status.NO_CODE, "the reply's EVOLVE-BLOCK is empty")
    child = replace_block(program, new_block)
    check_child(child, reply)
    return Splice(child, mode)


def refuse_incomplete_diff(reply: str) -> None:
    """A SEARCH marker without its ======= and REPLACE lines (often a reply cut short) is a failed diff, not code."""
    if any(SEARCH_RE.match(line) for line in strip_thinking(reply).splitlines()):
        raise SpliceError(
            "diff_not_applied",
            "incomplete SEARCH/REPLACE diff: every <<<<<<< SEARCH needs a ======= line and a >>>>>>> REPLACE line",
        )


def splice_reply(program: str, reply: str, edit_mode: str) -> str:
    """The full child program for a reply, or SpliceError(kind, reason)."""
    return splice(program, reply, edit_mode).program


def check_child(child: str, reply: str | None = None) -> None:
    """Refuse a child that cannot be scored: it must parse and define the API.

    A syntax error names its line in the model's reply (what the model wrote and will be
    shown), else its line in the edited EVOLVE-BLOCK; never a line of the spliced file."""
    try:
        parse_python(child)
    except SyntaxError as exc:
        line = (exc.text or "").strip()
        shown = f": {line[:120]!r}" if line else ""
        raise SpliceError(Status.SYNTAX_ERROR, f"{syntax_error_place(child, reply, exc.lineno)}: {exc.msg}{shown}") from None
    except ValueError as exc:  # e.g. null bytes
        raise SpliceError(Status.SYNTAX_ERROR, str(exc)) from None
    try:
        detect_api(child)
    except ProgramError as exc:
        raise SpliceError(Status.MISSING_FUNCTION, str(exc)) from None


def syntax_error_place(child: str, reply: str | None, lineno: int | None) -> str:
    """'line N of the reply', 'line N of the edited EVOLVE-BLOCK' or 'at the end of the code'."""
    if lineno is None:
        return "somewhere in the code"
    if reply is None or not has_block(child):
        return f"line {lineno}"
    start, end = block_bounds(child)
    block_lines = child[start:end].splitlines()
    index = lineno - (child[:start].count("\n") + 1)
    if index >= len(block_lines):
        return "at the end of the code (an unclosed bracket, string or block?)"
    if index < 0:
        return f"line {lineno}"
    found = reply_line_of(block_lines, index, strip_thinking(reply).splitlines())
    return f"line {found} of the reply" if found else f"line {index + 1} of the edited EVOLVE-BLOCK"


def reply_line_of(block_lines: list[str], index: int, reply_lines: list[str]) -> int | None:
    """The reply line (1-based) holding block line `index`: among the reply lines with the
    same text, the one whose neighbours match the block's best."""
    wanted = block_lines[index].strip()
    if not wanted:
        return None
    candidates = [j for j, line in enumerate(reply_lines) if line.strip() == wanted]
    if not candidates:
        return None

    def agreement(j: int) -> int:
        return sum(
            1
            for step in range(-3, 4)
            if 0 <= index + step < len(block_lines) and 0 <= j + step < len(reply_lines)
            and block_lines[index + step].strip() == reply_lines[j + step].strip()
        )

    return max(candidates, key=lambda j: (agreement(j), -j)) + 1


# ---------------------------------------------------------------- prose


def reply_prose(reply: str, limit: int = 500) -> str:
    """The reply's words outside code and diffs, whitespace collapsed, cut to about `limit` characters."""
    text = FENCE_RE.sub(" ", strip_thinking(reply))
    kept, inside = [], False
    for line in text.splitlines():
        if SEARCH_RE.match(line):
            inside = True
        elif REPLACE_RE.match(line):
            inside = False
        elif not inside:
            kept.append(line)
    prose = " ".join(" ".join(kept).split())
    if len(prose) <= limit:
        return prose
    return prose[: limit - 1].rsplit(" ", 1)[0] + "…"

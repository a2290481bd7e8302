"""A program's text: its EVOLVE-BLOCK, which API it speaks, and wrapping `law()` files.

Two program APIs score:
- "fit": `fit_scaling_law(data_points, loss_values) -> params` and
  `scaling_law_func(data_points, params) -> predictions`, fitted per group;
  `fit_scaling_law` may take an optional `group` keyword to learn its group's name.
- "law": `law(input_data: list[dict], group: str) -> list[dict]`, already fitted.
Only the fit API evolves; `wrap_law_program` turns a law file into one.
"""

from __future__ import annotations

import ast
import hashlib
import textwrap
import threading

BLOCK_START = "# EVOLVE-BLOCK-START"
BLOCK_END = "# EVOLVE-BLOCK-END"
FIT_FUNCTIONS = ("fit_scaling_law", "scaling_law_func")
LAW_FUNCTION = "law"


PARSE_LOCK = threading.Lock()


def parse_python(text: str, mode: str = "exec") -> ast.AST:
    """ast.parse, one thread at a time: CPython 3.11's parser shares state between threads
    and can raise a spurious SystemError under concurrency (python/cpython#106905), and the
    loop parses candidates, and checks formula lines, from several threads. Every parse in
    evolve goes through here: one parse outside the lock races every parse inside it.

    Nesting deeper than MAX_NESTING is a SyntaxError, like any other text that is no program:
    CPython's parser gives up on deep nesting at a depth that shrinks with the caller's stack
    (RecursionError, or MemoryError), so a model's reply 3,000 unary minus signs deep stopped
    `evolve run`, and one 2,947 deep parsed in the proposer thread and then broke every reader
    of the archive called from a deeper stack (a notebook cell; attack round 6). A bound far
    below the parser's limit gives one answer from any stack."""
    with PARSE_LOCK:
        try:
            tree = ast.parse(text, mode=mode)
        except (RecursionError, MemoryError):
            raise SyntaxError("nested too deeply") from None
    if nesting(tree) > MAX_NESTING:
        raise SyntaxError(f"nested more than {MAX_NESTING} levels deep")
    return tree


MAX_NESTING = 200  # real programs and formulas nest a few dozen levels at most


def nesting(tree: ast.AST) -> int:
    """The depth of the syntax tree, counted without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


class ProgramError(ValueError):
    """A program that cannot be scored as written (syntax error, missing functions)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def top_level_functions(text: str) -> set[str]:
    """Names of the functions (and callables bound by assignment) defined at module level."""
    try:
        tree = parse_python(text)
    except SyntaxError as exc:
        raise ProgramError("syntax_error", f"line {exc.lineno}: {exc.msg}") from None
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def detect_api(text: str) -> str:
    """'fit' or 'law'; raises ProgramError naming what is missing."""
    names = top_level_functions(text)
    if all(f in names for f in FIT_FUNCTIONS):
        return "fit"
    if LAW_FUNCTION in names:
        return "law"
    missing = [f for f in FIT_FUNCTIONS if f not in names]
    raise ProgramError(
        "missing_function",
        f"defines neither {' and '.join(missing)} nor law(input_data, group)",
    )


def has_block(text: str) -> bool:
    return BLOCK_START in text and BLOCK_END in text


def block_bounds(text: str) -> tuple[int, int]:
    """Character offsets of the block's body: just after the start marker's line, at the end marker."""
    start = text.find(BLOCK_START)
    end = text.find(BLOCK_END, start + 1)
    if start < 0 or end < 0:
        raise ProgramError("missing_block", f"no {BLOCK_START} ... {BLOCK_END} markers")
    body_start = text.find("\n", start)
    body_start = len(text) if body_start < 0 else body_start + 1
    line_start = text.rfind("\n", 0, end) + 1
    return body_start, line_start


def extract_block(text: str) -> str:
    """The code between the markers (the part a model sees and rewrites)."""
    start, end = block_bounds(text)
    return text[start:end]


def replace_block(text: str, new_block: str) -> str:
    """The program with its block body replaced; everything outside stays byte for byte."""
    start, end = block_bounds(text)
    body = new_block if new_block.endswith("\n") or not new_block else new_block + "\n"
    return text[:start] + body + text[end:]


def ensure_block(text: str) -> str:
    """A program with markers: a file without them becomes one block as a whole."""
    if has_block(text):
        return text
    return f"{BLOCK_START}\n{text.rstrip()}\n{BLOCK_END}\n"


def wrap_law_program(text: str, features: tuple[str, ...], targets: tuple[str, ...]) -> str:
    """Turn a `law(input_data, group)` file into an evolvable fit-API program.

    The law keeps its fixed coefficients: `fit_scaling_law` only remembers the group
    name (it accepts the optional `group` keyword), and `scaling_law_func` calls the
    law on dict rows. A model can then evolve it into a law that fits its parameters.
    """
    law_code = extract_block(text) if has_block(text) else text
    adapter = textwrap.dedent(
        f'''
        FEATURES = {list(features)!r}
        TARGETS = {list(targets)!r}


        def fit_scaling_law(data_points, loss_values, group=None):
            """The wrapped law has fixed coefficients; only its group name is kept."""
            return {{"group": group}}


        def scaling_law_func(data_points, params):
            import numpy as np

            rows = [dict(zip(FEATURES, map(float, row))) for row in np.atleast_2d(data_points)]
            out = law(rows, params["group"])
            predictions = np.array([[float(o[t]) for t in TARGETS] for o in out])
            return predictions[:, 0] if len(TARGETS) == 1 else predictions
        '''
    )
    return f"{BLOCK_START}\n{law_code.rstrip()}\n{adapter}{BLOCK_END}\n"


def function_source(text: str, name: str) -> str | None:
    """The source of a top-level function, to show a law without its fitting code."""
    try:
        tree = parse_python(text)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return ast.get_source_segment(text, node)
    return None


def code_key(code: str) -> str:
    """A key equal for programs that differ only in comments or layout: they score the same,
    so the loop scores such a program once (its syntax tree is the key; raw text when it
    does not parse)."""
    try:
        text = ast.dump(parse_python(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        text = code
    return hashlib.sha256(text.encode()).hexdigest()

"""Splicing model replies into programs: code extraction, SEARCH/REPLACE diffs, full rewrites."""

from __future__ import annotations

import ast
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evolve.program import extract_block
from evolve.propose.splice import (
    SpliceError,
    apply_diffs,
    extract_code,
    parse_diffs,
    reply_prose,
    splice,
    splice_reply,
)

HEADER = '''"""Seed law for the SFT task: a shifted power law."""
import numpy as np

# EVOLVE-BLOCK-START
'''
BLOCK = '''def scaling_law_func(data_points, params):
    x = np.asarray(data_points, dtype=float)[:, 0]
    a, b, c = params
    return a * x ** (-b) + c


def fit_scaling_law(data_points, loss_values):
    x = np.asarray(data_points, dtype=float)[:, 0]
    y = np.asarray(loss_values, dtype=float)
    c = 0.9 * y.min()
    slope, intercept = np.polyfit(np.log(x), np.log(y - c), 1)
    return np.array([np.exp(intercept), -slope, c])
'''
FOOTER = '''# EVOLVE-BLOCK-END


if __name__ == "__main__":
    print(fit_scaling_law(np.array([[1.0], [2.0], [4.0]]), np.array([3.0, 2.5, 2.2])))
'''
PROGRAM = HEADER + BLOCK + FOOTER

NEW_BLOCK = '''import numpy as np
from evolve.fitting import varpro_fit


def scaling_law_func(data_points, params):
    x = np.asarray(data_points, dtype=float)[:, 0]
    b, a, c = params
    return a * x ** (-b) + c


def fit_scaling_law(data_points, loss_values):
    x = np.asarray(data_points, dtype=float)[:, 0]
    design = lambda t: np.column_stack([x ** (-t[0]), np.ones_like(x)])
    theta, coef = varpro_fit(design, [(0.0, 3.0)], np.asarray(loss_values, dtype=float))
    return np.array([theta[0], coef[0], coef[1]])
'''


def outside_unchanged(child: str) -> bool:
    """The child keeps every byte of PROGRAM before the block body and from the end marker on."""
    return child.startswith(HEADER) and child.endswith(FOOTER)


# ---------------------------------------------------------------- extract_code


def test_extract_code_takes_the_fenced_block_and_drops_the_prose():
    reply = f"I switch to variable projection so the linear terms are exact.\n\n```python\n{NEW_BLOCK}```\n\nThis should extrapolate better."
    assert extract_code(reply) == NEW_BLOCK


def test_extract_code_prefers_the_block_that_defines_the_api_over_a_snippet():
    snippet = "```python\nx = data_points[:, 0] ** -b\n```"
    reply = f"The key line is:\n{snippet}\nHere is the full block:\n```py\n{NEW_BLOCK}```\nAnd in a shell:\n```bash\npython law.py\n```"
    assert extract_code(reply) == NEW_BLOCK


def test_extract_code_takes_the_last_of_several_complete_blocks():
    first = NEW_BLOCK.replace("(0.0, 3.0)", "(0.0, 1.0)")
    reply = f"Draft:\n```python\n{first}```\nOn reflection, a wider bound:\n```python\n{NEW_BLOCK}```"
    assert extract_code(reply) == NEW_BLOCK


def test_extract_code_reads_bare_code_between_prose():
    reply = f"Sure! Here is the improved law.\n{NEW_BLOCK}\nIt uses two linear coefficients."
    assert extract_code(reply).strip() == NEW_BLOCK.strip()


def test_extract_code_ignores_draft_code_inside_think_tags():
    reply = f"<think>maybe\n```python\ndef scaling_law_func(x, p): pass\ndef fit_scaling_law(x, y): pass\n```\n</think>\nFinal:\n```python\n{NEW_BLOCK}```"
    assert extract_code(reply) == NEW_BLOCK


def test_extract_code_keeps_an_unclosed_fence_of_a_truncated_reply():
    truncated = NEW_BLOCK[: NEW_BLOCK.index("    theta, coef")]
    assert extract_code(f"Here:\n```python\n{truncated}") == truncated


@pytest.mark.parametrize("reply", ["", "   \n", "I cannot improve this law further.", "Run:\n```bash\npip install numpy\n```"])
def test_extract_code_finds_nothing_in_prose_or_empty_replies(reply):
    assert extract_code(reply) is None


# ---------------------------------------------------------------- diffs

DIFF_REPLY = '''Two changes: a data offset term inside the power, and a floor on the fitted exponent.

```
<<<<<<< SEARCH
    a, b, c = params
    return a * x ** (-b) + c
=======
    a, b, c = params
    return a * (x + 100.0) ** (-b) + c
>>>>>>> REPLACE
```

```python
<<<<<<< SEARCH
    return np.array([np.exp(intercept), -slope, c])
=======
    return np.array([np.exp(intercept), max(-slope, 1e-3), c])
>>>>>>> REPLACE
```
'''


def test_parse_diffs_reads_every_diff_in_order():
    diffs = parse_diffs(DIFF_REPLY)
    assert len(diffs) == 2
    assert diffs[0][0] == "    a, b, c = params\n    return a * x ** (-b) + c\n"
    assert diffs[1][1] == "    return np.array([np.exp(intercept), max(-slope, 1e-3), c])\n"


def test_parse_diffs_drops_marker_lines_a_model_copied():
    reply = "<<<<<<< SEARCH\n# EVOLVE-BLOCK-START\ndef f():\n=======\n# EVOLVE-BLOCK-START\ndef g():\n>>>>>>> REPLACE\n"
    assert parse_diffs(reply) == [("def f():\n", "def g():\n")]


def test_apply_diffs_applies_several_diffs_exactly():
    new = apply_diffs(BLOCK, DIFF_REPLY)
    assert "(x + 100.0) ** (-b)" in new
    assert "max(-slope, 1e-3)" in new
    assert new.count("\n") == BLOCK.count("\n")


def test_apply_diffs_tolerates_indentation_drift_and_trailing_spaces():
    # The model dropped the function body's indentation and added trailing spaces.
    reply = (
        "<<<<<<< SEARCH\n"
        "a, b, c = params   \n"
        "return a * x ** (-b) + c\n"
        "=======\n"
        "a, b, c = params\n"
        "if True:\n"
        "    x = x + 1.0\n"
        "return a * x ** (-b) + c\n"
        ">>>>>>> REPLACE\n"
    )
    new = apply_diffs(BLOCK, reply)
    assert "    a, b, c = params\n    if True:\n        x = x + 1.0\n    return a * x ** (-b) + c\n" in new
    ast.parse(new)


def test_apply_diffs_tolerates_missing_blank_lines_between_functions():
    reply = "<<<<<<< SEARCH\n    return a * x ** (-b) + c\ndef fit_scaling_law(data_points, loss_values):\n=======\n    return a * x ** (-b) + c + 0.0\n\n\ndef fit_scaling_law(data_points, loss_values):\n>>>>>>> REPLACE\n"
    new = apply_diffs(BLOCK, reply)
    assert "return a * x ** (-b) + c + 0.0\n\n\ndef fit_scaling_law" in new


def test_a_diff_that_does_not_apply_names_the_first_unmatched_line():
    reply = "<<<<<<< SEARCH\n    a, b, c = params\n    return a * x ** (-alpha) + c\n=======\n    pass\n>>>>>>> REPLACE\n"
    with pytest.raises(SpliceError) as caught:
        apply_diffs(BLOCK, reply)
    assert caught.value.kind == "diff_not_applied"
    assert "return a * x ** (-alpha) + c" in caught.value.reason
    assert "line 2 of SEARCH" in caught.value.reason


def test_an_incomplete_diff_is_reported_as_such_not_as_broken_code():
    cut = DIFF_REPLY[: DIFF_REPLY.index("=======")]
    with pytest.raises(SpliceError) as caught:
        splice_reply(PROGRAM, cut, "diff")
    assert caught.value.kind == "diff_not_applied"
    assert "incomplete SEARCH/REPLACE diff" in caught.value.reason


def test_later_diffs_apply_to_the_result_of_earlier_ones():
    reply = (
        "<<<<<<< SEARCH\n    a, b, c = params\n=======\n    a, b, c, d = params\n>>>>>>> REPLACE\n"
        "<<<<<<< SEARCH\n    a, b, c, d = params\n    return a * x ** (-b) + c\n=======\n"
        "    a, b, c, d = params\n    return a / (d + x ** b) + c\n>>>>>>> REPLACE\n"
    )
    assert "return a / (d + x ** b) + c" in apply_diffs(BLOCK, reply)


# ---------------------------------------------------------------- splice_reply


def test_diff_reply_changes_only_the_block():
    child = splice_reply(PROGRAM, DIFF_REPLY, "diff")
    assert outside_unchanged(child)
    assert "(x + 100.0)" in extract_block(child)


def test_diff_mode_accepts_a_full_rewrite_when_the_reply_has_no_diff():
    result = splice(PROGRAM, f"Rewrote it.\n```python\n{NEW_BLOCK}```", "diff")
    assert result.edit_mode == "full"
    assert extract_block(result.program) == NEW_BLOCK
    assert outside_unchanged(result.program)


def test_full_rewrite_of_the_whole_file_keeps_the_outside_of_the_parent():
    rewritten_file = (
        '"""A docstring the model invented."""\nimport numpy as np\nimport os\n\n'
        f"# EVOLVE-BLOCK-START\n{NEW_BLOCK}# EVOLVE-BLOCK-END\n\nos.remove('everything')\n"
    )
    child = splice_reply(PROGRAM, f"Full file:\n```python\n{rewritten_file}```", "full")
    assert outside_unchanged(child)
    assert extract_block(child) == NEW_BLOCK
    assert "os.remove" not in child and "invented" not in child


def test_a_stray_marker_line_in_a_rewrite_is_dropped():
    child = splice_reply(PROGRAM, f"```python\n# EVOLVE-BLOCK-START\n{NEW_BLOCK}```", "full")
    assert child.count("# EVOLVE-BLOCK-START") == 1 and child.count("# EVOLVE-BLOCK-END") == 1
    assert extract_block(child) == NEW_BLOCK


def test_windows_line_ends_and_an_indented_fence_still_splice():
    indented = "".join("   " + line if line.strip() else line for line in NEW_BLOCK.splitlines(keepends=True))
    reply = f"1. The new block:\n   ```python\n{indented}   ```\n".replace("\n", "\r\n")
    child = splice_reply(PROGRAM, reply, "full")
    assert extract_block(child) == NEW_BLOCK and "\r" not in child


def test_broken_code_is_a_syntax_error_naming_the_line():
    broken = NEW_BLOCK.replace("return np.array([theta[0], coef[0], coef[1]])", "return np.array([theta[0], coef[0]")
    with pytest.raises(SpliceError) as caught:
        splice_reply(PROGRAM, f"```python\n{broken}```", "full")
    assert caught.value.kind == "syntax_error"
    reply_line = 1 + next(i for i, line in enumerate(broken.splitlines(), start=1) if "coef[0]" in line and "return" in line)
    assert caught.value.reason.startswith(f"line {reply_line} of the reply: "), caught.value.reason


def test_code_without_the_api_functions_is_refused():
    reply = "```python\ndef scaling_law_func(data_points, params):\n    return data_points[:, 0] * params[0]\n```"
    with pytest.raises(SpliceError) as caught:
        splice_reply(PROGRAM, reply, "full")
    assert caught.value.kind == "missing_function"
    assert "fit_scaling_law" in caught.value.reason


@pytest.mark.parametrize("reply", ["", "Sorry, I have no further ideas."])
def test_replies_without_code_are_no_code(reply):
    with pytest.raises(SpliceError) as caught:
        splice_reply(PROGRAM, reply, "diff")
    assert caught.value.kind == "no_code"


def test_a_diff_touching_code_outside_the_block_fails_and_says_so():
    reply = '<<<<<<< SEARCH\nif __name__ == "__main__":\n=======\nif False:\n>>>>>>> REPLACE\n'
    with pytest.raises(SpliceError) as caught:
        splice_reply(PROGRAM, reply, "diff")
    assert caught.value.kind == "diff_not_applied"
    assert "outside the EVOLVE-BLOCK" in caught.value.reason


def test_unknown_edit_mode_is_refused():
    with pytest.raises(ValueError, match="unknown edit mode"):
        splice_reply(PROGRAM, DIFF_REPLY, "patch")


def test_reply_prose_keeps_words_and_drops_code_and_diffs():
    prose = reply_prose(DIFF_REPLY)
    assert prose == "Two changes: a data offset term inside the power, and a floor on the fitted exponent."
    long_reply = "word " * 400 + f"```python\n{NEW_BLOCK}```"
    assert len(reply_prose(long_reply, 500)) <= 500


# ---------------------------------------------------------------- properties

SAFE_CHARS = st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters="<>")
LINE = st.text(SAFE_CHARS, max_size=30).filter(lambda s: not re.fullmatch(r"\s*=+\s*", s) and "EVOLVE-BLOCK" not in s)


def diff_reply(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


def first_line_run(lines: list[str], run: list[str]) -> int:
    return next(i for i in range(len(lines)) if lines[i : i + len(run)] == run)


@settings(max_examples=150, deadline=None)
@given(st.lists(LINE, min_size=1, max_size=12), st.data(), st.lists(LINE, max_size=4))
def test_replacing_any_run_of_block_lines_gives_the_expected_text(lines, data, replace_lines):
    i = data.draw(st.integers(0, len(lines) - 1))
    j = data.draw(st.integers(i + 1, len(lines)))
    run = lines[i:j]
    if not any(line.strip() for line in run):
        return  # an empty SEARCH means "append", a different rule tested elsewhere
    block = "".join(line + "\n" for line in lines)
    search = "".join(line + "\n" for line in run)
    replace = "".join(line + "\n" for line in replace_lines)
    first = first_line_run(lines, run)
    expected = "".join(line + "\n" for line in lines[:first] + replace_lines + lines[first + len(run) :])
    assert apply_diffs(block, diff_reply(search, replace)) == expected


INDENTED = st.lists(
    st.tuples(st.integers(0, 3), st.from_regex(r"[a-z][a-z0-9_]{0,8} = [1-9][0-9]{0,2}", fullmatch=True)),
    min_size=2,
    max_size=8,
    unique_by=lambda line: line[1],  # one place where SEARCH can match
)


@settings(max_examples=100, deadline=None)
@given(INDENTED, st.data())
def test_a_search_with_shifted_indentation_still_applies(body, data):
    lines = ["    " * (depth + 1) + text for depth, text in body]
    block = "".join(line + "\n" for line in lines)
    i = data.draw(st.integers(0, len(lines) - 1))
    j = data.draw(st.integers(i + 1, len(lines)))
    shift = min(len(line) - len(line.lstrip()) for line in lines[i:j])
    search = "".join(line[shift:] + "\n" for line in lines[i:j])  # the model lost the common indentation
    new = apply_diffs(block, diff_reply(search, "NEW = 1\n"))
    assert new == "".join(line + "\n" for line in lines[:i] + [" " * shift + "NEW = 1"] + lines[j:])


OUTSIDE = st.lists(st.from_regex(r"(# [a-z ]{0,20}|[A-Z]{1,5} = [1-9][0-9]{0,3})", fullmatch=True), max_size=5)


@settings(max_examples=60, deadline=None)
@given(OUTSIDE, OUTSIDE, OUTSIDE, OUTSIDE, st.sampled_from(["diff", "full"]), st.booleans())
def test_splicing_never_changes_the_text_outside_the_markers(before, after, reply_before, reply_after, mode, as_diff):
    head = "".join(line + "\n" for line in before) + "# EVOLVE-BLOCK-START\n"
    tail = "# EVOLVE-BLOCK-END\n" + "".join(line + "\n" for line in after)
    program = head + BLOCK + tail
    if as_diff:
        reply = diff_reply("    a, b, c = params\n", "    a, b, c = params\n    b = abs(b)\n")
    else:
        whole = "".join(line + "\n" for line in reply_before) + f"# EVOLVE-BLOCK-START\n{NEW_BLOCK}# EVOLVE-BLOCK-END\n"
        reply = f"```python\n{whole}{''.join(line + chr(10) for line in reply_after)}```"
    child = splice_reply(program, reply, mode)
    assert child.startswith(head) and child.endswith(tail)
    assert child[len(head) : len(child) - len(tail)] == extract_block(child)

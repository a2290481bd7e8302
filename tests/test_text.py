"""Program-written text on its way to a terminal or a page (attack hunt, 2026-12-03)."""

from __future__ import annotations

import io
import json
import sys
import unicodedata
from pathlib import Path

import pytest
from rich.console import Console

from evolve.text import safe_text

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "tasks" / "sft_scaling_law" / "seeds"


def test_every_control_format_and_separator_character_is_replaced():
    unsafe = [chr(c) for c in range(sys.maxunicode + 1)
              if unicodedata.category(chr(c)) in ("Cc", "Cf", "Zl", "Zp") and chr(c) not in "\t\n"]
    text = "".join(unsafe)
    assert safe_text(text, limit=0) == "?" * len(unsafe)
    assert safe_text("total: 12\u061c-3 ok\u2028next", limit=0) == "total: 12?-3 ok?next"
    assert safe_text("a\tb\nc é ∑ 日本", limit=0) == "a\tb\nc é ∑ 日本"  # text people write is kept


@pytest.mark.parametrize("message", ["[/oops]", "[link=https://evil.example/x]click[/link] [conceal]hidden[/conceal]"])
def test_a_seed_s_error_message_is_shown_as_text_not_markup(message):
    from evolve.cli.progress import RunProgress
    from evolve.scoring.scorer import Evaluation
    from evolve.metrics import failed_metrics

    out = Console(file=io.StringIO(), force_terminal=True, width=200, color_system=None)
    RunProgress(console=out).seed("evil.py", Evaluation("exception", "validation", failed_metrics(1), message=f"RuntimeError: {message}"))
    shown = out.file.getvalue()
    assert message in shown and "\x1b]8" not in shown and "\x1b[8m" not in shown  # no hyperlink, no concealed text


def test_diff_and_report_show_program_text_without_escapes_or_bidi(tmp_path, capsys):
    from evolve.cli.main import main
    from evolve.report.html import write_report

    hostile = (SEEDS / "human.py").read_text() + "\naccess = 'user\u202e \u2066# admin\u2069'  # \x1b]0;PWNED\x07\x1b[2J\n"
    seed = tmp_path / "hostile.py"
    seed.write_text(hostile)
    run = tmp_path / "run"
    assert main(["run", "sft_scaling_law", "--seed-law", str(seed), "--iterations", "1", "--run-dir", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["archive", str(run), "list", "--json"]) == 0
    last = max(p["id"] for p in json.loads(capsys.readouterr().out))  # the offline child, another program than the seed
    assert main(["archive", str(run), "diff", "1", str(last)]) == 0
    diff = capsys.readouterr().out
    assert "PWNED" in diff and not any(c in diff for c in "\x1b\x07\u202e\u2066\u2069")
    page = write_report(run, tmp_path / "report.html", run_code=False).read_text()
    assert "PWNED" in page and not any(c in page for c in "\x1b\x07\u202e\u2066\u2069")

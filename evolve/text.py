"""Text for people: the one copy of each formatter, and the boundary for program-written text.

Anything a candidate program controls (its error messages, explanations, formulas) is
untrusted: `safe_text` is applied where such text leaves the parent for a terminal, a CSV
cell or a page, so escape sequences, lone surrogates and other control characters never
reach them, and its size is bounded.
"""

from __future__ import annotations

import math
import re
import time

# Every control (Unicode category Cc, but tab and newline), format character (Cf: bidi
# overrides and marks, zero-width and invisible characters, soft hyphen, tags) and line or
# paragraph separator (Zl, Zp): each can rewrite what a terminal or a page shows. The ranges
# are those of Unicode 15 (tests/test_text.py checks them against unicodedata).
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)
_SURROGATES = re.compile("[\ud800-\udfff]")
_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
SAFE_TEXT_CHARS = 4_000


def safe_text(text: object, limit: int = SAFE_TEXT_CHARS, keep_newlines: bool = True) -> str:
    """Program-controlled text made harmless for a terminal or page: controls, escape
    sequences and lone surrogates become '?', and it is cut to `limit` characters."""
    value = str(text) if text is not None else ""
    value = _SURROGATES.sub("?", value)
    value = value.replace("\r\n", "\n")
    if not keep_newlines:
        value = value.replace("\n", " ").replace("\t", " ")
    value = _UNSAFE.sub("?", value)
    return shorten(value, limit) if limit else value


def csv_cell(value: object) -> object:
    """A CSV cell a spreadsheet will not run: text starting like a formula gets a leading quote."""
    if not isinstance(value, str):
        return value
    value = safe_text(value, keep_newlines=False)
    return "'" + value if value.startswith(_CSV_FORMULA_START) else value


def shorten(text: str, width: int, at_word: bool = False) -> str:
    """`text` cut to `width` characters with an ellipsis (at a word boundary when asked)."""
    if len(text) <= width:
        return text
    cut = text[: max(1, width - 1)]
    if at_word and " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut + "…"


def name_some(names, limit: int = 10) -> str:
    """The first `limit` names, comma-separated, and how many there are when some are left out."""
    names = [str(n) for n in names]
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


def one_line(text: str) -> str:
    """Whitespace folded to single spaces: for messages that must stay on one line."""
    return " ".join(str(text).split())


def format_r2(value: float | None, digits: int = 4) -> str:
    """An R² for a table; never cut (a number is never truncated), '—' when there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def format_timestamp(stamp: float | None) -> str:
    """A Unix time as local 'YYYY-MM-DD HH:MM', '—' when unknown."""
    if not stamp:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(stamp)))


def format_seconds(seconds: float | None) -> str:
    """A duration: '0.42 s', '12.3 s', '4 min 05 s'."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"


def format_params(values) -> str:
    """Fitted parameters for a table: '[1.2, 3.4e-05]', or why there are none."""
    if values is None:
        return "(not numeric)"
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def strict_json(value, indent: int | None = 2) -> str:
    """JSON any strict parser reads: NaN and infinities become null, text is made safe."""
    import json

    def clean(v):
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, str):
            return safe_text(v, limit=0)
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if hasattr(v, "item") and callable(v.item):  # numpy scalars
            return clean(v.item())
        return v

    return json.dumps(clean(value), indent=indent, allow_nan=False, default=str)

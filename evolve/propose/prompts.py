"""Render the chat messages for one proposal from the Jinja2 templates in prompts/.

Python only gathers facts (the task, the parent's block and scores, inspirations,
recent failures) into plain dicts; wording lives in the templates, so users can
supply their own prompts folder without touching code. Templates use StrictUndefined:
a typo in a template fails loudly instead of silently dropping a section.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import jinja2
import numpy as np

from evolve.program import block_bounds, extract_block, has_block, parse_python
from evolve.propose.base import ProposalRequest
from evolve.records import ProgramRecord
from evolve.propose.splice import EDIT_MODES
from evolve.tasks import Task, data_root

SYSTEM_TEMPLATE = "system.j2"
USER_TEMPLATE = "user.j2"
PROMPT_STYLES = ("full", "compact")
# (system, user) templates per prompt style. The compact prompt is for small models (a 135M
# model cannot follow the full one): one instruction and the parent's block, and it always
# asks for the whole block back in one fence (small models do not write SEARCH/REPLACE diffs).
STYLE_TEMPLATES = {"full": (SYSTEM_TEMPLATE, USER_TEMPLATE), "compact": ("compact_system.j2", "compact_user.j2")}
PARENT_MESSAGE_CHARS = 600  # tail of the parent's failure message shown to the model
FAILURE_MESSAGE_CHARS = 300  # tail of each recent failure's message
FAILURE_EXPLANATION_CHARS = 160


class PromptError(ValueError):
    """A prompts folder or template that cannot be rendered; its message is one line."""


@lru_cache(maxsize=8)
def environment(prompts_dir: Path, fallback: Path | None = None) -> jinja2.Environment:
    """Templates from `prompts_dir`, then (for templates it lacks, such as the compact ones
    in an older custom folder) from `fallback`, the shipped prompts."""
    if not (prompts_dir / SYSTEM_TEMPLATE).is_file() or not (prompts_dir / USER_TEMPLATE).is_file():
        raise PromptError(f"prompts folder {prompts_dir} needs {SYSTEM_TEMPLATE} and {USER_TEMPLATE}")
    folders = [str(prompts_dir)] + ([str(fallback)] if fallback is not None and fallback != prompts_dir else [])
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folders),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
    )
    env.filters["num"] = format_number
    return env


def format_number(value: float | None, digits: int = 5) -> str:
    """Short, stable number text: 0.98731, 1.2346e-05, 819200."""
    if value is None:
        return "n/a"
    value = float(value)
    if not np.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e7:
        return str(int(value))
    return f"{value:.{digits}g}"


def render_messages(request: ProposalRequest, prompts_dir: Path | None = None, style: str = "full") -> list[dict]:
    """The chat messages (system, then user) asking for one child of request.parent, in the
    given prompt style (full or compact)."""
    if request.edit_mode not in EDIT_MODES:
        raise PromptError(f"unknown edit mode {request.edit_mode!r} (choose from {', '.join(EDIT_MODES)})")
    if style not in STYLE_TEMPLATES:
        raise PromptError(f"unknown prompt style {style!r} (choose from {', '.join(PROMPT_STYLES)})")
    shipped = data_root("prompts")
    folder = Path(prompts_dir).resolve() if prompts_dir is not None else shipped
    env = environment(folder, shipped)
    context = prompt_context(request)
    system_name, user_name = STYLE_TEMPLATES[style]
    try:
        system = env.get_template(system_name).render(**context)
        user = env.get_template(user_name).render(**context)
    except jinja2.TemplateError as exc:
        where = f"{exc.filename}:{exc.lineno}: " if isinstance(exc, jinja2.TemplateSyntaxError) else ""
        raise PromptError(f"cannot render prompts in {folder}: {where}{exc}") from None
    return [{"role": "system", "content": tidy(system)}, {"role": "user", "content": tidy(user)}]


def tidy(text: str) -> str:
    """Without leading or trailing blank lines; the inside (code included) is left as rendered."""
    return text.strip("\n") + "\n"


def prompt_context(request: ProposalRequest) -> dict:
    parent_code = request.parent.code
    inspirations = [r for r in request.inspirations if r.code != parent_code]
    return {
        "task": task_context(request.task),
        "edit_mode": request.edit_mode,
        "parent": program_context(request.parent, request.task.targets, PARENT_MESSAGE_CHARS),
        "outside_imports": outside_imports(parent_code),
        "inspirations": [program_context(r, request.task.targets, FAILURE_MESSAGE_CHARS) for r in inspirations],
        "failures": [failure_context(r) for r in request.failures],
    }


def task_context(task: Task) -> dict:
    """What the model needs to know about the data: columns, ranges, groups, the cap, the validation rule."""
    train = task.train
    return {
        "name": task.name,
        "description": task.description,
        "features": list(task.features),
        "targets": list(task.targets),
        "n_features": len(task.features),
        "n_targets": len(task.targets),
        "param_cap": task.param_cap,
        "n_groups": len(train.group_names()),
        "n_rows": len(train),
        "group_examples": train.group_names()[:3],
        "feature_ranges": column_ranges(task.features, train.X),
        "target_ranges": column_ranges(task.targets, train.y),
        "validation_column": task.validation.column,
    }


def column_ranges(names: tuple[str, ...], values: np.ndarray) -> list[dict]:
    return [{"name": n, "min": float(values[:, j].min()), "max": float(values[:, j].max())} for j, n in enumerate(names)]


def block_of(code: str) -> str:
    return (extract_block(code) if has_block(code) else code).strip("\n")


def tail(text: str, limit: int) -> str:
    """The end of a message (a traceback's last lines say what went wrong), on few lines."""
    text = (text or "").strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def program_context(record: ProgramRecord, targets: tuple[str, ...], message_chars: int) -> dict:
    """A program's block and its validation scores, as the templates show them.

    Over-cap programs were fitted and scored, so their metrics are shown with the status.
    """
    evaluation = record.validation
    metrics = evaluation.metrics
    scored = evaluation.ok or evaluation.status == "over_cap"
    per_target = [
        {"name": name, "r2": r2, "nmse": nmse, "nmae": nmae}
        for name, r2, nmse, nmae in zip(targets, metrics.r2_per_target, metrics.nmse_per_target, metrics.nmae_per_target)
    ]
    return {
        "block": block_of(record.code),
        "status": evaluation.status,
        "ok": evaluation.ok,
        "scored": scored,
        "message": tail(evaluation.message, message_chars),
        "r2": metrics.r2,
        "nmse": metrics.nmse,
        "nmae": metrics.nmae,
        "per_target": per_target if scored else [],
        "n_params": evaluation.n_params,
    }


def failure_context(record: ProgramRecord) -> dict:
    return {
        "status": record.validation.status,
        "message": " ".join(tail(record.validation.message, FAILURE_MESSAGE_CHARS).split()),
        "explanation": tail_words(record.explanation, FAILURE_EXPLANATION_CHARS),
    }


def tail_words(text: str, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def outside_imports(code: str) -> list[str]:
    """Import statements outside the block: the model sees only the block, so it must know what is already there."""
    if not has_block(code):
        return []
    start, end = block_bounds(code)
    outside = code[:start] + code[end:]  # keeps the marker lines, which are comments
    try:
        tree = parse_python(outside)
    except SyntaxError:
        return []
    return [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]

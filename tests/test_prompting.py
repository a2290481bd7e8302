"""Prompt rendering: what the model is told about the task, the parent, inspirations and failures."""

from __future__ import annotations

import numpy as np
import pytest

from evolve.metrics import compute_metrics, failed_metrics
from evolve.program import extract_block
from evolve.propose.prompts import PromptError, render_messages
from evolve.propose.base import ProposalRequest
from evolve.records import ProgramRecord
from evolve.scoring.scorer import Evaluation
from evolve.tasks import load_task, shipped_task_names

PROGRAM = '''"""Seed law: a shifted power law, fitted in log space."""
import numpy as np

# EVOLVE-BLOCK-START
def scaling_law_func(data_points, params):
    x = np.asarray(data_points, dtype=float)[:, 0]
    a, b, c = params
    return a * x ** (-b) + c


def fit_scaling_law(data_points, loss_values):
    return np.array([1.0, 0.1, 0.5])
# EVOLVE-BLOCK-END

SECRET_OUTSIDE = "text after the block that the model never needs"
'''


@pytest.fixture(scope="module")
def sft():
    return load_task("sft_scaling_law")


@pytest.fixture(scope="module")
def mixture():
    return load_task("domain_mixture_scaling_law")


def evaluation(n_targets: int, status: str = "ok", message: str = "", n_params: int | None = 3) -> Evaluation:
    truth = np.arange(1.0, 1.0 + 4 * n_targets).reshape(4, n_targets)
    metrics = compute_metrics(truth * 1.01, truth) if status in ("ok", "over_cap") else failed_metrics(n_targets)
    return Evaluation(status, "validation", metrics, message, n_params=n_params if status in ("ok", "over_cap") else None)


def request_for(task, edit_mode="diff", **kwargs) -> ProposalRequest:
    parent = ProgramRecord(PROGRAM, evaluation(len(task.targets)), id=1)
    return ProposalRequest(task=task, parent=parent, edit_mode=edit_mode, **kwargs)


def test_messages_are_a_system_then_a_user_message(sft):
    messages = render_messages(request_for(sft))
    assert [m["role"] for m in messages] == ["system", "user"]
    assert all(isinstance(m["content"], str) and m["content"].strip() for m in messages)


def test_system_prompt_states_the_task_api_cap_rules_and_helpers(sft):
    system = render_messages(request_for(sft))[0]["content"]
    assert sft.description in system
    assert "`sft_data_size`" in system and "`sft_loss`" in system
    assert "At most 4 per group" in system
    assert "fit_scaling_law(data_points, loss_values)" in system and "scaling_law_func(data_points, params)" in system
    assert "shape (n, 1)" in system and "(n,)" in system
    assert "each row alone" in system and "no min, max, mean" in system
    assert "from evolve.fitting import minimize_multistart, least_squares_multistart, varpro_fit, huber, pseudo_huber" in system
    assert "Only numpy, scipy" in system and "evolve.fitting" in system and "network" in system
    assert "largest `sft_data_size`" in system  # validation extrapolates


def test_features_and_targets_are_listed_in_column_order(mixture):
    system = render_messages(request_for(mixture))[0]["content"]
    positions = [system.index(f"`{name}`:") for name in (*mixture.features, *mixture.targets)]
    assert positions == sorted(positions)
    assert "shape (n, 5)" in system


def test_diff_mode_shows_the_diff_format_and_full_mode_the_fence(sft):
    diff_system = render_messages(request_for(sft, "diff"))[0]["content"]
    full_system = render_messages(request_for(sft, "full"))[0]["content"]
    assert "<<<<<<< SEARCH" in diff_system and ">>>>>>> REPLACE" in diff_system
    assert "<<<<<<< SEARCH" not in full_system
    assert "complete new EVOLVE-BLOCK in one ```python fence" in full_system


def test_user_prompt_shows_the_parent_block_verbatim_and_not_the_rest_of_the_file(sft):
    user = render_messages(request_for(sft))[1]["content"]
    assert extract_block(PROGRAM).rstrip("\n") in user  # blank lines kept, so SEARCH text can be copied
    assert "SECRET_OUTSIDE" not in user and "Seed law" not in user
    assert "`import numpy as np`" in user  # what the block may rely on


def test_user_prompt_shows_the_parent_scores(sft):
    user = render_messages(request_for(sft))[1]["content"]
    parent = request_for(sft).parent.validation
    assert f"R² {parent.metrics.r2:.5g}" in user and f"NMSE {parent.metrics.nmse:.5g}" in user
    assert "3 params/group" in user
    assert "Per target" not in user  # one target: the aggregate says it all


def test_multi_target_parent_shows_per_target_scores(mixture):
    user = render_messages(request_for(mixture))[1]["content"]
    for name in mixture.targets:
        assert f"- `{name}`: R² " in user


def test_failed_parent_shows_its_status_and_the_tail_of_its_message(sft):
    traceback = "Traceback (most recent call last):\n" + "  frame\n" * 300 + "ZeroDivisionError: division by zero"
    parent = ProgramRecord(PROGRAM, evaluation(1, "exception", traceback), id=2)
    user = render_messages(ProposalRequest(task=sft, parent=parent))[1]["content"]
    assert "failed: exception" in user
    assert "ZeroDivisionError: division by zero" in user
    assert user.count("frame") < 100


def test_inspirations_and_failures_are_shown_compactly(sft):
    better = PROGRAM.replace("0.5])", "0.7])")
    inspiration = ProgramRecord(better, evaluation(1, n_params=4), id=5)
    over_cap = ProgramRecord(PROGRAM.replace("0.5])", "0.9, 1.0])"), evaluation(1, "over_cap", "5 fitted parameters per group; the task allows 4", 5), id=6)
    failures = (
        ProgramRecord("", evaluation(1, "diff_not_applied", "SEARCH block 1 not found in the EVOLVE-BLOCK"), explanation="Added an offset term."),
        ProgramRecord(PROGRAM, evaluation(1, "timeout", "took longer than 60 s")),
    )
    user = render_messages(request_for(sft, inspirations=(inspiration, over_cap), failures=failures))[1]["content"]
    assert "return np.array([1.0, 0.1, 0.7])" in user and "4 params/group" in user
    assert "status over_cap" in user
    assert "- diff_not_applied: SEARCH block 1 not found in the EVOLVE-BLOCK (it tried: Added an offset term.)" in user
    assert "- timeout: took longer than 60 s" in user
    assert user.count("SECRET_OUTSIDE") == 0
    assert user.rstrip().endswith("SEARCH/REPLACE diffs against the parent's block.")


def test_an_inspiration_identical_to_the_parent_is_not_repeated(sft):
    request = request_for(sft)
    user = render_messages(request_for(sft, inspirations=(request.parent,)))[1]["content"]
    assert user.count("def fit_scaling_law") == 1


def test_prompts_stay_compact(sft):
    messages = render_messages(request_for(sft))
    block = extract_block(PROGRAM)
    assert len(messages[0]["content"]) < 6000
    assert len(messages[1]["content"]) - len(block) < 1200


@pytest.mark.parametrize("name", shipped_task_names())
def test_every_shipped_task_renders_in_both_modes(name):
    task = load_task(name)
    for mode in ("diff", "full"):
        system, user = (m["content"] for m in render_messages(request_for(task, mode)))
        assert task.name in system
        assert ("At most" in system) == (task.param_cap is not None)
        assert "{{" not in system + user and "{%" not in system + user


def test_a_custom_prompts_folder_replaces_the_shipped_templates(sft, tmp_path):
    (tmp_path / "system.j2").write_text("Fit {{ task.name }} with at most {{ task.param_cap }} parameters.")
    (tmp_path / "user.j2").write_text("Improve:\n{{ parent.block }}\nMode: {{ edit_mode }}")
    system, user = (m["content"] for m in render_messages(request_for(sft), tmp_path))
    assert system == "Fit sft_scaling_law with at most 4 parameters.\n"
    assert user.startswith("Improve:\ndef scaling_law_func") and user.endswith("Mode: diff\n")


def test_undefined_template_variables_fail_loudly(sft, tmp_path):
    (tmp_path / "system.j2").write_text("{{ task.no_such_field }}")
    (tmp_path / "user.j2").write_text("x")
    with pytest.raises(PromptError, match="no_such_field"):
        render_messages(request_for(sft), tmp_path)


def test_a_prompts_folder_without_templates_is_refused(sft, tmp_path):
    with pytest.raises(PromptError, match="system.j2"):
        render_messages(request_for(sft), tmp_path)


def test_the_compact_prompt_is_short_with_one_instruction_and_the_block(sft):
    """For small models (a 135M model follows nothing longer): the block, one instruction,
    a request for the whole block in one fence; no headings, rules or helpers to echo."""
    full = render_messages(request_for(sft, "full"))
    compact = render_messages(request_for(sft, "full"), style="compact")
    text = compact[0]["content"] + compact[1]["content"]
    assert len(text) < 0.25 * len(full[0]["content"] + full[1]["content"])
    assert len(text) - len(extract_block(PROGRAM)) < 600
    assert extract_block(PROGRAM).strip() in compact[1]["content"]
    assert "one ```python code block" in compact[1]["content"] and "#" not in compact[1]["content"].split("```python")[0]
    assert "fit_scaling_law" in text and "scaling_law_func" in text and "SEARCH" not in text
    assert "SECRET_OUTSIDE" not in text


def test_a_custom_prompts_folder_without_compact_templates_uses_the_shipped_ones(sft, tmp_path):
    (tmp_path / "system.j2").write_text("custom system")
    (tmp_path / "user.j2").write_text("custom user {{ parent.block }}")
    assert render_messages(request_for(sft), tmp_path)[0]["content"] == "custom system\n"
    compact = render_messages(request_for(sft, "full"), tmp_path, style="compact")
    assert "Rewrite it with a better formula" in compact[1]["content"]
    with pytest.raises(PromptError, match="unknown prompt style"):
        render_messages(request_for(sft), style="tiny")

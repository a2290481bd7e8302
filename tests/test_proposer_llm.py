"""The LLM proposer with a scripted client: prompts sent, replies spliced, failures reported."""

from __future__ import annotations

import dataclasses
from pathlib import Path
import numpy as np
import pytest

from evolve.config import ScorerConfig
from evolve.propose.client import BudgetExceeded, Completion, LLMAuthError, LLMUnavailable
from evolve.metrics import compute_metrics
from evolve.program import extract_block
from evolve.propose.base import Proposal, ProposalRequest
from evolve.propose.model import LLMProposer
from evolve.records import ProgramRecord
from evolve.scoring.scorer import Evaluation, Scorer
from evolve.tasks import load_task

PROGRAM = '''"""Seed law: a shifted power law."""
import numpy as np

# EVOLVE-BLOCK-START
def scaling_law_func(data_points, params):
    x = np.asarray(data_points, dtype=float)[:, 0]
    a, b, c = params
    return a * x ** (-b) + c


def fit_scaling_law(data_points, loss_values):
    x = np.asarray(data_points, dtype=float)[:, 0]
    y = np.asarray(loss_values, dtype=float)
    c = 0.5 * y.min()
    slope, intercept = np.polyfit(np.log(x), np.log(y - c), 1)
    return np.array([np.exp(intercept), -slope, c])
# EVOLVE-BLOCK-END
'''

GOOD_DIFF = '''Fitting the floor as 0.9 of the smallest loss leaves less curvature for the power term.

<<<<<<< SEARCH
    c = 0.5 * y.min()
=======
    c = 0.9 * y.min()
>>>>>>> REPLACE
'''

BAD_DIFF = '''Use an exponent on the offset.

<<<<<<< SEARCH
    c = 0.5 * y.mean()
=======
    c = 0.9 * y.mean()
>>>>>>> REPLACE
'''

FULL_REPLY = f'''I rewrote the block to clip the floor.

```python
{extract_block(PROGRAM).replace("c = 0.5 * y.min()", "c = min(0.5 * y.min(), 1.0)")}```
'''


class ScriptedClient:
    """Stands in for evolve.llm.LLMClient: answers with scripted replies and records each request."""

    def __init__(self, *replies, models=("model-a",)):
        self.replies = list(replies)
        self.models = list(models)
        self.requests: list[tuple[list[dict], str | None]] = []

    def choose_model(self, rng=None) -> str:
        return self.models[len(self.requests) % len(self.models)]

    def complete(self, messages: list[dict], model: str | None = None, seed: int | None = None) -> Completion:
        self.requests.append((messages, model))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        text, finish = reply if isinstance(reply, tuple) else (reply, "stop")
        return Completion(text, model or "default", prompt_tokens=1200, completion_tokens=len(text) // 4, seconds=0.25, finish_reason=finish)


@pytest.fixture(scope="module")
def task():
    return load_task("sft_scaling_law")


def parent_record(program: str = PROGRAM, parent_id: int = 11) -> ProgramRecord:
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    validation = Evaluation("ok", "validation", compute_metrics(truth * 1.02, truth), n_params=3)
    return ProgramRecord(program, validation, id=parent_id)


def request(task, parent: ProgramRecord | None = None, edit_mode: str = "diff") -> ProposalRequest:
    return ProposalRequest(task=task, parent=parent or parent_record(), edit_mode=edit_mode)


def system_prompt(client: ScriptedClient, index: int) -> str:
    return client.requests[index][0][0]["content"]


def test_a_good_diff_becomes_a_child_with_its_explanation_and_usage(task):
    client = ScriptedClient(GOOD_DIFF)
    proposal = LLMProposer(client).propose(request(task))
    assert isinstance(proposal, Proposal)
    assert proposal.status is None and proposal.message == ""
    assert proposal.code == PROGRAM.replace("c = 0.5 * y.min()", "c = 0.9 * y.min()")
    assert proposal.explanation.startswith("Fitting the floor as 0.9")
    assert "<<<<<<<" not in proposal.explanation
    assert (proposal.proposer, proposal.model, proposal.edit_mode) == ("llm", "model-a", "diff")
    assert proposal.prompt_tokens == 1200 and proposal.completion_tokens == len(GOOD_DIFF) // 4
    assert proposal.seconds == 0.25
    messages, model = client.requests[0]
    assert model == "model-a"
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "c = 0.5 * y.min()" in messages[1]["content"]


def test_the_spliced_child_scores(task):
    proposal = LLMProposer(ScriptedClient(GOOD_DIFF)).propose(request(task))
    with Scorer(ScorerConfig(isolate=False, workers=1)) as scorer:
        result = scorer.score(proposal.code, task)
    assert result.ok, result.message
    assert result.n_params == 3


def test_a_failed_diff_is_a_proposal_without_code_naming_the_unmatched_line(task):
    client = ScriptedClient(BAD_DIFF)
    failed = LLMProposer(client).propose(request(task))
    assert failed.code is None
    assert failed.status == "diff_not_applied"
    assert "c = 0.5 * y.mean()" in failed.message
    assert failed.explanation == "Use an exponent on the offset."


def test_a_full_rewrite_request_asks_for_the_whole_block(task):
    client = ScriptedClient(FULL_REPLY)
    rewrite = LLMProposer(client).propose(dataclasses.replace(request(task), edit_mode="full"))
    assert "<<<<<<< SEARCH" not in system_prompt(client, 0)
    assert rewrite.edit_mode == "full"
    assert "min(0.5 * y.min(), 1.0)" in rewrite.code


def test_a_full_rewrite_in_diff_mode_is_recorded_as_full(task):
    proposal = LLMProposer(ScriptedClient(FULL_REPLY)).propose(request(task))
    assert proposal.edit_mode == "full"
    assert proposal.explanation == "I rewrote the block to clip the floor."


def test_a_truncated_reply_reports_a_syntax_error_and_the_cut(task):
    cut = FULL_REPLY[: FULL_REPLY.index("slope, intercept")] + "slope, intercept = np.polyfit(np.log(x),"
    proposal = LLMProposer(ScriptedClient((cut, "length"))).propose(request(task, edit_mode="full"))
    assert proposal.code is None
    assert proposal.status == "syntax_error" and proposal.message.startswith("line ")
    assert proposal.message.endswith("(the reply was cut off at the token limit)")
    assert proposal.completion_tokens > 0  # the tokens were spent all the same


def test_an_empty_reply_is_no_code(task):
    proposal = LLMProposer(ScriptedClient("")).propose(request(task))
    assert proposal.code is None and proposal.status == "no_code" and proposal.message == "the reply is empty"


def test_an_unavailable_endpoint_is_a_proposal_without_code(task):
    client = ScriptedClient(LLMUnavailable("http://localhost:1 unavailable after 6 attempt(s): cannot connect"))
    proposal = LLMProposer(client).propose(request(task))
    assert proposal.code is None
    assert proposal.status == "unavailable" and proposal.message == "http://localhost:1 unavailable after 6 attempt(s): cannot connect"
    assert proposal.model == "model-a"


@pytest.mark.parametrize("error", [LLMAuthError("the endpoint refused the API key (401)"), BudgetExceeded("token budget reached")])
def test_errors_that_stop_the_run_propagate(task, error):
    with pytest.raises(type(error)):
        LLMProposer(ScriptedClient(error)).propose(request(task))


def test_the_model_comes_from_the_client_ensemble(task):
    client = ScriptedClient(GOOD_DIFF, GOOD_DIFF, models=("model-a", "model-b"))
    proposer = LLMProposer(client)
    models = [proposer.propose(request(task)).model for _ in range(2)]
    assert models == ["model-a", "model-b"]


def test_custom_prompts_reach_the_model(task, tmp_path):
    (tmp_path / "system.j2").write_text("You write laws for {{ task.name }}.")
    (tmp_path / "user.j2").write_text("{{ parent.block }}")
    client = ScriptedClient(GOOD_DIFF)
    LLMProposer(client, prompts_dir=tmp_path).propose(request(task))
    assert system_prompt(client, 0) == "You write laws for sft_scaling_law.\n"


# --- against the loopback fake server behaving like llama-cpp-python (issue 15) ---

from evolve.config import ModelConfig, ModelSpec  # noqa: E402
from evolve.propose.client import ContextOverflow, LLMClient  # noqa: E402
from evolve.propose.endpoint import effective_concurrency, is_loopback  # noqa: E402
from tests.fake_openai import FakeOpenAI  # noqa: E402


def fake_client(server: FakeOpenAI, **options) -> LLMClient:
    config = ModelConfig(**{"base_url": server.base_url, "api_key": "k", "max_retries": 1, "request_timeout_s": 5.0, **options})
    return LLMClient(config, retry_wait_s=0.001, retry_wait_max_s=0.01)


def request_with_company(task) -> ProposalRequest:
    others = tuple(parent_record(PROGRAM.replace("0.5", f"0.{k}"), parent_id=20 + k) for k in range(1, 4))
    return dataclasses.replace(request(task), inspirations=others, failures=others[:2], seed=1234)


def test_the_seed_is_sent_and_the_prompt_stored_with_the_reply(task):
    with FakeOpenAI.like_llama_cpp(context_size=100_000) as server:
        server.push_reply(GOOD_DIFF)
        proposer = LLMProposer(fake_client(server))
        proposal = proposer.propose(request_with_company(task))
    assert server.requests[0]["seed"] == 1234
    assert proposal.code is not None
    assert proposal.extra["prompt"] == server.requests[0]["messages"]
    assert [m["role"] for m in proposal.extra["prompt"]] == ["system", "user"]


def test_a_context_overflow_shrinks_the_prompt_and_retries(task):
    big = request_with_company(task)
    with FakeOpenAI.like_llama_cpp(context_size=100_000) as probe:
        probe.push_reply(GOOD_DIFF, times=2)
        sizes = []
        for smaller in __import__("evolve.propose.model", fromlist=["x"]).shrunk_requests(big):
            LLMProposer(fake_client(probe)).propose(smaller)
            sizes.append(sum(len(m["content"]) for m in probe.requests[-1]["messages"]) // 4)
    limit = (sizes[0] + sizes[-1]) // 2  # the full prompt overflows, the smallest fits
    with FakeOpenAI.like_llama_cpp(context_size=limit, responder=lambda body: GOOD_DIFF) as server:
        proposal = LLMProposer(fake_client(server)).propose(big)
    assert proposal.code is not None
    assert server.served[0].status == 400 and server.request_count >= 2
    assert len(proposal.extra["prompt"][1]["content"]) < sizes[0] * 4


def test_a_prompt_that_never_fits_stops_with_one_line_and_the_full_server_message(task):
    with FakeOpenAI.like_llama_cpp(context_size=50) as server:
        with pytest.raises(ContextOverflow) as caught:
            LLMProposer(fake_client(server)).propose(request_with_company(task))
    text = str(caught.value)
    assert "\n" not in text and "smallest prompt" in text
    assert "Please reduce the length of the messages" in text  # not cut at 240 characters


def test_a_request_on_a_connection_the_server_just_closed_is_sent_again_uncounted(task):
    # llama-cpp-python drops the connection after an empty (overflowing) stream; a busy server
    # closes it late, and the plain request that asks why went out on it (CI flake, 72dbf87)
    with FakeOpenAI.like_llama_cpp(context_size=50, close_delay_s=0.1) as server:
        with pytest.raises(ContextOverflow, match="Please reduce the length"):
            fake_client(server, max_retries=0).complete([{"role": "user", "content": "x" * 400}])
    assert [s.status for s in server.served] == [400, 400]  # the stream, then the plain request


def test_a_request_dropped_after_a_while_is_a_counted_failure_not_a_free_resend():
    # the server held the request (it may have generated and billed a reply), then closed
    with FakeOpenAI.like_llama_cpp() as server:
        server.push_close(delay_s=1.0)
        with pytest.raises(LLMUnavailable, match="after 1 attempt.*without sending a response"):
            fake_client(server, max_retries=0, stream=False).complete([{"role": "user", "content": "x"}])
        assert server.request_count == 1
        server.push_close()  # at once: a closed connection's signature, sent again for free
        fake_client(server, max_retries=0, stream=False).complete([{"role": "user", "content": "x"}])
        assert server.request_count == 3


def test_preflight_names_an_unreachable_url():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = LLMClient(ModelConfig(base_url=f"http://127.0.0.1:{port}/v1", api_key="k"))
    with pytest.raises(LLMUnavailable, match=f"127.0.0.1:{port}/v1/models"):
        LLMProposer(client).preflight()


def test_preflight_passes_against_a_live_server_and_sends_no_generation():
    with FakeOpenAI.like_llama_cpp() as server:
        LLMProposer(fake_client(server)).preflight()
        assert server.request_count == 0


def test_defaults_suit_a_local_one_request_at_a_time_server():
    assert ModelConfig().max_tokens <= 1500
    assert is_loopback("http://localhost:8080/v1") and is_loopback("http://127.0.0.1:1/v1") and not is_loopback("https://api.openai.com/v1")
    assert effective_concurrency(ModelConfig(base_url="http://127.0.0.1:8080/v1")) == 1
    assert effective_concurrency(ModelConfig(base_url="https://api.openai.com/v1")) == 2
    assert effective_concurrency(ModelConfig(base_url="http://127.0.0.1:8080/v1", concurrency=3)) == 3


# --------------------------------------------------------------------------- the compact prompt


def prompt_tokens(messages: list[dict]) -> int:
    return sum(len(m["content"]) for m in messages) // 4  # the fake's token count


def test_style_auto_falls_back_to_the_compact_prompt_and_keeps_it(task):
    """A server whose context is too small for even the parent-only full prompt: the compact
    prompt is sent, and once the server has named its context size every later request
    goes straight to the compact prompt (no more refused requests)."""
    from evolve.propose.prompts import render_messages

    bare = request(task)
    compact = prompt_tokens(render_messages(dataclasses.replace(bare, edit_mode="full"), style="compact"))
    smallest_full = prompt_tokens(render_messages(bare))
    assert compact < smallest_full / 2
    limit = (compact + smallest_full) // 2
    with FakeOpenAI.like_llama_cpp(context_size=limit, responder=lambda body: FULL_REPLY) as server:
        proposer = LLMProposer(fake_client(server))
        first = proposer.propose(request_with_company(task))
        refused = server.request_count
        second = proposer.propose(request_with_company(task))
    assert first.code is not None and first.extra["prompt_style"] == "compact" and first.edit_mode == "full"
    assert [s.status for s in server.served[:refused]].count(400) >= 1
    assert server.request_count == refused + 1 and server.served[-1].status == 200  # straight to the compact prompt
    assert second.extra["prompt_style"] == "compact"
    user = second.extra["prompt"][1]["content"]
    assert "```python" in user and "c = 0.5 * y.min()" in user and "SEARCH" not in user


def test_a_server_that_reports_a_small_context_gets_the_compact_prompt_from_the_start(task):
    with FakeOpenAI(responder=lambda body: FULL_REPLY, model_fields={"max_model_len": 2048}) as server:
        proposer = LLMProposer(fake_client(server, models=(ModelSpec("fake-model"),)))
        proposer.preflight()
        proposal = proposer.propose(request_with_company(task))
    assert proposer.client.context_size == 2048
    assert server.request_count == 1 and proposal.extra["prompt_style"] == "compact"
    with FakeOpenAI(responder=lambda body: FULL_REPLY, model_fields={"max_model_len": 32768}) as server:
        proposer = LLMProposer(fake_client(server, models=(ModelSpec("fake-model"),)))
        proposer.preflight()
        assert proposer.propose(request_with_company(task)).extra["prompt_style"] == "full"


def test_style_full_never_sends_the_compact_prompt(task):
    with FakeOpenAI.like_llama_cpp(context_size=50) as server:
        with pytest.raises(ContextOverflow):
            LLMProposer(fake_client(server), prompt_style="full").propose(request_with_company(task))
        assert all("Rewrite it with a better formula" not in str(r["messages"]) for r in server.requests)


# --------------------------------------------------------------------------- statuses and line numbers of what the model wrote


def test_a_syntax_error_names_the_line_of_the_reply(task):
    broken_block = extract_block(PROGRAM).replace("c = 0.5 * y.min()", "c = 0.5 * y.min(")
    reply = f"Some words first.\nAnd a second line.\n\n```python\n{broken_block}```\n"
    proposal = LLMProposer(ScriptedClient(reply)).propose(request(task, edit_mode="full"))
    assert proposal.status == "syntax_error"
    wanted = 1 + next(i for i, line in enumerate(reply.splitlines()) if "y.min(" in line)
    assert proposal.message.startswith(f"line {wanted} of the reply"), proposal.message


def test_a_syntax_error_from_a_diff_names_the_line_of_the_reply(task):
    reply = GOOD_DIFF.replace("    c = 0.9 * y.min()", "    c = 0.9 * * y.min()")
    proposal = LLMProposer(ScriptedClient(reply)).propose(request(task))
    assert proposal.status == "syntax_error"
    wanted = 1 + next(i for i, line in enumerate(reply.splitlines()) if "* *" in line)
    assert proposal.message.startswith(f"line {wanted} of the reply"), proposal.message


def test_unfenced_code_with_a_syntax_error_is_a_syntax_error_not_a_missing_function(task):
    block = extract_block(PROGRAM).replace("return np.array([np.exp(intercept), -slope, c])", "return np.array([np.exp(intercept), -slope, c]")
    reply = f"Here is the code:\n{block}\nThis should fit better."
    proposal = LLMProposer(ScriptedClient(reply)).propose(request(task, edit_mode="full"))
    assert proposal.status == "syntax_error", proposal.message
    assert "of the reply" in proposal.message or "end of the code" in proposal.message


# --------------------------------------------------------------------------- a replay reads each reply as it was first read


def replay_rows(run_dir) -> list[tuple]:
    from evolve.store.database import Archive

    with Archive.open(Path(run_dir) / "archive.db", readonly=True) as archive:
        return [(r.code, r.validation.status, r.validation.message, r.edit_mode, r.extra.get("prompt_style"),
                 r.extra.get("prompt"), r.extra.get("finish_reason"), r.model)
                for r in archive.programs(order="id") if r.proposer == "llm"]


def test_a_replay_is_faithful_to_the_prompt_style_and_finish_reason_of_each_reply(tmp_path, monkeypatch):
    """The recorded run used the compact prompt (reached by `auto` on a server whose context
    the full prompt overflows): its replies are whole blocks, spliced as full rewrites, and
    one was cut at the token limit. The replay, run with the default settings, stores the
    same children with the same statuses, messages, edit modes, styles and prompts."""
    style = "auto"
    from evolve.config import ArchiveConfig, RunConfig
    from evolve.loop import run_evolution

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    answered: list[str] = []

    def responder(body: dict):  # the first reply to a compact prompt is cut at the token limit
        if "Rewrite it with a better formula" in str(body["messages"]) and not answered:
            answered.append("cut")
            return FULL_REPLY[: len(FULL_REPLY) // 2], "length"
        return FULL_REPLY

    with FakeOpenAI.like_llama_cpp(context_size=1200, responder=responder) as server:
        model = ModelConfig(models=(ModelSpec("fake-model"),), base_url=server.base_url, api_key="sk-test", concurrency=1)
        seed_law = tmp_path / "seed_law.py"
        seed_law.write_text(PROGRAM)  # a quick fit: the run's time goes to the model path, not to fitting
        config = RunConfig(task="sft_scaling_law", iterations=3, seed=5, run_dir=str(tmp_path / "run"), proposer="llm", model=model,
                           seed_laws=(str(seed_law),),
                           prompt_style=style, archive=ArchiveConfig(islands=1), scorer=ScorerConfig(workers=1, timeout_s=60, isolate=False))
        original = run_evolution(config)
    replayed = run_evolution(dataclasses.replace(config, run_dir=str(tmp_path / "replay"), replay=str(original.run_dir),
                                                 model=ModelConfig(), prompt_style="auto"))
    recorded, again = replay_rows(original.run_dir), replay_rows(replayed.run_dir)
    assert [row[4] for row in recorded] == ["compact"] * 3 and [row[3] for row in recorded] == ["full"] * 3
    assert [row[6] for row in recorded].count("length") == 1
    assert all(("cut off at the token limit" in row[2]) == (row[6] == "length") for row in recorded)
    assert again == recorded


def test_a_reply_outlasting_the_request_timeout_is_stored_cut_not_lost_to_an_outage(task):
    """A one-at-a-time server writing slower than the reply's length allows: the reply so
    far comes back (finish_reason "timeout"), is spliced and reported like a reply cut at
    max_tokens, so the run moves on instead of asking the same request again and again."""
    with FakeOpenAI.like_llama_cpp(context_size=100_000, token_delay_s=0.02, responder=lambda body: FULL_REPLY) as server:
        proposer = LLMProposer(fake_client(server, request_timeout_s=0.8, models=(ModelSpec("fake-model"),)))
        proposal = proposer.propose(request(task, edit_mode="full"))
        assert server.wait_idle(3.0)
    assert proposal.status != "unavailable" and proposal.extra["finish_reason"] == "timeout"
    assert "cut off at the request timeout" in proposal.message and proposal.completion_tokens >= 10
    assert server.request_count == 1 and server.served[0].stopped_early


# --------------------------------------------------------------------------- the model settings, end to end through the CLI


def test_run_flags_reach_the_server_the_seed_repeats_the_replies_and_show_prints_prompt_and_reply(tmp_path, monkeypatch, capsys):
    """`evolve run` against a llama.cpp-like server that honours `seed`: --max-tokens,
    --no-stream and --prompt-style reach every request; the same --seed sends the same
    seeds and gets the same replies (a run can be repeated and audited); `archive show`
    prints the prompt sent and the reply received."""
    from tests.fake_openai import sampled_text
    from evolve.cli.main import main

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    seed_law = tmp_path / "seed_law.py"
    seed_law.write_text(PROGRAM)
    runs = []
    with FakeOpenAI.like_llama_cpp(context_size=100_000, responder=sampled_text) as server:
        for name in ("first", "again"):
            before = server.request_count
            code = main(["run", "sft_scaling_law", "--proposer", "llm", "--base-url", server.base_url, "--model", "local",
                         "--iterations", "1", "--seed", "4", "--seed-law", str(seed_law), "--islands", "1", "--workers", "1",
                         "--max-tokens", "77", "--no-stream", "--prompt-style", "compact", "--run-dir", str(tmp_path / name), "--quiet"])
            assert code == 0, capsys.readouterr().err
            runs.append(server.requests[before:])
    first, again = runs
    assert len(first) == len(again) == 1
    assert all(r["max_tokens"] == 77 and not r.get("stream") and "Rewrite it with a better formula" in str(r["messages"]) for r in first)
    assert [r["seed"] for r in first] == [r["seed"] for r in again]
    replies = [replay_rows(tmp_path / name) for name in ("first", "again")]
    assert sorted(row[0:3] for row in replies[0]) == sorted(row[0:3] for row in replies[1])
    from evolve.store.database import Archive

    with Archive.open(tmp_path / "first" / "archive.db", readonly=True) as archive:
        child = next(r for r in archive.programs(order="id") if r.proposer == "llm")
    capsys.readouterr()
    assert main(["archive", str(tmp_path / "first"), "show", str(child.id), "--no-formula"]) == 0
    shown = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "prompt (user):" in shown and "Rewrite it with a better formula" in shown
    assert "reply:" in shown and child.extra["reply"] in shown


def test_the_preflight_checks_the_model_name(monkeypatch, caplog):
    """GET /models before the run: a local server that lists another name only warns (llama.cpp
    answers to any name); a remote endpoint without the model stops with one line."""
    import logging

    from evolve.propose import endpoint

    with FakeOpenAI.like_llama_cpp() as server:
        proposer = LLMProposer(fake_client(server, models=(ModelSpec("no-such-model"),)))
        with caplog.at_level(logging.WARNING):
            proposer.preflight()
        assert "not no-such-model" in caplog.text
        monkeypatch.setattr(endpoint, "is_loopback", lambda url: False)  # as if the server were remote
        with pytest.raises(LLMAuthError, match="has no model no-such-model") as caught:
            proposer.preflight()
        assert "\n" not in str(caught.value) and server.request_count == 0


def test_statuses_and_reply_line_numbers_through_a_llama_cpp_like_server(task):
    """The statuses a small model's replies get, and the line of the reply a syntax error is
    on, through the real HTTP path (a stream with no usage, one token per chunk)."""
    broken = "A first line.\n\n```python\n" + extract_block(PROGRAM).replace("c = 0.5 * y.min()", "c = 0.5 * y.min(") + "```\n"
    broken_line = broken.splitlines().index("    c = 0.5 * y.min(") + 1
    replies = iter([broken, "Task: fit a law.\n\nParent program: see above.", BAD_DIFF, "def scaling_law_func(x, p:\n    return x\n"])
    with FakeOpenAI.like_llama_cpp(context_size=100_000, responder=lambda body: next(replies)) as server:
        proposer = LLMProposer(fake_client(server, models=(ModelSpec("fake-model"),)))
        syntax = proposer.propose(request(task, edit_mode="full"))
        echo = proposer.propose(request(task, edit_mode="full"))
        unmatched = proposer.propose(request(task, edit_mode="diff"))
        unfenced = proposer.propose(request(task, edit_mode="full"))
    assert syntax.status == "syntax_error" and f"line {broken_line} of the reply" in syntax.message
    assert echo.status == "no_code"
    assert unmatched.status == "diff_not_applied" and "y.mean()" in unmatched.message
    assert unfenced.status == "syntax_error"

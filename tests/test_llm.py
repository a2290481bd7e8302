"""The LLM client against a real HTTP server (tests/fake_openai.py) with the real openai package."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter

import openai
import pytest

from evolve.config import ModelConfig, ModelSpec
from evolve.propose.client import (
    BudgetExceeded,
    Completion,
    LLMAuthError,
    LLMClient,
    LLMError,
    LLMUnavailable,
    Usage,
    estimate_tokens,
)
from tests.fake_openai import DEFAULT_TEXT, FakeOpenAI

KEY = "sk-test-SECRET0123456789"
MESSAGES = [{"role": "system", "content": "You write laws."}, {"role": "user", "content": "Improve this law."}]


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


def make_client(server: FakeOpenAI, **options) -> LLMClient:
    """A client with tiny backoff so retry tests take milliseconds."""
    client_options = {
        name: options.pop(name)
        for name in ("usage", "budget_tokens", "budget_usd", "rng", "max_retry_after_s")
        if name in options
    }
    config = ModelConfig(
        **{"base_url": server.base_url, "api_key": KEY, "max_retries": 2, "request_timeout_s": 5.0, **options}
    )
    return LLMClient(config, retry_wait_s=0.001, retry_wait_max_s=0.01, **client_options)


def test_plain_reply_returns_text_and_sums_usage(server):
    server.push_reply("law one", prompt_tokens=11, completion_tokens=3)
    server.push_reply("law two", prompt_tokens=7, completion_tokens=5, finish_reason="length")
    client = make_client(server, models=(ModelSpec("m1"),), temperature=0.3, max_tokens=99)

    first = client.complete(MESSAGES)
    second = client.complete(MESSAGES)

    assert (first.text, first.model, first.prompt_tokens, first.completion_tokens) == ("law one", "m1", 11, 3)
    assert first.finish_reason == "stop" and not first.usage_estimated and first.seconds > 0
    assert second.finish_reason == "length"
    assert (client.usage.prompt_tokens, client.usage.completion_tokens, client.usage.calls) == (18, 8, 2)
    assert client.usage.per_model["m1"].calls == 2
    body = server.requests[0]
    assert body["messages"] == MESSAGES and body["model"] == "m1"
    assert body["temperature"] == 0.3 and body["max_tokens"] == 99
    assert server.headers[0]["authorization"] == f"Bearer {KEY}"


def test_rate_limit_is_retried_after_the_servers_retry_after(server):
    server.push_error(429, retry_after="0.3")
    server.push_reply("after the wait")
    client = make_client(server)

    started = time.monotonic()
    completion = client.complete(MESSAGES)

    assert completion.text == "after the wait"
    assert time.monotonic() - started >= 0.3
    assert server.request_count == 2 and client.usage.retries == 1


def test_retry_after_is_capped(server):
    server.push_error(429, retry_after="30")
    client = make_client(server, max_retry_after_s=0.05)

    started = time.monotonic()
    assert client.complete(MESSAGES).text == DEFAULT_TEXT
    assert time.monotonic() - started < 2.0


def test_server_errors_then_success(server):
    server.push_error(500, times=2)
    client = make_client(server, max_retries=2)

    assert client.complete(MESSAGES).text == DEFAULT_TEXT
    assert server.request_count == 3 and client.usage.failures == 0


def test_persistent_server_error_raises_unavailable(server):
    server.push_error(503, times=10)
    client = make_client(server, max_retries=3)

    with pytest.raises(LLMUnavailable, match="503") as caught:
        client.complete(MESSAGES)

    assert server.request_count == 4
    assert server.base_url in str(caught.value)
    assert client.usage.failures == 1 and client.usage.calls == 0


@pytest.mark.parametrize(
    ("status", "wording"),
    [(401, "refused the API key"), (403, "denied access"), (400, "rejected the request"), (404, "no model")],
)
def test_refusals_stop_at_once_without_retry(server, status, wording):
    server.push_error(status, message="nope")
    client = make_client(server, max_retries=5)

    with pytest.raises(LLMAuthError, match=wording) as caught:
        client.complete(MESSAGES)

    assert server.request_count == 1
    assert "\n" not in str(caught.value)


def test_slow_reply_beyond_timeout_is_not_resent(server):
    """A one-at-a-time server may still be generating a timed-out request: resending it
    would only queue a second copy behind the first."""
    server.push_slow(3.0, times=2)
    client = make_client(server, request_timeout_s=0.3, max_retries=1)

    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="timed out.*not resent"):
        client.complete(MESSAGES)

    assert server.request_count == 1 and client.usage.retries == 0
    assert time.monotonic() - started < 2.0


def test_slow_reply_then_next_request_succeeds(server):
    server.push_slow(3.0)
    client = make_client(server, request_timeout_s=0.3, max_retries=1)

    with pytest.raises(LLMUnavailable):
        client.complete(MESSAGES)
    assert client.complete(MESSAGES).text == DEFAULT_TEXT
    assert server.request_count == 2


@pytest.mark.parametrize("push", ["push_reset", "push_truncated", "push_invalid_json"])
def test_broken_reply_is_retried(server, push):
    getattr(server, push)()
    client = make_client(server, stream=False)  # a plain JSON reply (a stream's own faults: test_stream_*)

    assert client.complete(MESSAGES).text == DEFAULT_TEXT
    assert server.request_count == 2 and client.usage.retries == 1


@pytest.mark.parametrize(
    ("push", "reason"), [("push_reset", "connection"), ("push_truncated", "connection"), ("push_invalid_json", "JSON")]
)
def test_persistently_broken_reply_raises_unavailable(server, push, reason):
    getattr(server, push)(times=3)
    client = make_client(server, max_retries=2, stream=False)

    with pytest.raises(LLMUnavailable, match=reason):
        client.complete(MESSAGES)
    assert server.request_count == 3


@pytest.mark.parametrize("push", ["push_empty", "push_no_choices"])
def test_empty_reply_is_an_empty_completion_not_an_error(server, push):
    getattr(server, push)()
    client = make_client(server, stream=False)

    completion = client.complete(MESSAGES)

    assert completion.text == ""
    assert server.request_count == 1 and client.usage.calls == 1


def test_missing_usage_is_estimated_from_text_length(server):
    server.push_reply("x" * 40, include_usage=False)
    client = make_client(server)

    completion = client.complete([{"role": "user", "content": "y" * 80}])

    assert (completion.prompt_tokens, completion.completion_tokens) == (20, 10)
    assert completion.usage_estimated and client.usage.to_dict()["estimated_calls"] == 1


def test_ensemble_follows_weights_and_the_server_sees_the_names(server):
    models = (ModelSpec("big", weight=3.0), ModelSpec("small", weight=1.0))
    client = make_client(server, models=models, rng=random.Random(7))
    again = make_client(server, models=models, rng=random.Random(7))

    draws = [client.choose_model() for _ in range(2000)]
    assert draws == [again.choose_model() for _ in range(2000)]  # a seed fixes the sequence
    assert 0.72 < Counter(draws)["big"] / len(draws) < 0.78

    chosen = []
    for _ in range(40):
        chosen.append(client.complete(MESSAGES).model)
    assert server.models_requested() == chosen
    assert set(chosen) == {"big", "small"}
    assert client.usage.per_model["big"].calls == chosen.count("big")


def test_without_models_the_default_comes_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("EVOLVE_MODEL", "my-local-model")
    assert make_client(server).choose_model() == "my-local-model"
    monkeypatch.delenv("EVOLVE_MODEL")
    assert make_client(server).choose_model() == "gpt-4o-mini"


def test_bad_weights_are_refused(server):
    with pytest.raises(LLMError, match="weights"):
        make_client(server, models=(ModelSpec("a", weight=0.0), ModelSpec("b", weight=0.0)))


def test_token_budget_stops_the_run(server):
    server.push_reply("a", prompt_tokens=10, completion_tokens=5, times=3)
    client = make_client(server, budget_tokens=25)

    client.complete(MESSAGES)  # 15 tokens
    with pytest.raises(BudgetExceeded, match="token budget") as crossed:
        client.complete(MESSAGES)  # 30 tokens: crosses the budget after the call
    assert isinstance(crossed.value.completion, Completion) and crossed.value.completion.text == "a"
    with pytest.raises(BudgetExceeded):
        client.complete(MESSAGES)  # refused before sending
    assert server.request_count == 2


def test_cost_budget_uses_per_model_prices(server):
    server.push_reply("a", prompt_tokens=1000, completion_tokens=500, times=5)
    priced = ModelSpec("priced", price_prompt_per_mtok=10.0, price_completion_per_mtok=20.0)
    client = make_client(server, models=(priced,), budget_usd=0.05)

    client.complete(MESSAGES)
    client.complete(MESSAGES)
    assert client.usage.cost_usd == pytest.approx(0.04)  # 2 * (1000*10 + 500*20) / 1e6
    with pytest.raises(BudgetExceeded, match="cost budget"):
        client.complete(MESSAGES)
    with pytest.raises(BudgetExceeded):
        client.check_budget()
    assert server.request_count == 3


def test_a_resumed_run_continues_its_totals(server):
    server.push_reply("a", prompt_tokens=10, completion_tokens=5)
    first = make_client(server, models=(ModelSpec("m", price_prompt_per_mtok=1e3),))
    first.complete(MESSAGES)
    stored = first.usage.to_dict()

    restored = Usage.from_dict(stored)
    assert restored.to_dict() == stored
    resumed = make_client(server, usage=restored, budget_tokens=15)
    with pytest.raises(BudgetExceeded):
        resumed.complete(MESSAGES)
    assert server.request_count == 1


def test_concurrency_limits_requests_in_flight(server):
    server.push_slow(0.5, times=4)
    client = make_client(server, concurrency=2)
    results: list[str] = []

    threads = [threading.Thread(target=lambda: results.append(client.complete(MESSAGES).text)) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    elapsed = time.monotonic() - started

    assert results == [DEFAULT_TEXT] * 4 and client.usage.calls == 4
    assert 0.9 < elapsed < 1.6
    assert server.max_in_flight == 2


def test_unreachable_endpoint_fails_quickly_naming_the_url():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ModelConfig(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=2)
    client = LLMClient(config, retry_wait_s=0.001, retry_wait_max_s=0.01)

    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match=f"127.0.0.1:{port}"):
        client.complete(MESSAGES)
    assert time.monotonic() - started < 2.0


def test_no_key_and_no_url_is_refused(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(LLMError, match="no API key: set OPENAI_API_KEY"):
        LLMClient(ModelConfig())


def test_local_server_without_key_gets_a_placeholder(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = LLMClient(ModelConfig(base_url=server.base_url))

    assert client.complete(MESSAGES).text == DEFAULT_TEXT
    assert server.headers[0]["authorization"] == "Bearer not-needed"


def test_the_api_key_never_shows_in_errors_or_reprs(server):
    server.push_error(401, message=f"Incorrect API key provided: {KEY}")
    server.push_error(400, message=f"bad request from key {KEY}")
    server.push_error(500, message=f"internal error for {KEY}", times=3)
    client = make_client(server, max_retries=2)
    errors = []
    for _ in range(3):
        with pytest.raises(LLMError) as caught:
            client.complete(MESSAGES)
        errors.append(caught.value)

    assert [type(e) for e in errors] == [LLMAuthError, LLMAuthError, LLMUnavailable]
    shown = [str(e) for e in errors] + [repr(e) for e in errors] + [repr(client), repr(client.config)]
    assert all(KEY not in text and "SECRET" not in text for text in shown)


def test_fake_server_lists_models_and_rejects_wrong_keys():
    with FakeOpenAI(api_key="right", models=("a", "b")) as fake:
        listing = openai.OpenAI(base_url=fake.base_url, api_key="right", max_retries=0).models.list()
        assert [m.id for m in listing.data] == ["a", "b"]
        client = LLMClient(ModelConfig(base_url=fake.base_url, api_key="wrong"))
        with pytest.raises(LLMAuthError):
            client.complete(MESSAGES)


def test_a_model_refusing_max_tokens_and_temperature_gets_what_it_accepts():
    """Reasoning models (o1, o3, gpt-5) answer 400 to `max_tokens` and to a non-default
    temperature; the client renames and drops them once, then keeps sending what works."""
    with FakeOpenAI(api_key=KEY, refuses=("max_tokens", "temperature")) as fake:
        fake.push_reply("law one", times=4)
        client = make_client(fake, models=(ModelSpec("m1"),), temperature=0.7, max_tokens=321)
        first = client.complete(MESSAGES)
        second = client.complete(MESSAGES)
    assert (first.text, second.text) == ("law one", "law one")
    sent = fake.requests
    assert "max_tokens" in sent[0] and "temperature" in sent[0]
    assert sent[-1]["max_completion_tokens"] == 321 and "max_tokens" not in sent[-1] and "temperature" not in sent[-1]
    assert len(sent) == 4  # two refusals, then one request per completion
    assert client.usage.retries == 0 and client.usage.calls == 2


def test_other_bad_requests_still_stop_at_once(server):
    server.push_error(400, message="messages: too long")
    client = make_client(server)
    with pytest.raises(LLMAuthError, match="too long"):
        client.complete(MESSAGES)
    assert server.request_count == 1


# --------------------------------------------------------------------------- streaming against a llama.cpp-like server


def llama_like(**options) -> FakeOpenAI:
    """The fake behaving like llama-cpp-python's server: one generation at a time, 400 on an
    overflow (an empty stream when streamed), no usage in streams, a stream stopped by a
    new request."""
    return FakeOpenAI.like_llama_cpp(**{"context_size": 4096, **options})


def test_stream_usage_comes_from_the_final_chunk_when_the_server_sends_it():
    with FakeOpenAI(stream_usage="requested") as server:
        server.push_reply("a law in words " * 5, prompt_tokens=21, completion_tokens=17)
        completion = make_client(server).complete(MESSAGES)
        assert server.requests[0]["stream"] is True and server.requests[0]["stream_options"] == {"include_usage": True}
        assert (completion.prompt_tokens, completion.completion_tokens, completion.usage_estimated) == (21, 17, False)
        assert completion.text == "a law in words " * 5 and completion.finish_reason == "stop"
        assert server.reported_usage()["total_tokens"] == 38


def test_a_stream_without_usage_is_counted_and_says_so():
    """llama-cpp-python sends no usage in a stream: the completion is counted as its chunks
    (one per token), the prompt estimated, and the completion is marked estimated."""
    with llama_like() as server:
        server.push_reply("power law with an offset " * 4)
        completion = make_client(server).complete(MESSAGES)
        served = server.served[0]
        assert served.stream and not served.usage_reported
        assert completion.completion_tokens == served.completion_tokens  # every generated token arrived as a chunk
        assert completion.completion_tokens == 25 and completion.text == "power law with an offset " * 4
        assert completion.usage_estimated and completion.prompt_tokens == estimate_tokens(MESSAGES)


def test_a_timeout_mid_stream_stops_the_generation_on_the_server_and_keeps_the_reply_so_far():
    """The client stops reading at its timeout and closes the stream: the one-at-a-time server
    stops generating at once, so the next request starts without waiting for the old one.
    The server was slow, not down: what it wrote is the reply, cut at the time limit (like
    one cut at max_tokens), with its tokens counted; it is not sent again."""
    with llama_like(token_delay_s=0.05) as server:
        server.push_reply("tok " * 400)  # 400 tokens: 20 s of generation
        client = make_client(server, request_timeout_s=0.8, max_retries=0)
        started = time.monotonic()
        cut = client.complete(MESSAGES)
        assert time.monotonic() - started < 3
        server.push_reply("short reply")
        assert client.complete(MESSAGES).text == "short reply"
        assert time.monotonic() - started < 5
        assert server.wait_idle(3.0)
        first = server.served[0]
        usage = client.usage.to_dict()
    assert cut.finish_reason == "timeout" and cut.text == "tok " * cut.completion_tokens and cut.usage_estimated
    assert first.disconnected and first.stopped_early and 5 <= first.completion_tokens < 60
    assert 0 <= first.completion_tokens - cut.completion_tokens <= 2  # a token or two were on the wire when it closed
    assert server.request_count == 2 and usage["calls"] == 2 and "cut_short" not in usage


def test_the_request_timeout_holds_on_a_stream_kept_alive_by_pings():
    """llama-cpp-python sends a stream's headers at once and a keep-alive comment every 15 s
    while it processes the prompt: no read ever times out, so the client's own deadline must
    end the request (before this, one stayed open for 10 minutes against a 120 s timeout)."""
    with llama_like(prompt_token_delay_s=1.0, sse_ping_s=0.1) as server:  # 10 s of prompt processing
        client = make_client(server, request_timeout_s=1.0, max_retries=2)
        started = time.monotonic()
        with pytest.raises(LLMUnavailable, match="timed out"):
            client.complete(MESSAGES)
        assert time.monotonic() - started < 3
        assert server.wait_idle(15.0) and server.request_count == 1 and server.served[0].disconnected


def test_a_timeout_before_the_first_token_is_unavailable_and_not_resent():
    with llama_like(prompt_token_delay_s=0.1) as server:  # 0.1 s per prompt token: the prompt alone outlasts the timeout
        client = make_client(server, request_timeout_s=0.6, max_retries=2)
        with pytest.raises(LLMUnavailable, match="timed out"):
            client.complete(MESSAGES)
        assert server.wait_idle(5.0)
        assert server.request_count == 1 and client.usage.to_dict()["completion_tokens"] == 0


def test_cancel_stops_streams_in_flight_and_requests_waiting_for_a_slot():
    with llama_like(token_delay_s=0.05) as server:
        server.push_reply("tok " * 400, times=2)
        client = make_client(server, concurrency=1)
        outcomes: list[BaseException | str] = []

        def ask() -> None:
            try:
                outcomes.append(client.complete(MESSAGES).text)
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                outcomes.append(exc)

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        client.cancel()
        for thread in threads:
            thread.join(timeout=5)
        assert time.monotonic() - started < 2
        assert len(outcomes) == 2 and all(type(o).__name__ == "Cancelled" for o in outcomes), outcomes
        assert server.request_count == 1  # the second never left the client: it waited for the slot
        assert server.wait_idle(2.0) and server.served[0].disconnected and server.served[0].stopped_early
        assert client.usage.failures == 0  # a cancelled request is not an endpoint failure


def test_an_overflow_on_a_stream_is_found_by_asking_again_without_streaming():
    """llama-cpp-python answers a streamed prompt that does not fit with 200 and an empty
    stream; the same request without streaming gets its 400 and the server's message."""
    with llama_like(context_size=50) as server:
        client = make_client(server)
        with pytest.raises(LLMAuthError, match="maximum context length is 50 tokens") as caught:
            client.complete([{"role": "user", "content": "y" * 400}])
        assert type(caught.value).__name__ == "ContextOverflow"
        assert [r.get("stream", False) for r in server.requests] == [True, False]
        assert client.context_size == 50


def test_generation_time_excludes_waiting_for_a_free_slot():
    with llama_like(token_delay_s=0.02) as server:
        server.push_reply("tok " * 40, times=2)  # 40 tokens: about 0.8 s each
        client = make_client(server, concurrency=1)
        results: list[tuple[float, Completion]] = []

        def ask() -> None:
            started = time.monotonic()
            completion = client.complete(MESSAGES)
            results.append((time.monotonic() - started, completion))

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        (first_wall, first), (second_wall, second) = sorted(results, key=lambda pair: pair[0])
        assert server.max_generating == 1
        assert second_wall > first.seconds + 0.5 * second.seconds  # it waited for the first one
        assert second.seconds < 0.75 * second_wall  # but its generation time does not count the wait


# --------------------------------------------------------------------------- streams cut short are billed


def test_a_stream_dropped_mid_generation_is_billed_as_estimated_cut_short_usage():
    """The connection breaks after some tokens (a server crash): the server generated, and
    bills, every token it streamed, so they are in the totals and under `cut_short`, counted
    from the chunks received; the retry's reply is a call of its own."""
    with llama_like() as server:
        server.push_drop_stream(after_tokens=7, text="tok " * 40)
        server.push_reply("the retry")
        client = make_client(server, max_retries=1)
        assert client.complete(MESSAGES).text == "the retry"
        assert server.wait_idle(3.0)
        usage = client.usage.to_dict()
    assert server.served[0].completion_tokens == 7
    assert usage["cut_short"] == {"prompt_tokens": estimate_tokens(MESSAGES), "completion_tokens": 7, "cost_usd": 0.0, "calls": 1,
                                  "estimated_calls": 1, "per_model": {client.choose_model(): {
                                      "prompt_tokens": estimate_tokens(MESSAGES), "completion_tokens": 7, "cost_usd": 0.0,
                                      "calls": 1, "estimated_calls": 1}}}
    assert usage["calls"] == 1 and usage["completion_tokens"] == 7 + server.served[1].completion_tokens
    assert usage["prompt_tokens"] == 2 * estimate_tokens(MESSAGES)


def test_streams_cancelled_by_ctrl_c_are_billed_and_a_request_never_sent_is_not():
    with FakeOpenAI.like_llama_cpp(context_size=4096, token_delay_s=0.05, stream_usage="requested") as server:
        server.push_reply("tok " * 400, times=2)
        client = make_client(server, concurrency=1)
        errors: list[BaseException] = []

        def ask() -> None:
            try:
                client.complete(MESSAGES)
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                errors.append(exc)

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(0.6)
        client.cancel()
        for thread in threads:
            thread.join(timeout=5)
        assert server.wait_idle(3.0)
        usage = client.usage.to_dict()
    assert [type(e).__name__ for e in errors] == ["Cancelled", "Cancelled"]
    assert server.request_count == 1 and not server.served[0].usage_reported  # usage comes at a stream's end only
    assert 0 <= server.served[0].completion_tokens - usage["completion_tokens"] <= 2 and usage["completion_tokens"] >= 5
    assert usage["cut_short"]["calls"] == 1  # the request that waited for a slot cost nothing
    assert usage["prompt_tokens"] == estimate_tokens(MESSAGES)


def test_cut_short_tokens_count_toward_the_budget():
    with FakeOpenAI.like_llama_cpp(context_size=4096, token_delay_s=0.02) as server:
        server.push_reply("tok " * 400)
        client = make_client(server, budget_tokens=10)
        thread = threading.Thread(target=lambda: pytest.raises(BaseException, client.complete, MESSAGES))
        thread.start()
        time.sleep(0.5)
        client.cancel()
        thread.join(timeout=5)
        assert client.usage.total_tokens > 10
        with pytest.raises(BudgetExceeded):
            client.complete(MESSAGES)
        assert server.request_count == 1


def test_cut_short_usage_survives_a_resume():
    usage = Usage()
    usage.record_call("m", 100, 20, 0.0, estimated=True)
    usage.record_cut_short("m", 50, 7, 0.0, estimated=True)
    again = Usage.from_dict(usage.to_dict())
    assert again.to_dict() == usage.to_dict()
    assert (again.prompt_tokens, again.completion_tokens, again.calls, again.cut_short.calls) == (150, 27, 1, 1)

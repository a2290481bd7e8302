"""The fake server's realistic options behave like llama-cpp-python's server (as probed)."""

from __future__ import annotations

import json
import socket
import threading
import time

import openai
import pytest

from tests.fake_openai import Behaviour, FakeOpenAI, context_overflow_body, sampled_text

MESSAGES = [{"role": "user", "content": "x" * 400}]  # 100 tokens at 4 characters each


def client(server: FakeOpenAI, timeout: float = 10.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0, timeout=timeout)


def test_serial_server_generates_one_request_at_a_time_in_arrival_order():
    with FakeOpenAI(serial=True, token_delay_s=0.05, responder=lambda r: "abcd" * 4) as server:  # 4 tokens: 0.2 s
        api = client(server)
        api.chat.completions.create(model="m", messages=[{"role": "user", "content": "warm up"}])
        finished: list[int] = []

        def ask(number: int) -> None:
            api.chat.completions.create(model="m", messages=[{"role": "user", "content": str(number)}])
            finished.append(number)

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(3)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
            time.sleep(0.05)
        for thread in threads:
            thread.join(timeout=10)
        assert time.monotonic() - started >= 0.6
        assert finished == [0, 1, 2]
        assert server.max_generating == 1 and server.max_in_flight == 3
        assert server.served[3].waited_s > 0.2


def test_context_overflow_is_a_400_with_llama_cpps_body():
    with FakeOpenAI(context_size=100) as server:
        with pytest.raises(openai.BadRequestError) as caught:
            client(server).chat.completions.create(model="m", messages=MESSAGES, max_tokens=50)
        assert caught.value.status_code == 400
        assert caught.value.body == context_overflow_body(100, 50, 100)["error"]
        assert caught.value.body["message"] == (
            "This model's maximum context length is 100 tokens. However, you requested 150 tokens "
            "(100 in the messages, 50 in the completion). Please reduce the length of the messages or completion."
        )
        assert server.served[0].status == 400 and server.reported_usage()["replies"] == 0


def test_max_tokens_beyond_the_context_cuts_the_reply_without_an_error():
    with FakeOpenAI(context_size=110, responder=lambda r: "word" * 50) as server:
        reply = client(server).chat.completions.create(model="m", messages=MESSAGES, max_tokens=4096)
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage.prompt_tokens == 100 and reply.usage.completion_tokens == 10
        assert reply.choices[0].message.content == "word" * 10


def test_token_delay_makes_replies_slow():
    with FakeOpenAI(token_delay_s=0.02, responder=lambda r: "abcd" * 10) as server:
        started = time.monotonic()
        client(server).chat.completions.create(model="m", messages=MESSAGES)
        assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize(("mode", "include", "expect_usage"), [
    ("requested", True, True), ("requested", False, False), ("never", True, False), ("always", False, True),
])
def test_streaming_sends_chunks_then_usage_as_configured(mode, include, expect_usage):
    with FakeOpenAI(stream_usage=mode, responder=lambda r: "abcdefgh" * 3) as server:
        options = {"stream_options": {"include_usage": True}} if include else {}
        chunks = list(client(server).chat.completions.create(model="m", messages=MESSAGES, stream=True, **options))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "abcdefgh" * 3
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finishes == ["stop"]
        usage = [c.usage for c in chunks if c.usage is not None]
        assert bool(usage) == expect_usage
        if expect_usage:
            assert (usage[0].prompt_tokens, usage[0].completion_tokens) == (100, 6)
            assert server.reported_usage() == {"prompt_tokens": 100, "completion_tokens": 6, "total_tokens": 106, "replies": 1}
        else:
            assert server.reported_usage()["replies"] == 0
        assert server.generated_usage()["completion_tokens"] == 6


def test_seeded_sampling_repeats_and_unseeded_does_not():
    with FakeOpenAI(responder=sampled_text) as server:
        api = client(server)
        ask = lambda **o: api.chat.completions.create(model="m", messages=MESSAGES, temperature=0.8, **o).choices[0].message.content
        assert ask(seed=42) == ask(seed=42)
        assert ask(seed=42) != ask(seed=43)
        assert ask() != ask()


def _raw_request(port: int, body: dict) -> socket.socket:
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(data) + data)
    return sock


def test_a_stream_stops_generating_when_the_client_leaves():
    with FakeOpenAI(token_delay_s=0.02, responder=lambda r: "abcd" * 200) as server:
        sock = _raw_request(server.port, {"model": "m", "messages": MESSAGES, "stream": True})
        time.sleep(0.3)
        sock.close()
        assert server.wait_idle(5)
        served = server.served[0]
        assert served.disconnected and served.stopped_early
        assert 0 < served.completion_tokens < 200 and not served.usage_reported


@pytest.mark.parametrize("abort", [False, True])
def test_a_plain_reply_goes_on_after_the_client_leaves_unless_told_to_abort(abort):
    with FakeOpenAI(token_delay_s=0.01, responder=lambda r: "abcd" * 50, abort_non_streaming=abort) as server:
        sock = _raw_request(server.port, {"model": "m", "messages": MESSAGES})
        time.sleep(0.15)
        sock.close()
        assert server.wait_idle(5)
        served = server.served[0]
        assert served.disconnected and not served.usage_reported
        assert served.stopped_early == abort
        assert (served.completion_tokens == 50) != abort
        assert server.reported_usage()["replies"] == 0 and server.generated_usage()["prompt_tokens"] == 100


def test_a_new_request_interrupts_a_stream_like_llama_cpp():
    with FakeOpenAI.like_llama_cpp(token_delay_s=0.01, responder=lambda r: "abcd" * 200) as server:
        api = client(server)
        collected: list = []
        stream_thread = threading.Thread(target=lambda: collected.extend(
            api.chat.completions.create(model="m", messages=MESSAGES, stream=True)))
        stream_thread.start()
        time.sleep(0.3)
        plain = api.chat.completions.create(model="m", messages=MESSAGES, max_tokens=5)
        stream_thread.join(timeout=10)
        assert plain.usage.completion_tokens == 5
        assert server.served[0].interrupted and server.served[0].completion_tokens < 200
        assert all(c.choices[0].finish_reason is None for c in collected if c.choices)


def test_streamed_overflow_is_an_empty_200_like_llama_cpp():
    with FakeOpenAI.like_llama_cpp(context_size=50) as server:
        chunks = list(client(server).chat.completions.create(model="m", messages=MESSAGES, stream=True))
        assert chunks == []


def test_random_faults_are_seeded():
    def outcomes(seed: int) -> list[str]:
        with FakeOpenAI(fault_rate=0.5, fault_kinds=("500", "503"), fault_seed=seed) as server:
            api = client(server)
            result = []
            for _ in range(12):
                try:
                    api.chat.completions.create(model="m", messages=MESSAGES)
                    result.append("ok")
                except openai.APIStatusError as exc:
                    result.append(str(exc.status_code))
            return result

    first = outcomes(1)
    assert first == outcomes(1) and {"ok", "500", "503"} <= set(first) | {"503"} and "ok" in first


def test_a_dropped_stream_resets_the_connection_after_some_tokens():
    with FakeOpenAI(responder=lambda r: "abcd" * 20) as server:
        server.push(Behaviour("drop_stream", drop_after_tokens=3))
        got: list = []
        with pytest.raises(openai.APIConnectionError):
            for chunk in client(server).chat.completions.create(model="m", messages=MESSAGES, stream=True):
                got.append(chunk)
        assert server.served[0].completion_tokens == 3


def test_models_listing_matches_llama_cpp():
    with FakeOpenAI.like_llama_cpp(models=("smollm2",)) as server:
        listing = client(server).models.list()
        assert [m.model_dump() for m in listing.data] == [
            {"id": "smollm2", "object": "model", "owned_by": "me", "permissions": [], "created": None}
        ] or [m.id for m in listing.data] == ["smollm2"]


def test_reported_usage_matches_what_the_client_got():
    with FakeOpenAI() as server:
        api = client(server)
        totals = [0, 0]
        for _ in range(3):
            usage = api.chat.completions.create(model="m", messages=MESSAGES).usage
            totals[0] += usage.prompt_tokens
            totals[1] += usage.completion_tokens
        reported = server.reported_usage()
        assert (reported["prompt_tokens"], reported["completion_tokens"], reported["replies"]) == (totals[0], totals[1], 3)

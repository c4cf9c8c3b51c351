"""The OpenAI-compatible HTTP API through the official `openai` client, against a real stack (three
processes on loopback, tiny random models), side by side with the gRPC API."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import grpc
import openai
import pytest

from specdec.cli.launcher import free_port
from specdec.v1 import generation_pb2, generation_pb2_grpc
from tests.stack import Stack, scrape

GREEDY = {"temperature": 0, "extra_body": {"ignore_eos": True}}


@pytest.fixture(scope="module")
def stack(tiny_target, tiny_draft):
    port = free_port()
    stack = Stack(str(tiny_target), str(tiny_draft), "--http-port", str(port), metrics=True, threads=1)
    stack.http_url = f"http://127.0.0.1:{port}"
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def client(stack):
    with openai.OpenAI(base_url=stack.http_url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def grpc_generate(stack: Stack, **fields) -> tuple[str, list[int]]:
    async def call():
        async with grpc.aio.insecure_channel(stack.address) as channel:
            stub = generation_pb2_grpc.GenerationStub(channel)
            chunks = [c async for c in stub.Generate(generation_pb2.GenerateRequest(**fields), timeout=60)]
        return "".join(c.text for c in chunks), [t for c in chunks for t in c.token_ids]

    return asyncio.run(call())


def test_models_lists_the_target(client, stack):
    models = client.models.list()
    assert [model.id for model in models.data] == [stack.target_model]


def test_chat_completion_equals_the_grpc_output_with_usage_and_spec_stats(client, stack):
    text, tokens = grpc_generate(stack, messages=[{"role": "user", "content": "abcab"}], max_new_tokens=24,
                                 ignore_eos=True)
    reply = client.chat.completions.create(model=stack.target_model, messages=[{"role": "user", "content": "abcab"}],
                                           max_completion_tokens=24, **GREEDY)
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == text
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == len(tokens) == 24
    assert reply.usage.prompt_tokens > 0 and reply.usage.total_tokens == reply.usage.prompt_tokens + 24
    spec = reply.model_extra["spec_decode"]
    assert spec["target_calls"] > 0 and 0 <= spec["num_accepted_tokens"] <= spec["num_draft_tokens"]


def test_streamed_chat_completion_with_usage_in_the_last_chunk(client, stack):
    expected = client.chat.completions.create(model=stack.target_model, messages=[{"role": "user", "content": "ab"}],
                                              max_tokens=20, **GREEDY).choices[0].message.content
    chunks = list(client.chat.completions.create(
        model=stack.target_model, messages=[{"role": "user", "content": "ab"}], max_tokens=20, stream=True,
        stream_options={"include_usage": True}, **GREEDY))
    content = [c for c in chunks if c.choices]
    assert len(content) > 1 and content[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in content) == expected
    assert content[-1].choices[0].finish_reason == "length" and "spec_decode" in content[-1].model_extra
    assert all(c.choices[0].finish_reason is None for c in content[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20


def test_completions_streamed_and_not_equal_grpc(client, stack):
    text, _ = grpc_generate(stack, prompt="abcabc", max_new_tokens=16, ignore_eos=True)
    whole = client.completions.create(model=stack.target_model, prompt="abcabc", max_tokens=16, **GREEDY)
    assert whole.object == "text_completion" and whole.choices[0].text == text
    streamed = client.completions.create(model=stack.target_model, prompt="abcabc", max_tokens=16, stream=True,
                                         **GREEDY)
    assert "".join(chunk.choices[0].text for chunk in streamed) == text
    by_ids = client.completions.create(model=stack.target_model, prompt=[1, 2, 3], max_tokens=4, **GREEDY)
    assert by_ids.usage.prompt_tokens == 3 and by_ids.usage.completion_tokens == 4


def test_seeded_sampling_and_stop_strings(client, stack):
    # A seed reproduces a request for a fixed k schedule.
    sampled = [client.completions.create(model=stack.target_model, prompt="abc", max_tokens=12, temperature=1.0, seed=7,
                                         extra_body={"ignore_eos": True, "num_speculative_tokens": 2}).choices[0].text
               for _ in range(2)]
    assert sampled[0] == sampled[1]
    full = client.completions.create(model=stack.target_model, prompt="abc", max_tokens=30, **GREEDY).choices[0]
    stop = full.text[5:7]
    stopped = client.completions.create(model=stack.target_model, prompt="abc", max_tokens=30, stop=[stop],
                                        **GREEDY).choices[0]
    assert stopped.finish_reason == "stop" and stopped.text == full.text[: full.text.index(stop)]


@pytest.mark.parametrize("fields, message", [
    ({"temperature": -1}, "temperature must be 0 (greedy) or in"),
    ({"temperature": "hot"}, "`temperature` must be a number"),
    ({"n": 2}, "`n` must be 1"),
    ({"frequency_penalty": 0.5}, "`frequency_penalty` is not supported"),
    ({"extra_body": {"draft": "psychic"}}, "unknown draft 'psychic'"),
    ({"max_tokens": -3}, "max_new_tokens must be >= 0"),
])
def test_bad_input_is_a_400_with_the_grpc_message(client, stack, fields, message):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=stack.target_model, messages=[{"role": "user", "content": "ab"}],
                                       **fields)
    assert error.value.status_code == 400 and message in error.value.message


def test_an_unknown_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-9", prompt="ab", max_tokens=2)


def test_health_metrics_and_malformed_bodies_over_plain_http(stack):
    with urllib.request.urlopen(stack.http_url + "/health", timeout=10) as reply:
        assert reply.status == 200
    with urllib.request.urlopen(stack.http_url + "/metrics", timeout=10) as reply:
        assert b"specdec_requests_total" in reply.read()
    broken = urllib.request.Request(stack.http_url + "/v1/completions", data=b"{not json", method="POST",
                                    headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(broken, timeout=10)
    assert error.value.code == 400 and "not valid JSON" in json.loads(error.value.read())["error"]["message"]


def test_a_client_that_disconnects_cancels_its_generation(client, stack):
    stream = client.completions.create(model=stack.target_model, prompt="abc", max_tokens=240, stream=True, **GREEDY)
    next(iter(stream))
    stream.close()  # the client goes away mid-stream
    deadline = time.monotonic() + 10
    while scrape(stack.metrics_ports["orchestrator"])[("specdec_active_requests", ())] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert scrape(stack.metrics_ports["orchestrator"])[("specdec_active_requests", ())] == 0

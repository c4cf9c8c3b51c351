"""The public API end to end: three real services on loopback, tiny random models."""

from __future__ import annotations

import asyncio
import ipaddress
import time

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from specdec.cli.launcher import stop_process, wait_healthy
from specdec.runtime.wire import decode_rows
from specdec.v1 import (
    common_pb2,
    draft_pb2,
    draft_pb2_grpc,
    generation_pb2,
    generation_pb2_grpc,
    target_pb2,
    target_pb2_grpc,
)
from tests.conftest import TINY_CHARS
from tests.stack import Stack, free_port, start_service
from tests.tiny_models import char_tokenizer, save_tiny_lm

PROMPT = "abcabcab"


@pytest.fixture(scope="module")
def stack(tiny_target, tiny_draft):
    stack = Stack(str(tiny_target), str(tiny_draft), threads=1)
    yield stack
    stack.close()


def generate(address: str, **fields) -> list[generation_pb2.GenerateResponse]:
    fields.setdefault("prompt", PROMPT)

    async def call():
        async with grpc.aio.insecure_channel(address) as channel:
            stub = generation_pb2_grpc.GenerationStub(channel)
            return [chunk async for chunk in stub.Generate(generation_pb2.GenerateRequest(**fields), timeout=60)]

    return asyncio.run(call())


def joined(chunks) -> tuple[str, list[int]]:
    return "".join(c.text for c in chunks), [t for c in chunks for t in c.token_ids]


def test_streams_chunks_and_ends_with_stats(stack):
    chunks = generate(stack.address, max_new_tokens=23, num_speculative_tokens=3, draft="model", ignore_eos=True)
    text, tokens = joined(chunks)
    last = chunks[-1]
    assert len(chunks) > 1 and all(not c.finish_reason and not c.HasField("stats") for c in chunks[:-1])
    assert len(tokens) == 23 and last.finish_reason == "length"
    stats = last.stats
    assert stats.generated_tokens == 23 and stats.prompt_tokens == len(PROMPT) and stats.draft == "model"
    assert 0 <= stats.accepted_tokens <= stats.drafted_tokens <= 3 * stats.target_calls
    assert stats.acceptance_rate == pytest.approx(stats.accepted_tokens / stats.drafted_tokens)
    assert stats.mean_accepted_tokens == pytest.approx(23 / stats.target_calls)
    assert len(stats.drafted_per_position) <= 3 and sum(stats.accepted_per_position) == stats.accepted_tokens
    assert stats.wire_bytes > 0 and stats.tokens_per_second > 0
    assert text == char_tokenizer(TINY_CHARS).decode(tokens, skip_special_tokens=True)


@pytest.mark.parametrize("draft", ["model", "ngram"])
def test_greedy_speculation_reproduces_plain_decoding(stack, draft):
    expected = joined(generate(stack.address, max_new_tokens=40, draft="none", ignore_eos=True))
    for k in (1, 2, 5):
        got = generate(stack.address, max_new_tokens=40, draft=draft, num_speculative_tokens=k, ignore_eos=True)
        assert joined(got) == expected


def test_adaptive_k_keeps_greedy_output_exact(stack):
    expected = joined(generate(stack.address, max_new_tokens=40, draft="none", ignore_eos=True))
    chunks = generate(stack.address, max_new_tokens=40, draft="model", num_speculative_tokens=0, ignore_eos=True)
    assert joined(chunks) == expected
    stats = chunks[-1].stats
    assert stats.drafted_tokens > 0 and len(stats.drafted_per_position) <= 8
    # The tiny target's text repeats itself, so prompt lookup finds proposals and, costing no draft
    # call, gets sent: exactness above covers them too.
    assert 0 < stats.lookup_drafted_tokens < stats.drafted_tokens
    assert 0 <= stats.lookup_accepted_tokens <= min(stats.lookup_drafted_tokens, stats.accepted_tokens)


def test_target_refuses_sampling_without_the_accept_test_inputs(stack):
    request = target_pb2.ScoreRequest(
        session_id="s", token_ids=[1, 2, 3], draft_token_ids=[4, 5], sampling=common_pb2.SamplingParams(temperature=1.0),
    )
    with grpc.insecure_channel(stack.target_address) as channel:
        with pytest.raises(grpc.RpcError) as error:
            target_pb2_grpc.TargetStub(channel).Score(request, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "uniforms" in error.value.details()


def test_the_stream_methods_answer_each_request_as_the_unary_ones_do(stack):
    """A session's steps on one open stream: a reply per request, in order, equal to the unary
    reply but for compute_seconds; a bad request ends the stream with INVALID_ARGUMENT."""
    sequences = [[1, 2, 3], [1, 2, 3, 4], [5, 6]]  # growing, then another prefix (the cache drops the rest)
    proposals = [
        draft_pb2.ProposeRequest(session_id="st", token_ids=ids, num_tokens=2, method=draft_pb2.DRAFT_METHOD_MODEL)
        for ids in sequences
    ]
    scores = [target_pb2.ScoreRequest(session_id="st", token_ids=ids, draft_token_ids=[6, 7]) for ids in sequences]
    bad = target_pb2.ScoreRequest(session_id="st", token_ids=[1, 999])

    def without_timing(reply):
        reply.compute_seconds = 0
        return reply

    with grpc.insecure_channel(stack.draft_address) as draft, grpc.insecure_channel(stack.target_address) as target:
        draft_stub, target_stub = draft_pb2_grpc.DraftStub(draft), target_pb2_grpc.TargetStub(target)
        streamed_proposals = draft_stub.ProposeStream(draft_pb2.ProposeStreamRequest(request=r) for r in proposals)
        assert [without_timing(m.response) for m in streamed_proposals] == [
            without_timing(draft_stub.Propose(r, timeout=10)) for r in proposals
        ]
        streamed_scores = target_stub.ScoreStream(target_pb2.ScoreStreamRequest(request=r) for r in scores)
        assert [without_timing(m.response) for m in streamed_scores] == [
            without_timing(target_stub.Score(r, timeout=10)) for r in scores
        ]
        replies = target_stub.ScoreStream(
            target_pb2.ScoreStreamRequest(request=r) for r in [scores[0], bad, scores[1]]
        )
        assert next(replies).response.num_accepted == target_stub.Score(scores[0], timeout=10).num_accepted
        with pytest.raises(grpc.RpcError) as error:
            next(replies)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "999" in error.value.details()


def test_draft_sends_q_rows_only_when_sampling(stack):
    def propose(temperature: float) -> draft_pb2.ProposeResponse:
        request = draft_pb2.ProposeRequest(
            session_id="rows", token_ids=[1, 2, 3], num_tokens=3, seed=7, method=draft_pb2.DRAFT_METHOD_MODEL,
            sampling=common_pb2.SamplingParams(temperature=temperature),
        )
        with grpc.insecure_channel(stack.draft_address) as channel:
            return draft_pb2_grpc.DraftStub(channel).Propose(request, timeout=10)

    greedy, sampled = propose(0.0), propose(1.0)
    assert len(greedy.token_ids) == 3 and not greedy.HasField("probs")  # q is one-hot at each token
    q = decode_rows(sampled.probs)
    assert q.shape[0] == 3 and bool((q[range(3), list(sampled.token_ids)] > 0).all())
    torch.testing.assert_close(q.sum(dim=1), torch.ones(3))


def test_seeded_sampling_is_reproducible(stack):
    fields = dict(max_new_tokens=30, temperature=0.9, top_k=5, seed=42, draft="model", num_speculative_tokens=3)
    assert joined(generate(stack.address, **fields)) == joined(generate(stack.address, **fields))


def test_stop_string_ends_generation_and_is_not_returned(stack):
    text, _ = joined(generate(stack.address, max_new_tokens=40, ignore_eos=True))
    stop_string = text[10:13]
    first = text.index(stop_string)
    chunks = generate(stack.address, max_new_tokens=40, ignore_eos=True, stop=["zzz", stop_string])
    assert joined(chunks)[0] == text[:first]
    assert chunks[-1].finish_reason == "stop"


def test_eos_ends_generation(stack):
    # Find a seed whose sampled continuation contains <eos> (id 0), then ask again without ignore_eos.
    fields = dict(max_new_tokens=40, temperature=1.5, num_speculative_tokens=2, draft="model")
    for seed in range(40):
        _, tokens = joined(generate(stack.address, seed=seed, ignore_eos=True, **fields))
        if 0 in tokens:
            break
    else:
        pytest.fail("no sampled continuation produced <eos>; the tiny models changed")
    chunks = generate(stack.address, seed=seed, **fields)
    assert joined(chunks)[1] == tokens[: tokens.index(0) + 1]
    assert chunks[-1].finish_reason == "eos"


def test_chat_messages_use_the_chat_template(stack):
    chunks = generate(stack.address, prompt="", messages=[{"role": "user", "content": "cab"}], max_new_tokens=5)
    assert chunks[-1].stats.prompt_tokens == len("ucab") + 1  # the tiny template: role initial, content, "a"


BAD_REQUESTS = {
    "no prompt": (dict(prompt=""), "prompt"),
    "two inputs": (dict(prompt_token_ids=[1, 2]), "exactly one"),
    "negative temperature": (dict(temperature=-0.5), "temperature"),
    "top_p zero": (dict(top_p=0.0), "top_p"),
    "top_p above one": (dict(top_p=1.5), "top_p"),
    "k above maximum": (dict(num_speculative_tokens=99), "num_speculative_tokens"),
    "prompt beyond context": (dict(prompt="ab" * 200), "context"),
    "unknown draft": (dict(draft="eagle"), "draft"),
    "negative max_new_tokens": (dict(max_new_tokens=-1), "max_new_tokens"),
    "lenience above one": (dict(lenience=2.0), "lenience"),
    "empty stop string": (dict(stop=[""]), "stop"),
    # Hostile values: none of them may cost the server more than a refusal.
    "infinite temperature": (dict(temperature=float("inf")), "temperature"),
    "NaN top_p": (dict(top_p=float("nan")), "top_p"),
    "too many stop strings": (dict(stop=["x"] * 20_000), "at most 16 stop strings"),
    "a huge stop string": (dict(stop=["x" * 200_000]), "at most 256 characters"),
    "a multi-megabyte prompt": (dict(prompt="ab" * 1_500_000), "characters; the target model's context"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_input_is_invalid_argument_and_server_stays_healthy(stack, case):
    fields, word = BAD_REQUESTS[case]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        generate(stack.address, **fields)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert word in error.value.details()
    assert joined(generate(stack.address, max_new_tokens=3))[1]


def test_a_vanishing_temperature_is_greedy(stack):
    greedy = joined(generate(stack.address, max_new_tokens=12, draft="none", ignore_eos=True))
    assert joined(generate(stack.address, max_new_tokens=12, temperature=1e-40, ignore_eos=True)) == greedy


def test_out_of_range_token_ids_are_rejected(stack):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        generate(stack.address, prompt="", prompt_token_ids=[1, 2, 999])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "999" in error.value.details()


def test_health_and_reflection_on_every_service(stack):
    services = {
        stack.address: "specdec.v1.Generation",
        stack.draft_address: "specdec.v1.Draft",
        stack.target_address: "specdec.v1.Target",
    }
    for address, service in services.items():
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            database = ProtoReflectionDescriptorDatabase(channel)
            assert service in database.get_services()
            assert database.FindFileContainingSymbol(service).name.startswith("specdec/v1/")


def test_orchestrator_refuses_a_draft_with_another_vocabulary(stack, tmp_path):
    other = save_tiny_lm(tmp_path / "other", char_tokenizer("hijklmn"), seed=3)
    draft, draft_address = start_service("draft", "--model", str(other))
    try:
        wait_healthy("draft", draft_address, draft)
        orchestrator, _ = start_service(
            "orchestrator", "--draft-address", draft_address, "--target-address", stack.target_address,
            "--tokenizer", stack.target_model,
        )
        orchestrator.wait(timeout=120)
        assert orchestrator.returncode != 0
        assert "do not share a tokenizer vocabulary" in stop_process(orchestrator)
    finally:
        stop_process(draft)


def test_a_draft_identical_to_the_target_is_always_accepted(tiny_target):
    """Greedy, draft == target: every draft accepted, each call commits k + 1 tokens (bonus path)."""
    same = Stack(str(tiny_target), str(tiny_target), threads=1)
    try:
        expected = joined(generate(same.address, max_new_tokens=24, draft="none", ignore_eos=True))
        chunks = generate(same.address, max_new_tokens=24, draft="model", num_speculative_tokens=3, ignore_eos=True)
    finally:
        same.close()
    assert joined(chunks) == expected
    stats = chunks[-1].stats
    assert stats.acceptance_rate == 1.0 and stats.target_calls == 6 and list(stats.accepted_per_position) == [6, 6, 6]


def test_a_dead_draft_service_costs_speed_not_output(tiny_target, tiny_draft):
    """The orchestrator falls back to target-only iterations; the greedy output is unchanged."""
    stack = Stack(str(tiny_target), str(tiny_draft), threads=1)
    try:
        expected = joined(generate(stack.address, max_new_tokens=20, draft="none", ignore_eos=True))
        stop_process(stack.processes["draft"])
        chunks = generate(stack.address, max_new_tokens=20, draft="model", num_speculative_tokens=3, ignore_eos=True)
    finally:
        stack.close()
    assert joined(chunks) == expected
    assert chunks[-1].stats.drafted_tokens == 0 and chunks[-1].stats.target_calls == 20


def test_orchestrator_waits_for_its_upstreams_not_serving_until_then(tiny_target):
    nowhere = f"127.0.0.1:{free_port()}"
    orchestrator, address = start_service(
        "orchestrator", "--draft-address", nowhere, "--target-address", nowhere, "--tokenizer", str(tiny_target)
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # the server is up (health answers) although its upstreams are not
            with grpc.insecure_channel(address) as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline and orchestrator.poll() is None
                    time.sleep(0.2)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as error:
            generate(address, max_new_tokens=3)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE and "retry" in error.value.details()
    finally:
        stop_process(orchestrator)


def test_reflection_can_be_turned_off_and_metrics_bound_to_an_address(tiny_target):
    metrics_port = free_port()
    target, address = start_service("target", "--model", str(tiny_target), "--threads", "1", "--no-reflection",
                                    "--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1")
    try:
        wait_healthy("target", address, target)
        with grpc.insecure_channel(address) as channel:
            with pytest.raises(grpc.RpcError) as error:
                ProtoReflectionDescriptorDatabase(channel).get_services()
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert _listening_addresses(metrics_port) == {"127.0.0.1"}
    finally:
        stop_process(target)


def _listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses with a socket listening on `port`, from /proc/net/tcp (state 0A)."""
    found = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        host, local_port = local.split(":")
        if state == "0A" and int(local_port, 16) == port:
            found.add(str(ipaddress.IPv4Address(bytes.fromhex(host)[::-1])))
    return found

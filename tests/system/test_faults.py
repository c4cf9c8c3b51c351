"""Faults done for real, to real processes on loopback, mid-stream: a killed or hung draft, a killed or
draining target replica, no target at all, a cancelled stream. A fault may cost speed, never tokens."""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import pytest

from specdec.v1 import generation_pb2, generation_pb2_grpc
from tests.stack import Stack, scrape

PROMPT = "abcabcab"
LONG = 200  # tokens: long enough that a fault lands in the middle of the stream


def request(**fields) -> generation_pb2.GenerateRequest:
    return generation_pb2.GenerateRequest(prompt=PROMPT, ignore_eos=True, **fields)


async def collect(address: str, message: generation_pb2.GenerateRequest, after_first_chunk=None, timeout_s=60.0):
    """(token ids, last chunk); `after_first_chunk()` runs once the first chunk arrived."""
    tokens, last = [], None
    async with grpc.aio.insecure_channel(address) as channel:
        async for chunk in generation_pb2_grpc.GenerationStub(channel).Generate(message, timeout=timeout_s):
            if last is None and after_first_chunk is not None:
                after_first_chunk()
            tokens.extend(chunk.token_ids)
            last = chunk
    return tokens, last


async def collect_all(address: str, messages: list[generation_pb2.GenerateRequest], fault):
    """Streams all `messages` at once; `fault()` runs once, when the first of them gets its first chunk."""
    done: list = []

    def once() -> None:
        if not done:
            done.append(fault())

    return await asyncio.gather(*(collect(address, message, after_first_chunk=once) for message in messages))


def run(coroutine):
    return asyncio.run(coroutine)


def plain(stack: Stack, max_new_tokens: int = LONG) -> list[int]:
    return run(collect(stack.address, request(max_new_tokens=max_new_tokens, draft="none")))[0]


@pytest.mark.parametrize("k", [0, 3], ids=["adaptive k and prompt lookup", "fixed k"])
def test_a_draft_killed_mid_stream_costs_speed_not_output(tiny_target, tiny_draft, k):
    stack = Stack(str(tiny_target), str(tiny_draft), metrics=True, threads=1)
    try:
        expected = plain(stack)
        # Adaptive k probes the draft at k = 1, then 3: the kill lands between, on a cold cost model.
        tokens, last = run(collect(
            stack.address, request(max_new_tokens=LONG, draft="model", num_speculative_tokens=k),
            after_first_chunk=stack.processes["draft"].kill,
        ))
        # Later streams skip the dead draft (the breaker is open) and still decode exactly.
        again, again_last = run(collect(stack.address, request(max_new_tokens=LONG, draft="model",
                                                                 num_speculative_tokens=k)))
        orchestrator = scrape(stack.metrics_ports["orchestrator"])
    finally:
        stack.close()
    assert tokens == expected and again == expected
    assert last.stats.drafted_tokens > 0  # it did draft before the kill
    assert sum(v for (name, _), v in orchestrator.items() if name == "specdec_draft_failures_total") >= 1
    assert orchestrator[("specdec_draft_circuit_open", ())] == 1
    # Whatever it sent after the kill came from prompt lookup, which needs no draft call.
    assert again_last.stats.lookup_drafted_tokens == again_last.stats.drafted_tokens


def test_a_hung_draft_costs_a_few_draft_steps_not_the_call_timeout(tiny_target, tiny_draft):
    stack = Stack(str(tiny_target), str(tiny_draft), "--call-timeout-s", "30", threads=1)
    draft = stack.processes["draft"]
    try:
        expected = plain(stack)
        run(collect(stack.address, request(max_new_tokens=LONG, draft="model", num_speculative_tokens=2)))  # warm
        started = time.monotonic()
        tokens, last = run(collect(
            stack.address, request(max_new_tokens=LONG, draft="model", num_speculative_tokens=2),
            after_first_chunk=lambda: draft.send_signal(signal.SIGSTOP),
        ))
        hung_stream_s = time.monotonic() - started
    finally:
        draft.send_signal(signal.SIGCONT)
        stack.close()
    assert tokens == expected
    assert last.stats.drafted_tokens > 0
    # One draft deadline (a few measured draft steps, at least 0.25 s), then the breaker skips it.
    assert hung_stream_s < 5, hung_stream_s


def test_a_target_replica_killed_mid_stream_loses_no_token(tiny_target, tiny_draft):
    stack = Stack(str(tiny_target), str(tiny_draft), threads=1, target_replicas=2)
    try:
        expected = {k: run(collect(stack.address, request(max_new_tokens=LONG, draft="model", num_speculative_tokens=k)))[0]
                    for k in (1, 2, 3, 4)}

        outputs = run(collect_all(
            stack.address, [request(max_new_tokens=LONG, draft="model", num_speculative_tokens=k) for k in expected],
            stack.processes["target-1"].kill,
        ))
    finally:
        stack.close()
    assert stack.processes["target-1"].returncode == -signal.SIGKILL
    assert [tokens for tokens, _ in outputs] == list(expected.values())


def test_with_no_target_left_the_stream_ends_unavailable_and_its_tokens_are_intact(tiny_target, tiny_draft):
    stack = Stack(str(tiny_target), str(tiny_draft), "--call-timeout-s", "2", threads=1)
    try:
        expected = plain(stack)
        received: list[int] = []

        async def stream():
            async with grpc.aio.insecure_channel(stack.address) as channel:
                call = generation_pb2_grpc.GenerationStub(channel).Generate(
                    request(max_new_tokens=LONG, draft="model"), timeout=60)
                async for chunk in call:
                    if not received:
                        stack.processes["target"].kill()
                    received.extend(chunk.token_ids)

        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as error:
            run(stream())
        waited_s = time.monotonic() - started
    finally:
        stack.close()
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert 0 < len(received) < LONG and received == expected[: len(received)]
    assert waited_s < 10  # it gave up after the call timeout, not the client's 60 s


def test_a_cancelled_stream_frees_its_session_on_every_replica(tiny_target, tiny_draft):
    stack = Stack(str(tiny_target), str(tiny_draft), metrics=True, threads=1, target_replicas=2)
    try:
        async def cancel_after_first_chunks():
            async with grpc.aio.insecure_channel(stack.address) as channel:
                stub = generation_pb2_grpc.GenerationStub(channel)
                calls = [stub.Generate(request(max_new_tokens=LONG, draft="model"), timeout=60) for _ in range(3)]
                for call in calls:
                    await call.read()
                for call in calls:
                    call.cancel()

        run(cancel_after_first_chunks())
        services = ("draft", "target", "target-1")
        deadline = time.monotonic() + 10
        while True:
            sessions = {name: scrape(stack.metrics_ports[name])[("specdec_active_sessions", ())] for name in services}
            if not any(sessions.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        stack.close()
    assert sessions == dict.fromkeys(services, 0)


def test_a_draining_target_replica_hands_its_streams_over(tiny_target, tiny_draft):
    stack = Stack(str(tiny_target), str(tiny_draft), threads=1, target_replicas=2)
    draining = stack.processes["target"]
    try:
        expected = plain(stack)

        outputs = run(collect_all(
            stack.address, [request(max_new_tokens=LONG, draft="model", num_speculative_tokens=2)] * 4,
            lambda: draining.send_signal(signal.SIGTERM),
        ))
        assert draining.wait(timeout=30) == 0  # drained and exited cleanly, within its grace period
    finally:
        stack.close()
    assert all(tokens == expected for tokens, _ in outputs)

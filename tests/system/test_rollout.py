"""A rollout that mixes models behind one address: every step says which tokenizer it expects, a
replica with another refuses it, and the step goes to one that matches. No wrong token reaches a
client."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from specdec.cli.launcher import stop_process, wait_healthy
from specdec.v1 import generation_pb2, generation_pb2_grpc, target_pb2, target_pb2_grpc
from tests.stack import Stack, scrape, start_service_on
from tests.tiny_models import char_tokenizer, save_tiny_lm

REQUESTS = [generation_pb2.GenerateRequest(prompt=p, max_new_tokens=40, ignore_eos=True, draft="model",
                                           num_speculative_tokens=2) for p in ("abc", "gfe", "aab", "cdc")]


async def generate_all(address: str) -> list[list[int]]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = generation_pb2_grpc.GenerationStub(channel)

        async def one(request):
            return [t async for c in stub.Generate(request, timeout=60) for t in c.token_ids]

        return await asyncio.gather(*(one(request) for request in REQUESTS))


def test_a_replica_with_another_vocabulary_never_answers_a_step(tiny_target, tiny_draft, tmp_path):
    # Same vocabulary size, other characters: its ids are valid and would silently mean other text.
    other = save_tiny_lm(tmp_path / "other", char_tokenizer("tuvwxyz"), seed=5)
    stack = Stack(str(tiny_target), str(tiny_draft), metrics=True, threads=1, target_replicas=2)
    try:
        expected = asyncio.run(generate_all(stack.address))
        # target-1 is replaced by a replica of another model, on the same address.
        port = stack.spec.ports["target-1"]
        stop_process(stack.processes["target-1"])
        replaced, address = start_service_on(port, "target", "--model", str(other), "--threads", "1")
        stack.processes["target-1"] = replaced
        wait_healthy("target-1", address, replaced, timeout_s=120)
        # Until the orchestrator's channel has reconnected to the replaced replica and sent it steps.
        outputs, resends = [], 0.0
        while not resends and len(outputs) < 20:
            outputs.append(asyncio.run(generate_all(stack.address)))
            resends = scrape(stack.metrics_ports["orchestrator"]).get(
                ("specdec_upstream_resends_total", (("service", "target"),)), 0.0)

        async def ask_directly():
            async with grpc.aio.insecure_channel(address) as channel:
                return await target_pb2_grpc.TargetStub(channel).Score(target_pb2.ScoreRequest(
                    session_id="s", token_ids=[1, 2, 3], tokenizer_fingerprint="the orchestrator's"), timeout=10)

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            asyncio.run(ask_directly())
    finally:
        stack.close()
    assert all(output == expected for output in outputs)
    assert resends > 0  # steps did land on the other model's replica, which refused them
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not the one the caller expects" in refused.value.details()

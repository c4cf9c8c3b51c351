"""Many streams at once through real processes: they share batched passes on both services, every
greedy output equals the same prompt run alone, and health answers during a long prefill."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from specdec.cli.launcher import wait_healthy
from specdec.v1 import generation_pb2, generation_pb2_grpc, target_pb2, target_pb2_grpc
from tests.stack import Stack, scrape, start_service
from tests.tiny_models import char_tokenizer, save_tiny_lm

PROMPTS = ["abcabcab", "gfedcba", "aabbccdd", "dcdcdcdc", "efgabc", "bbbbbb", "acegbdf", "fedfedfe"]


@pytest.fixture(scope="module")
def stack(tiny_target, tiny_draft):
    stack = Stack(str(tiny_target), str(tiny_draft), metrics=True, threads=1)
    yield stack
    stack.close()


async def generate(stub, prompt: str, draft: str) -> list[int]:
    request = generation_pb2.GenerateRequest(prompt=prompt, max_new_tokens=30, draft=draft, ignore_eos=True)
    return [token async for chunk in stub.Generate(request, timeout=120) for token in chunk.token_ids]


def batch_rows(port: int) -> tuple[float, float]:
    """(passes, mean rows per pass) so far on a service."""
    metrics = scrape(port)
    count = metrics[("specdec_batch_rows_count", ())]
    return count, metrics[("specdec_batch_rows_sum", ())] / max(count, 1)


def passes_by_rows(port: int) -> dict[float, float]:
    """Cumulative pass counts so far on a service: upper bound on a pass's rows -> passes with at most that many."""
    return {float(dict(labels)["le"]): value for (name, labels), value in scrape(port).items()
            if name == "specdec_batch_rows_bucket"}


@pytest.mark.parametrize("draft", ["model", "none", "ngram"])
def test_concurrent_streams_share_passes_and_match_solo_runs(stack, draft):
    async def main():
        async with grpc.aio.insecure_channel(stack.address) as channel:
            stub = generation_pb2_grpc.GenerationStub(channel)
            solo = [await generate(stub, prompt, draft) for prompt in PROMPTS]
            before = {role: batch_rows(stack.metrics_ports[role]) for role in ("target", "draft")}
            draft_before = passes_by_rows(stack.metrics_ports["draft"])
            together = await asyncio.gather(*(generate(stub, prompt, draft) for prompt in PROMPTS))
            return solo, list(together), before, draft_before

    solo, together, before, draft_before = asyncio.run(main())
    assert together == solo
    passes, rows = before["target"]
    after_passes, after_rows = batch_rows(stack.metrics_ports["target"])
    # Rows per pass rose above the solo runs' one: the streams shared the target's passes.
    together_rows = (after_rows * after_passes - rows * passes) / (after_passes - passes)
    assert together_rows > 1.5
    if draft == "model":
        # The draft's passes are shared too. Not by a mean: streams that adaptive k has at k = 0 call the
        # draft rarely, and their single-row probes pull a mean down (1.38 in one of four runs). So: a
        # tenth of the passes carried two or more streams' steps, and some carried four or more.
        after = passes_by_rows(stack.metrics_ports["draft"])
        during = {le: after[le] - draft_before.get(le, 0.0) for le in after}
        total = during[float("inf")]
        assert (total - during[1.0]) / total >= 0.1, during
        assert total - during[3.0] > 0, during


def test_health_answers_within_100_ms_during_a_long_prefill(tmp_path):
    # Wide enough that a 4,000-token prefill takes a good fraction of a second on one thread.
    model = save_tiny_lm(tmp_path, char_tokenizer("abcdefg"), seed=5, hidden=256, layers=4, max_context=4096)
    process, address = start_service("target", "--model", str(model), "--threads", "1", "--max-context", "4096")
    try:
        wait_healthy("target", address, process, timeout_s=120)

        async def main() -> tuple[list[float], float]:
            async with grpc.aio.insecure_channel(address) as channel:
                score = target_pb2_grpc.TargetStub(channel).Score(
                    target_pb2.ScoreRequest(session_id="long", token_ids=[1 + i % 7 for i in range(4000)]), timeout=120
                )
                health = health_pb2_grpc.HealthStub(channel)
                started, latencies = time.perf_counter(), []
                while not score.done():
                    asked = time.perf_counter()
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
                    latencies.append(time.perf_counter() - asked)
                    await asyncio.sleep(0.02)
                await score
                return latencies, time.perf_counter() - started

        latencies, prefill_s = asyncio.run(main())
    finally:
        process.terminate()
        process.wait()
    assert prefill_s > 0.3 and len(latencies) >= 5  # the health checks did overlap the prefill
    assert max(latencies) < 0.1

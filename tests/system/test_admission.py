"""Admission control through real processes: the limits hold, the refusal is immediate and says
which limit, over gRPC (RESOURCE_EXHAUSTED) and HTTP (429), and the server recovers."""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import openai
import pytest

from specdec.cli.launcher import free_port
from specdec.v1 import generation_pb2, generation_pb2_grpc
from tests.stack import Stack, scrape


async def rest(call) -> list[int]:
    """The tokens of the chunks a call has not yet read."""
    tokens = []
    while (chunk := await call.read()) is not grpc.aio.EOF:
        tokens.extend(chunk.token_ids)
    return tokens


def test_beyond_running_and_waiting_a_stream_is_refused_at_once(tiny_target, tiny_draft):
    http_port = free_port()
    stack = Stack(str(tiny_target), str(tiny_draft), "--max-concurrent-streams", "1", "--max-queued-streams", "1",
                  "--http-port", str(http_port), metrics=True, threads=1)
    long = generation_pb2.GenerateRequest(prompt="abc", max_new_tokens=240, ignore_eos=True, draft="model")
    target = stack.processes["target"]
    try:
        async def main():
            async with grpc.aio.insecure_channel(stack.address) as channel:
                stub = generation_pb2_grpc.GenerationStub(channel)
                running = stub.Generate(long, timeout=60)
                first = await running.read()  # generating: the one place is taken
                target.send_signal(signal.SIGSTOP)  # and stays taken, however fast tiny models are
                waiting = stub.Generate(long, timeout=60)
                deadline = time.monotonic() + 20
                while scrape(stack.metrics_ports["orchestrator"])[("specdec_num_requests_waiting", ())] < 1:
                    assert time.monotonic() < deadline, "the second stream never queued"
                    await asyncio.sleep(0.02)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Generate(long, timeout=60).read()
                async with openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="-",
                                              max_retries=0) as client:
                    with pytest.raises(openai.RateLimitError) as limited:
                        await client.completions.create(model=stack.target_model, prompt="abc", max_tokens=4)
                target.send_signal(signal.SIGCONT)
                finished = [list(first.token_ids) + await rest(running), await rest(waiting)]
                again = [c async for c in stub.Generate(long, timeout=60)]  # recovered
                return refused.value, limited.value, finished, again

        refused, limited, finished, again = asyncio.run(main())
    finally:
        target.send_signal(signal.SIGCONT)
        stack.close()
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1 streams generating and 1 waiting" in refused.details() and "--max-queued-streams" in refused.details()
    assert limited.status_code == 429
    assert [len(tokens) for tokens in finished] == [240, 240]  # both admitted streams complete
    assert sum(len(c.token_ids) for c in again) == 240

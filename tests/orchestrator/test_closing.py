"""A generation closed mid-stream (its client went away) stops all its work before the close returns,
then closes its session streams: against real draft and target servers on loopback. A producer left
running after the streams closed would reopen one on its next call, and hold that replica's cache for
as long as the orchestrator runs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
from prometheus_client import REGISTRY

from draft_service.server import draft_server
from orchestrator.admission import Admission
from orchestrator.clients import DraftClient, TargetClient
from orchestrator.servicer import GenerationServicer
from specdec.runtime.hosted_model import ModelOptions
from specdec.runtime.models import load_tokenizer
from specdec.runtime.serving import start_server
from specdec.v1 import generation_pb2
from target_service.server import target_server


def open_streams() -> float:
    return sum(REGISTRY.get_sample_value("specdec_upstream_streams", {"service": service}) or 0.0
               for service in ("draft", "target"))


def producers() -> list[asyncio.Task]:
    return [task for task in asyncio.all_tasks() if "read_ahead" in task.get_coro().__qualname__]


def test_a_closed_generation_stops_before_its_session_streams_close(tiny_target: Path, tiny_draft: Path):
    async def main() -> tuple[float, float, list[asyncio.Task], float]:
        servers = [await start_server(spec(str(model), ModelOptions(cache_mb=16)), host="127.0.0.1", port=0)
                   for spec, model in ((target_server, tiny_target), (draft_server, tiny_draft))]
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") for server in servers]
        try:
            servicer = GenerationServicer(
                load_tokenizer(str(tiny_target)), DraftClient(channels[1], 30.0), TargetClient(channels[0], 30.0),
                default_draft="", default_k=0, max_adaptive_k=4, default_max_new_tokens=16, admission=Admission(4, 4),
            )
            await servicer.connect()
            before = open_streams()
            request = generation_pb2.GenerateRequest(prompt="abcabcab", max_new_tokens=200, ignore_eos=True, draft="model")
            chunks = servicer.generate(request, None)
            await anext(chunks)
            during = open_streams()
            await chunks.aclose()
            left = producers()
            deadline = time.monotonic() + 10
            while open_streams() > before and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # had anything kept generating, it would have reopened a stream by now
            return before, during, left, open_streams()
        finally:
            for channel in channels:
                await channel.close()
            for server in servers:
                await server.stop(0)

    before, during, left, after = asyncio.run(main())
    assert during == before + 2  # the session's draft and target streams
    assert left == []
    assert after == before

"""What a sampled request sends between the services, against real draft and target servers on loopback
serving a 4096-token vocabulary: the draft's q rows are its top-N (sparse) and the target answers a token,
so no iteration carries a vocabulary row (one dense row alone is 16 KB here)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from draft_service.drafter import SAMPLED_DRAFT_TOP_N
from draft_service.server import draft_server
from orchestrator.adaptive_k import CostModel
from orchestrator.clients import DraftClient, TargetClient
from orchestrator.draft_guard import DraftGuard
from orchestrator.loop import LoopStats, SpeculativeLoop
from orchestrator.request import GenerationConfig
from specdec.runtime.hosted_model import ModelOptions
from specdec.runtime.sampling import SamplingParams
from specdec.runtime.serving import start_server
from target_service.server import target_server

K, VOCAB = 3, 4096


def iteration_bytes(draft_model: Path, target_model: Path) -> tuple[list[int], LoopStats]:
    """The bytes on the wire of each iteration of one sampled request, and its stats."""

    async def main() -> list[int]:
        servers = [await start_server(spec(str(model), ModelOptions(cache_mb=16)), host="127.0.0.1", port=0)
                   for spec, model in ((target_server, target_model), (draft_server, draft_model))]
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") for server in servers]
        try:
            target, draft = TargetClient(channels[0], 30.0), DraftClient(channels[1], 30.0)
            await target.fetch_info()
            await draft.fetch_info()
            config = GenerationConfig([5, 900, 17, 4000, 2], 24, SamplingParams(temperature=1.0), seed=3,
                                      draft="model", k=K, adaptive=False, stop=(), ignore_eos=True)
            loop = SpeculativeLoop(config, "s", draft, target, stats, CostModel(), DraftGuard(30.0))
            sizes, before = [], 0
            async for _ in loop.tokens():
                sizes.append(stats.meter.wire_bytes - before)
                before = stats.meter.wire_bytes
            return sizes
        finally:
            for channel in channels:
                await channel.close()
            for server in servers:
                await server.stop(0)

    stats = LoopStats()
    return asyncio.run(main()), stats


def test_no_sampled_iteration_carries_a_vocabulary_row(wide_draft, wide_target):
    sizes, stats = iteration_bytes(wide_draft, wide_target)
    assert stats.drafted_tokens >= K * (len(sizes) - K)  # k a step, but near the end of the budget
    # The k top-N rows travel twice (draft -> orchestrator -> target), 8 bytes an entry; ids and the rest ~1 KB.
    rows_bytes = 2 * K * SAMPLED_DRAFT_TOP_N * 8
    assert max(sizes) < rows_bytes + 1024 < VOCAB * 4, sizes

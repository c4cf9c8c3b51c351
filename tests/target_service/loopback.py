"""The target service as a real gRPC server on loopback, in this process, for one test; and the model it
serves run directly, as the reference."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import torch
from transformers import AutoModelForCausalLM

from specdec.runtime.hosted_model import ModelOptions
from specdec.runtime.serving import start_server
from specdec.v1 import target_pb2_grpc
from target_service.server import target_server

Stub = target_pb2_grpc.TargetStub


class Reference:
    """The tiny target run directly: its logits and features of every position."""

    def __init__(self, path) -> None:
        self._model = AutoModelForCausalLM.from_pretrained(path).eval()

    @torch.inference_mode()
    def run(self, token_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """([len, V] logits, [len, H] features)."""
        output = self._model(input_ids=torch.tensor([token_ids]), output_hidden_states=True)
        return output.logits[0], output.hidden_states[-1][0]

    def features(self, token_ids: list[int], first: int) -> torch.Tensor:
        return self.run(token_ids)[1][first:]


def with_target(model: Path, test: Callable[[Stub], Awaitable[None]]) -> None:
    async def main() -> None:
        spec = target_server(str(model), ModelOptions(cache_mb=16))
        server = await start_server(spec, host="127.0.0.1", port=0)
        try:
            await asyncio.wait_for(server.ready, 60)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                await test(Stub(channel))
        finally:
            await server.stop(0)

    asyncio.run(main())

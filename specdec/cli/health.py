"""`specdec health ADDRESS`: the container healthcheck. It runs every few seconds, so it imports
only grpc and the health stubs (tests/cli/test_light_imports.py keeps torch and transformers out)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


async def check_health(address: str, timeout_s: float = 2.0) -> bool:
    """True when the server at `address` reports SERVING."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING

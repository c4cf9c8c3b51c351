"""A silent call stays up: servers accept the keepalive pings their clients send while a call is
open and quiet (a session stream to a draft nobody drafts from). A mistyped server policy key made
servers count those pings as abuse and end the connection with GOAWAY "too_many_pings": the call
failed UNAVAILABLE after three pings."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from specdec.runtime.serving import CHANNEL_OPTIONS, ServerSpec, start_server

PING_MS = 6_000  # the clients' 10 s, shortened; still above what the servers allow (5 s)


def test_a_silent_call_survives_keepalive_pings():
    async def main() -> list[grpc.ChannelConnectivity | grpc.StatusCode]:
        running = await start_server(ServerSpec(lambda server: None, []), host="127.0.0.1", port=0)
        options = [(key, PING_MS if key == "grpc.keepalive_time_ms" else value) for key, value in CHANNEL_OPTIONS]
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=options) as channel:
                # A call open and silent, as a session stream between steps or a health watch.
                watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
                await watch.read()
                states = []
                for _ in range(4 * PING_MS // 1000):  # four pings go by
                    await asyncio.sleep(1)
                    states.append(channel.get_state() if not watch.done() else await watch.code())
                watch.cancel()
                return states
        finally:
            await running.stop(0)

    states = asyncio.run(main())
    assert set(states) == {grpc.ChannelConnectivity.READY}

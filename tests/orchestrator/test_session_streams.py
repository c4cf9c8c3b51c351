"""orchestrator.clients.SessionStreams against real gRPC servers on loopback: stand-in Target
replicas that tell which of them answered, so a test can see where a session's calls land."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from orchestrator.clients import SessionStreams
from specdec.runtime.serving import CHANNEL_OPTIONS, RunningServer, ServerSpec, start_server
from specdec.v1 import target_pb2, target_pb2_grpc


class Replica(target_pb2_grpc.TargetServicer):
    """Answers each request with its own index (in num_accepted) and the request's draft count
    (in compute_seconds, to tell replies apart), after sleeping `uniforms[0]` seconds if given."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.finished_streams = 0  # streams the client ended by closing its side
        self.answers_per_stream: int | None = None  # if set, a stream ends unanswered after this many

    async def Score(self, request: target_pb2.ScoreRequest, context: grpc.aio.ServicerContext):
        return await self._answer(request)

    async def ScoreStream(
        self, requests: AsyncIterator[target_pb2.ScoreStreamRequest], context: grpc.aio.ServicerContext
    ):
        answered = 0
        async for message in requests:
            if answered == self.answers_per_stream:
                return  # hangs up, as a server shutting down does
            yield target_pb2.ScoreStreamResponse(response=await self._answer(message.request))
            answered += 1
        self.finished_streams += 1

    async def _answer(self, request: target_pb2.ScoreRequest) -> target_pb2.ScoreResponse:
        if request.uniforms:
            await asyncio.sleep(request.uniforms[0])
        return target_pb2.ScoreResponse(num_accepted=self.index, compute_seconds=len(request.draft_token_ids))


def within(seconds: float) -> float:
    """A call's deadline, `seconds` from now."""
    return time.monotonic() + seconds


async def start_replica(index: int, port: int = 0) -> tuple[Replica, RunningServer]:
    replica = Replica(index)
    spec = ServerSpec(
        lambda server: target_pb2_grpc.add_TargetServicer_to_server(replica, server), ["specdec.v1.Target"]
    )
    return replica, await start_server(spec, host="127.0.0.1", port=port)


def with_replicas(count: int, test: Callable[..., Awaitable[None]], traced: bool = False) -> None:
    """Runs test(channel, replicas, servers) with `count` replicas behind one round-robin channel,
    through OpenTelemetry's client interceptors if `traced` (they change how a broken call fails)."""

    async def main() -> None:
        started = [await start_replica(i) for i in range(count)]
        replicas, servers = [r for r, _ in started], [s for _, s in started]
        try:
            address = "ipv4:" + ",".join(f"127.0.0.1:{server.port}" for server in servers)
            interceptors = list(aio_client_interceptors()) if traced else None
            async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS, interceptors=interceptors) as channel:
                await test(channel, replicas, servers)
        finally:
            for server in servers:
                await server.stop(0)

    asyncio.run(main())


def request(tag: int, delay_s: float = 0.0) -> target_pb2.ScoreStreamRequest:
    return target_pb2.ScoreStreamRequest(request=target_pb2.ScoreRequest(
        session_id="s", token_ids=[1], draft_token_ids=[0] * tag, uniforms=[delay_s] if delay_s else []
    ))


def test_a_sessions_calls_stay_on_one_replica_where_unary_calls_spread():
    async def test(channel, replicas, servers) -> None:
        stub = target_pb2_grpc.TargetStub(channel)
        unary_seen = set()
        for _ in range(50):  # until round robin has both replicas ready
            unary_seen.add((await stub.Score(request(0).request, timeout=5)).num_accepted)
            if len(unary_seen) == 2:
                break
        assert unary_seen == {0, 1}
        streams = SessionStreams(stub.ScoreStream, "target")
        replies = [(await streams.call("s", request(tag), within(5))).response for tag in range(1, 7)]
        assert [reply.compute_seconds for reply in replies] == [1, 2, 3, 4, 5, 6]  # each its own reply, in order
        assert len({reply.num_accepted for reply in replies}) == 1

    with_replicas(2, test)


@pytest.mark.parametrize("traced", [False, True])
def test_when_a_replica_goes_away_the_request_is_resent_on_a_fresh_stream(traced):
    async def test(channel, replicas, servers) -> None:
        streams = SessionStreams(target_pb2_grpc.TargetStub(channel).ScoreStream, "target")
        first = (await streams.call("s", request(1), within(5))).response.num_accepted
        await servers[first].stop(0)
        reply = (await streams.call("s", request(2), within(5))).response
        assert reply.num_accepted == 1 - first and reply.compute_seconds == 2

    with_replicas(2, test, traced)


def test_a_stream_ended_without_a_reply_is_unavailable_unless_a_fresh_stream_answers():
    async def test(channel, replicas, servers) -> None:
        streams = SessionStreams(target_pb2_grpc.TargetStub(channel).ScoreStream, "target")
        replicas[0].answers_per_stream = 1
        replies = [(await streams.call("s", request(tag), within(5))).response.compute_seconds for tag in (1, 2, 3)]
        assert replies == [1, 2, 3]  # each stream answers once, then the request goes on a fresh one
        replicas[0].answers_per_stream = 0
        await streams.close("s")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await streams.call("s", request(4), within(5))
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE

    with_replicas(1, test)


def test_a_late_reply_is_deadline_exceeded_and_never_answers_the_next_request():
    async def test(channel, replicas, servers) -> None:
        streams = SessionStreams(target_pb2_grpc.TargetStub(channel).ScoreStream, "target")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await streams.call("s", request(1, delay_s=0.5), within(0.2))
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert (await streams.call("s", request(2), within(5))).response.compute_seconds == 2
        await asyncio.sleep(0.5)  # the late reply is due now
        assert (await streams.call("s", request(3), within(5))).response.compute_seconds == 3

    with_replicas(1, test)


def test_a_cancelled_call_never_hands_its_reply_to_the_next_request():
    async def test(channel, replicas, servers) -> None:
        streams = SessionStreams(target_pb2_grpc.TargetStub(channel).ScoreStream, "target")
        pending = asyncio.ensure_future(streams.call("s", request(1, delay_s=0.3), within(5)))
        await asyncio.sleep(0.1)  # the request is out; its reply is not
        pending.cancel()  # as the loop does with a draft it no longer needs
        with pytest.raises(asyncio.CancelledError):
            await pending
        assert (await streams.call("s", request(2), within(5))).response.compute_seconds == 2
        await asyncio.sleep(0.3)  # the cancelled request's reply would be due now
        assert (await streams.call("s", request(3), within(5))).response.compute_seconds == 3

    with_replicas(1, test)


def test_with_no_replica_up_a_call_fails_unavailable():
    async def test(channel, replicas, servers) -> None:
        await servers[0].stop(0)
        streams = SessionStreams(target_pb2_grpc.TargetStub(channel).ScoreStream, "target")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await streams.call("s", request(1), within(5))
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE

    with_replicas(1, test)


def test_closing_a_session_finishes_its_stream_and_the_next_call_opens_another():
    async def test(channel, replicas, servers) -> None:
        streams = SessionStreams(target_pb2_grpc.TargetStub(channel).ScoreStream, "target")
        await streams.call("s", request(1), within(5))
        await streams.call("t", request(1), within(5))
        await streams.close("s")
        await streams.close("never-called")  # nothing to close: no error
        for _ in range(100):
            if replicas[0].finished_streams:
                break
            await asyncio.sleep(0.01)
        assert replicas[0].finished_streams == 1  # "s" ended as a finished call; "t" is still open
        assert (await streams.call("s", request(2), within(5))).response.compute_seconds == 2

    with_replicas(1, test)


def test_a_resent_step_reaches_a_replica_that_comes_back_before_the_deadline():
    async def test(channel, replicas, servers) -> None:
        streams = SessionStreams(target_pb2_grpc.TargetStub(channel).ScoreStream, "target")
        assert (await streams.call("s", request(1), within(5))).response.compute_seconds == 1
        port = servers[0].port
        await servers[0].stop(0)

        async def restart() -> None:
            await asyncio.sleep(0.5)
            servers.append((await start_replica(7, port))[1])

        restarting = asyncio.ensure_future(restart())
        started = time.monotonic()
        reply = (await streams.call("s", request(2), within(10), resend=True)).response
        await restarting
        assert reply.num_accepted == 7 and reply.compute_seconds == 2  # the restarted replica answered
        assert 0.5 <= time.monotonic() - started < 5

    with_replicas(1, test)


def test_with_no_replica_back_by_the_deadline_a_resent_step_is_unavailable():
    async def test(channel, replicas, servers) -> None:
        await servers[0].stop(0)
        streams = SessionStreams(target_pb2_grpc.TargetStub(channel).ScoreStream, "target")
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await streams.call("s", request(1), within(1.0), resend=True)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert 0.5 < time.monotonic() - started < 2  # it kept trying until about the deadline

    with_replicas(1, test)

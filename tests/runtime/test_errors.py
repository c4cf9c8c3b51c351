"""specdec.runtime.errors.ErrorInterceptor on a real gRPC server on loopback: every exception a
servicer raises, in unary and streaming methods alike, reaches the client as a fitting status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from specdec.runtime.errors import FailedPrecondition, InvalidArgument, Unavailable
from specdec.runtime.serving import ServerSpec, start_server
from specdec.v1 import target_pb2, target_pb2_grpc

UPSTREAM_DOWN = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, None, None, details="connection refused")
UPSTREAM_UNKNOWN = grpc.aio.AioRpcError(grpc.StatusCode.UNKNOWN, None, None, details="who knows")
# What each request's session_id makes the servicer raise.
FAULTS: dict[str, Exception] = {
    "bad-input": InvalidArgument("token_ids is empty"),
    "no-model": FailedPrecondition("no model loaded"),
    "starting": Unavailable("still connecting"),
    "upstream-down": UPSTREAM_DOWN,
    "upstream-unknown": UPSTREAM_UNKNOWN,
    "bug": ZeroDivisionError("float division by zero"),
}


class Faulty(target_pb2_grpc.TargetServicer):
    """Raises FAULTS[session_id] from every kind of method; "abort" aborts with its own status."""

    async def Score(self, request: target_pb2.ScoreRequest, context: grpc.aio.ServicerContext):
        return await self._answer(request, context)

    async def ScoreStream(
        self, requests: AsyncIterator[target_pb2.ScoreStreamRequest], context: grpc.aio.ServicerContext
    ):
        async for message in requests:
            yield target_pb2.ScoreStreamResponse(response=await self._answer(message.request, context))

    async def EndSession(self, request: target_pb2.TargetEndSessionRequest, context: grpc.aio.ServicerContext):
        await self._answer(target_pb2.ScoreRequest(session_id=request.session_id), context)
        return target_pb2.TargetEndSessionResponse()

    async def _answer(self, request: target_pb2.ScoreRequest, context: grpc.aio.ServicerContext):
        if request.session_id == "abort":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")
        if request.session_id in FAULTS:
            raise FAULTS[request.session_id]
        return target_pb2.ScoreResponse(num_accepted=7)


EXPECTED = {
    "bad-input": (grpc.StatusCode.INVALID_ARGUMENT, "token_ids is empty"),
    "no-model": (grpc.StatusCode.FAILED_PRECONDITION, "no model loaded"),
    "starting": (grpc.StatusCode.UNAVAILABLE, "still connecting"),
    "upstream-down": (grpc.StatusCode.UNAVAILABLE, "upstream: connection refused"),
    "upstream-unknown": (grpc.StatusCode.INTERNAL, "upstream: who knows"),
    "bug": (grpc.StatusCode.INTERNAL, "ZeroDivisionError: float division by zero"),
    "abort": (grpc.StatusCode.PERMISSION_DENIED, "not yours"),
}


async def _codes(session_id: str) -> dict[str, tuple[grpc.StatusCode, str]]:
    spec = ServerSpec(lambda server: target_pb2_grpc.add_TargetServicer_to_server(Faulty(), server), ["specdec.v1.Target"])
    server = await start_server(spec, host="127.0.0.1", port=0)
    seen = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = target_pb2_grpc.TargetStub(channel)
            request = target_pb2.ScoreRequest(session_id=session_id)
            calls = {
                "unary": lambda: stub.Score(request, timeout=10),
                "unary, no reply message": lambda: stub.EndSession(
                    target_pb2.TargetEndSessionRequest(session_id=session_id), timeout=10),
                "bidirectional stream": lambda: _first_reply(stub.ScoreStream(
                    iter([target_pb2.ScoreStreamRequest(request=request)]), timeout=10)),
            }
            for kind, call in calls.items():
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await call()
                seen[kind] = (raised.value.code(), raised.value.details())
    finally:
        await server.stop(0)
    return seen


async def _first_reply(call: grpc.aio.StreamStreamCall):
    async for reply in call:
        return reply


@pytest.mark.parametrize("session_id", list(EXPECTED))
def test_every_exception_becomes_a_fitting_status_in_every_kind_of_method(session_id, caplog):
    with caplog.at_level(logging.ERROR, logger="specdec"):
        seen = asyncio.run(_codes(session_id))
    code, details = EXPECTED[session_id]
    for kind, (got_code, got_details) in seen.items():
        assert got_code == code, kind
        assert details in got_details, kind
    # Only the unexpected is logged, with its traceback, once per failed call.
    bugs = [r for r in caplog.records if r.exc_info]
    assert len(bugs) == (len(seen) if session_id == "bug" else 0)


def test_a_method_that_succeeds_is_untouched():
    async def main() -> int:
        spec = ServerSpec(lambda s: target_pb2_grpc.add_TargetServicer_to_server(Faulty(), s), ["specdec.v1.Target"])
        server = await start_server(spec, host="127.0.0.1", port=0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = target_pb2_grpc.TargetStub(channel)
                unary = await stub.Score(target_pb2.ScoreRequest(session_id="fine"), timeout=10)
                streamed = await _first_reply(stub.ScoreStream(
                    iter([target_pb2.ScoreStreamRequest(request=target_pb2.ScoreRequest(session_id="fine"))]),
                    timeout=10))
                return unary.num_accepted + streamed.response.num_accepted
        finally:
            await server.stop(0)

    assert asyncio.run(main()) == 14


def test_a_request_that_does_not_parse_is_invalid_argument_not_unknown():
    async def main() -> grpc.aio.AioRpcError:
        spec = ServerSpec(lambda s: target_pb2_grpc.add_TargetServicer_to_server(Faulty(), s), ["specdec.v1.Target"])
        server = await start_server(spec, host="127.0.0.1", port=0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                raw = channel.unary_unary("/specdec.v1.Target/Score")  # bytes in, bytes out
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await raw(b"\x0a\x02\xc3\x28", timeout=10)  # session_id: bytes that are not UTF-8
                return error.value
        finally:
            await server.stop(0)

    error = asyncio.run(main())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a valid message" in error.details()

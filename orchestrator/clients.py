"""Typed clients for the draft and target services, counting time and bytes on the wire."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Generic, TypeVar

import grpc
import torch

from specdec.runtime import telemetry
from specdec.runtime.sampling import SamplingParams
from specdec.runtime.serving import CHANNEL_OPTIONS
from specdec.runtime.speculative import Proposal
from specdec.runtime.validation import sampling_to_proto
from specdec.runtime.wire import decode_rows
from specdec.v1 import common_pb2, draft_pb2, draft_pb2_grpc, target_pb2, target_pb2_grpc

DRAFT_METHODS = {"model": draft_pb2.DRAFT_METHOD_MODEL, "ngram": draft_pb2.DRAFT_METHOD_NGRAM}


@dataclass
class CallMeter:
    """What a request's draft and target calls cost."""

    draft_seconds: float = 0.0  # as the orchestrator waits for them
    target_seconds: float = 0.0
    draft_compute_seconds: float = 0.0  # as the services report computing
    target_compute_seconds: float = 0.0
    wire_bytes: int = 0


Request = TypeVar("Request")
Reply = TypeVar("Reply")


class SessionStreams(Generic[Request, Reply]):
    """Calls a bidirectional streaming method as if it were unary, on one stream per session that
    stays open between the session's calls: each request gets one reply, in order.

    A message on an open stream costs less than a unary call (specdec/bench/rpc_floor.py: 0.3-0.7 ms
    less per step on a 2-vCPU VM), and the stream keeps a session on the replica that holds its
    prefix cache. Requests are self-describing, so when a stream opened before the call fails (its
    replica went away, its connection aged out) the request goes again on a fresh stream, to any
    replica; a fresh stream's failure is the answer. A reply that misses the deadline ends the
    stream, which would otherwise hand that late reply to the next request.

    A stream is traced as one call, in the trace context current where it opens: open() it where
    the session starts.
    """

    def __init__(self, method: grpc.aio.StreamStreamMultiCallable, timeout_s: float) -> None:
        self._method = method
        self._timeout_s = timeout_s
        self._calls: dict[str, grpc.aio.StreamStreamCall] = {}

    def open(self, session_id: str) -> None:
        if session_id not in self._calls:
            self._calls[session_id] = self._method()

    async def call(self, session_id: str, request: Request) -> Reply:
        while True:
            reused = session_id in self._calls
            self.open(session_id)
            try:
                async with asyncio.timeout(self._timeout_s):  # unlike wait_for, no task: no extra loop turns
                    reply = await _exchange(self._calls[session_id], request)
            except TimeoutError:
                self._drop(session_id)
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.DEADLINE_EXCEEDED, details=f"no reply within {self._timeout_s:g} s"
                ) from None
            except grpc.aio.AioRpcError:
                self._drop(session_id)
                if reused:
                    continue
                raise
            except asyncio.CancelledError:  # the reply, if it comes, must not answer the next request
                self._drop(session_id)
                raise
            return reply

    async def close(self, session_id: str) -> None:
        """Ends the session's stream, if it has one, as a finished call (not a cancelled one)."""
        call = self._calls.pop(session_id, None)
        if call is not None:
            await call.done_writing()

    def _drop(self, session_id: str) -> None:
        self._calls.pop(session_id).cancel()


async def _exchange(call: grpc.aio.StreamStreamCall, request: Request) -> Reply:
    try:
        await call.write(request)
        reply = await call.read()
    except asyncio.InvalidStateError:  # an intercepted call (tracing on) that has ended says only this
        raise grpc.aio.AioRpcError(await call.code(), details=await call.details()) from None
    if reply is grpc.aio.EOF:  # the server ended the stream without answering (it is shutting down)
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, details="the stream ended without a reply")
    return reply


@dataclass
class _Upstream:
    channel: grpc.aio.Channel
    timeout_s: float
    info: common_pb2.ModelInfo = field(default_factory=common_pb2.ModelInfo)


class DraftClient(_Upstream):
    @cached_property
    def _stub(self) -> draft_pb2_grpc.DraftStub:
        return draft_pb2_grpc.DraftStub(self.channel)

    @cached_property
    def _streams(self) -> SessionStreams[draft_pb2.ProposeStreamRequest, draft_pb2.ProposeStreamResponse]:
        return SessionStreams(self._stub.ProposeStream, self.timeout_s)

    async def fetch_info(self) -> common_pb2.ModelInfo:
        # No deadline: wait for the service to come up (health says NOT_SERVING meanwhile).
        reply = await self._stub.GetModelInfo(draft_pb2.DraftGetModelInfoRequest(), wait_for_ready=True)
        self.info = reply.info
        return self.info

    async def propose(
        self, session_id: str, token_ids: list[int], k: int, method: str, params: SamplingParams, seed: int,
        vocab_size: int, meter: CallMeter,
    ) -> Proposal:
        """Greedy proposals come without rows: q is one-hot at each x_i and nothing reads it."""
        message = draft_pb2.ProposeStreamRequest(request=draft_pb2.ProposeRequest(
            session_id=session_id, token_ids=token_ids, num_tokens=k, sampling=sampling_to_proto(params),
            seed=seed, method=DRAFT_METHODS[method],
        ))
        started = time.perf_counter()
        reply_message = await self._streams.call(session_id, message)
        meter.draft_seconds += time.perf_counter() - started
        reply = reply_message.response
        meter.draft_compute_seconds += reply.compute_seconds
        meter.wire_bytes += message.ByteSize() + reply_message.ByteSize()
        return Proposal(list(reply.token_ids), None if params.greedy else decode_rows(reply.probs, vocab_size))

    def start_session(self, session_id: str) -> None:
        """Opens the stream the session's calls go on (also opened on the first call if not)."""
        self._streams.open(session_id)

    async def end_session(self, session_id: str) -> None:
        """Closes the session's stream and tells the service its cache may go."""
        await self._streams.close(session_id)
        await self._stub.EndSession(draft_pb2.DraftEndSessionRequest(session_id=session_id), timeout=self.timeout_s)


class TargetClient(_Upstream):
    @cached_property
    def _stub(self) -> target_pb2_grpc.TargetStub:
        return target_pb2_grpc.TargetStub(self.channel)

    @cached_property
    def _streams(self) -> SessionStreams[target_pb2.ScoreStreamRequest, target_pb2.ScoreStreamResponse]:
        return SessionStreams(self._stub.ScoreStream, self.timeout_s)

    async def fetch_info(self) -> common_pb2.ModelInfo:
        # No deadline: wait for the service to come up (health says NOT_SERVING meanwhile).
        reply = await self._stub.GetModelInfo(target_pb2.TargetGetModelInfoRequest(), wait_for_ready=True)
        self.info = reply.info
        return self.info

    async def score(
        self,
        session_id: str,
        token_ids: list[int],
        draft_token_ids: list[int],
        q_x: torch.Tensor,
        u: torch.Tensor,
        params: SamplingParams,
        meter: CallMeter,
    ) -> tuple[int, common_pb2.ProbRows]:
        """(n accepted drafts, p_{n+1} as it came over the wire: decode it only if the step needs the row)."""
        message = target_pb2.ScoreStreamRequest(request=target_pb2.ScoreRequest(
            session_id=session_id, token_ids=token_ids, draft_token_ids=draft_token_ids,
            sampling=sampling_to_proto(params), draft_token_probs=q_x.tolist(), uniforms=u.tolist(),
        ))
        started = time.perf_counter()
        reply_message = await self._streams.call(session_id, message)
        meter.target_seconds += time.perf_counter() - started
        reply = reply_message.response
        meter.target_compute_seconds += reply.compute_seconds
        meter.wire_bytes += message.ByteSize() + reply_message.ByteSize()
        return reply.num_accepted, reply.probs

    def start_session(self, session_id: str) -> None:
        """Opens the stream the session's calls go on (also opened on the first call if not)."""
        self._streams.open(session_id)

    async def end_session(self, session_id: str) -> None:
        """Closes the session's stream and tells the service its cache may go."""
        await self._streams.close(session_id)
        await self._stub.EndSession(target_pb2.TargetEndSessionRequest(session_id=session_id), timeout=self.timeout_s)


def open_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS, interceptors=telemetry.client_interceptors())

"""Typed clients for the draft and target services, counting time and bytes on the wire."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Generic, NamedTuple, TypeVar

import grpc

from orchestrator import metrics
from specdec.runtime import telemetry
from specdec.runtime.sampling import SamplingParams
from specdec.runtime.serving import CHANNEL_OPTIONS
from specdec.runtime.speculative import Uniforms
from specdec.runtime.tls import TlsFiles, aio_channel
from specdec.runtime.validation import sampling_to_proto
from specdec.runtime.wire import check_rows
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


class Drafts(NamedTuple):
    token_ids: list[int]  # x_1..x_n
    # q_1..q_n as the draft sent them, for the target (which alone reads them); None when greedy
    q: common_pb2.ProbRows | None


class Drafted(NamedTuple):
    drafts: Drafts
    features_from: int | None  # set when the replica lacks the session's features from there (no drafts)


class Scored(NamedTuple):
    num_accepted: int  # n
    next_token: int  # the recovered or bonus token, after the first n drafts
    features: common_pb2.Features | None  # of the positions the step commits, when asked for


log = logging.getLogger("specdec")

Request = TypeVar("Request")
Reply = TypeVar("Reply")


# Failures a fresh stream can get past: the replica went away (or is draining), or none is up yet.
_RESENDABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
_FIRST_BACKOFF_S, _MAX_BACKOFF_S = 0.05, 1.0


class SessionStreams(Generic[Request, Reply]):
    """Calls a bidirectional streaming method as if it were unary, on one stream per session that
    stays open between the session's calls: each request gets one reply, in order.

    A message on an open stream costs less than a unary call (specdec/bench/rpc_floor.py: 0.3-0.7 ms
    less per step on a 2-vCPU VM), and the stream keeps a session on the replica that holds its
    prefix cache. Requests are self-describing, so when a stream fails in a way a resend can help
    with (its replica died or is draining, its connection aged out), the request goes again on a
    fresh stream, to any replica: at once when the stream had been open before, and, with `resend`,
    again and again with backoff until the deadline (a replica restarting, or none up yet). A reply
    that misses the deadline ends the stream, which would otherwise hand that late reply to the next
    request.

    A stream is traced as one call, in the trace context current where it opens: open() it where
    the session starts. Closing a session's stream is what frees its cache on the replica.
    """

    def __init__(
        self, method: grpc.aio.StreamStreamMultiCallable, service: str, also_resend: frozenset = frozenset()
    ) -> None:
        """also_resend: more status codes that another replica may not answer with."""
        self._method = method
        self._service = service
        self._resendable = _RESENDABLE | also_resend
        self._calls: dict[str, grpc.aio.StreamStreamCall] = {}
        self._deadlines: dict[str, float] = {}  # of the sessions whose request has one

    def open(self, session_id: str, deadline: float | None = None) -> None:
        """Opens the session's stream unless it is open. `deadline` (time.monotonic()): the request's,
        which every stream opened for the session carries, so the replica stops at it too."""
        if deadline is not None:
            self._deadlines[session_id] = deadline
        if session_id not in self._calls:
            deadline = self._deadlines.get(session_id)
            timeout_s = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            self._calls[session_id] = self._method(timeout=timeout_s)
            metrics.UPSTREAM_STREAMS.labels(service=self._service).inc()

    async def call(self, session_id: str, request: Request, deadline: float, resend: bool = False) -> Reply:
        """The reply to `request`, by `deadline` (time.monotonic())."""
        backoff_s = _FIRST_BACKOFF_S
        while True:
            reused = session_id in self._calls
            self.open(session_id)
            timeout_s = deadline - time.monotonic()
            try:
                async with asyncio.timeout(timeout_s):  # unlike wait_for, no task: no extra loop turns
                    return await _exchange(self._calls[session_id], request)
            except TimeoutError:
                self._drop(session_id)
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.DEADLINE_EXCEEDED, None, None,
                    details=f"no reply from the {self._service} service within {max(timeout_s, 0):.3g} s",
                ) from None
            except grpc.aio.AioRpcError as error:
                self._drop(session_id)
                # A stream opened earlier may just have broken (writing to it can fail as INTERNAL):
                # a fresh one, at once. A fresh stream's failure is the answer, unless resending helps.
                if not reused:
                    if error.code() not in self._resendable or not resend or time.monotonic() + backoff_s >= deadline:
                        raise
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(2 * backoff_s, _MAX_BACKOFF_S)
                metrics.UPSTREAM_RESENDS.labels(service=self._service).inc()
            except asyncio.CancelledError:  # the reply, if it comes, must not answer the next request
                self._drop(session_id)
                raise

    async def close(self, session_id: str) -> None:
        """Ends the session's stream, if it has one, as a finished call (not a cancelled one)."""
        self._deadlines.pop(session_id, None)
        call = self._calls.pop(session_id, None)
        if call is not None:
            metrics.UPSTREAM_STREAMS.labels(service=self._service).dec()
            await call.done_writing()

    def _drop(self, session_id: str) -> None:
        self._calls.pop(session_id).cancel()
        metrics.UPSTREAM_STREAMS.labels(service=self._service).dec()


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
    """What both clients share; each subclass provides `_streams`, the session streams of its method."""

    channel: grpc.aio.Channel
    timeout_s: float  # the most one step may take
    info: common_pb2.ModelInfo = field(default_factory=common_pb2.ModelInfo)
    # The tokenizer every step says it expects, so no replica with another answers it (set by connect).
    fingerprint: str = ""

    def start_session(self, session_id: str, deadline: float | None) -> None:
        """Opens the stream the session's calls go on (also opened on the first call if not), with
        the request's deadline (time.monotonic(); None: none)."""
        self._streams.open(session_id, deadline)

    async def end_session(self, session_id: str) -> None:
        """Closes the session's stream: the replica that holds its cache frees it."""
        await self._streams.close(session_id)


class DraftClient(_Upstream):
    @cached_property
    def _stub(self) -> draft_pb2_grpc.DraftStub:
        return draft_pb2_grpc.DraftStub(self.channel)

    @cached_property
    def _streams(self) -> SessionStreams[draft_pb2.ProposeStreamRequest, draft_pb2.ProposeStreamResponse]:
        return SessionStreams(self._stub.ProposeStream, "draft")

    async def fetch_info(self) -> common_pb2.ModelInfo:
        # No deadline: wait for the service to come up (health says NOT_SERVING meanwhile).
        reply = await self._stub.GetModelInfo(draft_pb2.DraftGetModelInfoRequest(), wait_for_ready=True)
        self.info = reply.info
        return self.info

    async def propose(
        self, session_id: str, token_ids: list[int], k: int, method: str, params: SamplingParams, seed: int,
        meter: CallMeter, timeout_s: float, features: common_pb2.Features | None = None,
    ) -> Drafted:
        """Greedy proposals come without rows: q is one-hot at each x_i and nothing reads it. Not
        resent beyond one fresh stream: a draft that cannot answer in time is skipped, not waited for.
        `features`: the target's rows a feature drafter has not been sent yet."""
        message = draft_pb2.ProposeStreamRequest(request=draft_pb2.ProposeRequest(
            session_id=session_id, token_ids=token_ids, num_tokens=k, sampling=sampling_to_proto(params),
            seed=seed, method=DRAFT_METHODS[method], tokenizer_fingerprint=self.fingerprint, features=features,
        ))
        started = time.perf_counter()
        reply_message = await self._streams.call(session_id, message, time.monotonic() + min(timeout_s, self.timeout_s))
        meter.draft_seconds += time.perf_counter() - started
        reply = reply_message.response
        meter.draft_compute_seconds += reply.compute_seconds
        meter.wire_bytes += message.ByteSize() + reply_message.ByteSize()
        if reply.HasField("features_from"):
            return Drafted(Drafts([], None), reply.features_from)
        if len(reply.token_ids) > k or not params.greedy and not self._rows_fit(reply.probs, len(reply.token_ids)):
            # A draft's bug costs this iteration its drafts, never the request (the target would refuse the rows).
            log.warning("draft replica sent %d tokens with malformed q rows for k = %d: drafting nothing this time",
                        len(reply.token_ids), k)
            return Drafted(Drafts([], None), None)
        return Drafted(Drafts(list(reply.token_ids), None if params.greedy else reply.probs), None)

    def _rows_fit(self, rows: common_pb2.ProbRows, num_tokens: int) -> bool:
        """Whether a sampled reply's q rows are well-formed, one per token, within the vocabulary."""
        try:
            check_rows(rows, self.info.vocab_size or None)
        except ValueError:
            return False
        return rows.num_rows == num_tokens


class TargetClient(_Upstream):
    @cached_property
    def _stub(self) -> target_pb2_grpc.TargetStub:
        return target_pb2_grpc.TargetStub(self.channel)

    @cached_property
    def _streams(self) -> SessionStreams[target_pb2.ScoreStreamRequest, target_pb2.ScoreStreamResponse]:
        # A replica with another model (mid-rollout) refuses the step: another may take it.
        return SessionStreams(self._stub.ScoreStream, "target", also_resend=frozenset({grpc.StatusCode.FAILED_PRECONDITION}))

    async def fetch_info(self) -> common_pb2.ModelInfo:
        # No deadline: wait for the service to come up (health says NOT_SERVING meanwhile).
        reply = await self._stub.GetModelInfo(target_pb2.TargetGetModelInfoRequest(), wait_for_ready=True)
        self.info = reply.info
        return self.info

    async def score(
        self,
        session_id: str,
        token_ids: list[int],
        drafts: Drafts,
        uniforms: Uniforms,
        params: SamplingParams,
        meter: CallMeter,
        deadline: float | None,
        features_from: int | None = None,
    ) -> Scored:
        """The verdict on the block, which the target reaches with `uniforms`, with the features of positions
        features_from..L-1+n if asked for.

        Resent to any replica until the step's time is up: the call timeout, or the request's
        `deadline` (time.monotonic()) if that comes first."""
        message = target_pb2.ScoreStreamRequest(request=target_pb2.ScoreRequest(
            session_id=session_id, token_ids=token_ids, draft_token_ids=drafts.token_ids,
            sampling=sampling_to_proto(params), draft_probs=drafts.q, uniforms=uniforms.accept.tolist(),
            correction_uniform=uniforms.correct, tokenizer_fingerprint=self.fingerprint, features_from=features_from,
        ))
        started = time.perf_counter()
        step_deadline = time.monotonic() + self.timeout_s
        reply_message = await self._streams.call(
            session_id, message, step_deadline if deadline is None else min(step_deadline, deadline), resend=True
        )
        meter.target_seconds += time.perf_counter() - started
        reply = reply_message.response
        meter.target_compute_seconds += reply.compute_seconds
        meter.wire_bytes += message.ByteSize() + reply_message.ByteSize()  # features included
        if not reply.HasField("next_token"):  # a replica older than the field: its 0 is no token
            raise ValueError("the target's Score reply has no next_token: is a target replica out of date?")
        return Scored(reply.num_accepted, reply.next_token, reply.features if reply.HasField("features") else None)


def open_channel(address: str, tls: TlsFiles | None = None) -> grpc.aio.Channel:
    """A channel to an upstream; with `tls`, mutual TLS (our certificate shown, theirs checked)."""
    return aio_channel(address, tls, options=CHANNEL_OPTIONS, interceptors=telemetry.client_interceptors())

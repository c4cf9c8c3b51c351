"""Typed clients for the draft and target services, counting time and bytes on the wire."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property

import grpc
import torch

from specdec import telemetry
from specdec.sampling import SamplingParams
from specdec.serving import CHANNEL_OPTIONS
from specdec.speculative import Proposal
from specdec.v1 import common_pb2, draft_pb2, draft_pb2_grpc, target_pb2, target_pb2_grpc
from specdec.validation import sampling_to_proto
from specdec.wire import decode_rows

DRAFT_METHODS = {"model": draft_pb2.DRAFT_METHOD_MODEL, "ngram": draft_pb2.DRAFT_METHOD_NGRAM}


@dataclass
class CallMeter:
    """What a request's draft and target calls cost."""

    draft_seconds: float = 0.0  # as the orchestrator waits for them
    target_seconds: float = 0.0
    draft_compute_seconds: float = 0.0  # as the services report computing
    target_compute_seconds: float = 0.0
    wire_bytes: int = 0


@dataclass
class _Upstream:
    channel: grpc.aio.Channel
    timeout_s: float
    info: common_pb2.ModelInfo = field(default_factory=common_pb2.ModelInfo)


class DraftClient(_Upstream):
    @cached_property
    def _stub(self) -> draft_pb2_grpc.DraftStub:
        return draft_pb2_grpc.DraftStub(self.channel)

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
        request = draft_pb2.ProposeRequest(
            session_id=session_id, token_ids=token_ids, num_tokens=k, sampling=sampling_to_proto(params),
            seed=seed, method=DRAFT_METHODS[method],
        )
        started = time.perf_counter()
        reply = await self._stub.Propose(request, timeout=self.timeout_s)
        meter.draft_seconds += time.perf_counter() - started
        meter.draft_compute_seconds += reply.compute_seconds
        meter.wire_bytes += request.ByteSize() + reply.ByteSize()
        return Proposal(list(reply.token_ids), None if params.greedy else decode_rows(reply.probs, vocab_size))

    async def end_session(self, session_id: str) -> None:
        await self._stub.EndSession(draft_pb2.DraftEndSessionRequest(session_id=session_id), timeout=self.timeout_s)


class TargetClient(_Upstream):
    @cached_property
    def _stub(self) -> target_pb2_grpc.TargetStub:
        return target_pb2_grpc.TargetStub(self.channel)

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
        request = target_pb2.ScoreRequest(
            session_id=session_id, token_ids=token_ids, draft_token_ids=draft_token_ids,
            sampling=sampling_to_proto(params), draft_token_probs=q_x.tolist(), uniforms=u.tolist(),
        )
        started = time.perf_counter()
        reply = await self._stub.Score(request, timeout=self.timeout_s)
        meter.target_seconds += time.perf_counter() - started
        meter.target_compute_seconds += reply.compute_seconds
        meter.wire_bytes += request.ByteSize() + reply.ByteSize()
        return reply.num_accepted, reply.probs

    async def end_session(self, session_id: str) -> None:
        await self._stub.EndSession(target_pb2.TargetEndSessionRequest(session_id=session_id), timeout=self.timeout_s)


def open_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS, interceptors=telemetry.client_interceptors())

"""specdec.v1.Target over gRPC: one forward pass over the uncached suffix plus the block, then the
accept test, so one row of p travels back instead of k+1 (and, for a feature drafter, the features of
the positions the reply commits)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import torch

from specdec.runtime import service_metrics
from specdec.runtime.batching import Job
from specdec.runtime.cached_lm import Step
from specdec.runtime.errors import InvalidArgument
from specdec.runtime.features import FeatureRows, encode_features
from specdec.runtime.hosted_model import HostedModel
from specdec.runtime.sampling import SamplingParams, target_distribution
from specdec.runtime.serving import Draining, serve_session_stream
from specdec.runtime.speculative import count_accepted
from specdec.runtime.validation import check_features_from, check_fingerprint, check_tokens, sampling_from_proto
from specdec.runtime.wire import encode_rows
from specdec.v1 import target_pb2, target_pb2_grpc


@dataclass(frozen=True)
class BlockVerdict:
    num_accepted: int  # n
    p_next: torch.Tensor  # [V] float32: p_{n+1}, the row the correction samples from
    features: FeatureRows | None  # of positions features_from .. L-1+n; None unless asked for


def verify_block(
    session_id: str,
    token_ids: list[int],
    draft_token_ids: list[int],
    q_x: torch.Tensor,  # [k]
    u: torch.Tensor,  # [k]
    params: SamplingParams,
    features_from: int | None = None,
) -> Job[BlockVerdict]:
    """A scheduler job: one step scoring the block, then the accept test. With `features_from`, the
    features of positions features_from .. L-1+n (L = len(token_ids)): the rejected drafts' are dropped."""
    length, k = len(token_ids), len(draft_token_ids)
    num_features = 0 if features_from is None else length + k - features_from
    output = yield Step(session_id, token_ids + draft_token_ids, k + 1, num_features)
    p = target_distribution(output.logits.cpu(), params)  # [k+1, V]
    drafts = torch.tensor(draft_token_ids, dtype=torch.long)
    n = count_accepted(drafts, p, q_x, u, greedy=params.greedy, lenience=params.lenience)
    features = None
    if features_from is not None:  # rows [features_from, L+k) computed; [features_from, L+n) committed
        features = FeatureRows(features_from, output.features[: length + n - features_from].cpu())
    return BlockVerdict(n, p[n], features)


class TargetServicer(target_pb2_grpc.TargetServicer):
    def __init__(self, model: HostedModel, draining: Draining) -> None:
        self._model = model
        self._draining = draining

    async def Score(self, request: target_pb2.ScoreRequest, context: grpc.aio.ServicerContext):
        return await self._score(request)

    async def ScoreStream(
        self, requests: AsyncIterator[target_pb2.ScoreStreamRequest], context: grpc.aio.ServicerContext
    ):
        replies = serve_session_stream(
            requests, self._score, self._end_session, span_name="specdec.score", draining=self._draining
        )
        async for reply in replies:
            yield target_pb2.ScoreStreamResponse(response=reply)

    async def _score(self, request: target_pb2.ScoreRequest) -> target_pb2.ScoreResponse:
        params = sampling_from_proto(request.sampling)
        info = self._model.info
        check_fingerprint(request.tokenizer_fingerprint, info)
        drafts = list(request.draft_token_ids)
        tokens = check_tokens(
            request.token_ids,
            num_new=len(drafts),
            max_new=info.max_speculative_tokens,
            vocab_size=info.vocab_size,
            max_context=info.max_context,
            draft_ids=drafts,
        )
        q_x, u = _accept_test_inputs(request, len(drafts), params.greedy)
        features_from = check_features_from(
            request.features_from if request.HasField("features_from") else None, len(tokens)
        )
        verdict, seconds = await self._model.scheduler.run(
            verify_block(request.session_id, tokens, drafts, q_x, u, params, features_from)
        )
        reply = target_pb2.ScoreResponse(
            num_accepted=verdict.num_accepted, probs=encode_rows(verdict.p_next[None]), compute_seconds=seconds,
            features=None if verdict.features is None else encode_features(verdict.features),
        )
        service_metrics.record_model_call_soon("Score", seconds, self._model.lm)
        return reply

    async def EndSession(self, request: target_pb2.TargetEndSessionRequest, context: grpc.aio.ServicerContext):
        await self._end_session(request.session_id)
        return target_pb2.TargetEndSessionResponse()

    async def _end_session(self, session_id: str) -> None:
        await self._model.end_session(session_id)
        service_metrics.observe_cache(self._model.lm)

    async def GetModelInfo(self, request: target_pb2.TargetGetModelInfoRequest, context: grpc.aio.ServicerContext):
        return target_pb2.TargetGetModelInfoResponse(info=self._model.info)


def _accept_test_inputs(request: target_pb2.ScoreRequest, k: int, greedy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """[k] q_i(x_i) and [k] u_i; greedy verification needs neither."""
    q_x = torch.tensor(list(request.draft_token_probs), dtype=torch.float32)
    u = torch.tensor(list(request.uniforms), dtype=torch.float32)
    if greedy:
        return q_x, u
    if q_x.numel() != k or u.numel() != k:
        raise InvalidArgument(
            f"sampling needs draft_token_probs and uniforms for each of the {k} draft tokens; "
            f"got {q_x.numel()} and {u.numel()}"
        )
    if k and not (bool(((q_x > 0) & (q_x <= 1)).all()) and bool(((u >= 0) & (u < 1)).all())):
        raise InvalidArgument("draft_token_probs must be in (0, 1] and uniforms in [0, 1)")
    return q_x, u

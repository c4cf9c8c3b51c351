"""specdec.v1.Target over gRPC: one forward pass over the uncached suffix plus the block, then the whole
accept/correct step with the orchestrator's uniforms, so only tokens travel back, no row of p (and, for a
feature drafter, the features of the positions the reply commits)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import torch

from specdec.runtime import service_metrics
from specdec.runtime.batching import Job
from specdec.runtime.cached_lm import Step
from specdec.runtime.features import FeatureRows, encode_features
from specdec.runtime.hosted_model import HostedModel
from specdec.runtime.sampling import SamplingParams, target_distribution
from specdec.runtime.serving import Draining, serve_session_stream
from specdec.runtime.speculative import Uniforms, Verdict, accept_correct
from specdec.runtime.validation import (
    check_features_from, check_fingerprint, check_sampled_step, check_tokens, sampling_from_proto,
)
from specdec.v1 import target_pb2, target_pb2_grpc


@dataclass(frozen=True)
class BlockVerdict:
    verdict: Verdict  # the accepted drafts, then the recovered or bonus token
    features: FeatureRows | None  # of positions features_from .. L-1+n; None unless asked for


def verify_block(
    session_id: str,
    token_ids: list[int],
    draft_token_ids: list[int],
    q: torch.Tensor | None,  # [k, V]: the rows the drafts were sampled from; None when greedy
    uniforms: Uniforms,
    params: SamplingParams,
    features_from: int | None = None,
) -> Job[BlockVerdict]:
    """A scheduler job: one step scoring the block, then the accept/correct step. With `features_from`, the
    features of positions features_from .. L-1+n (L = len(token_ids)): the rejected drafts' are dropped."""
    length, k = len(token_ids), len(draft_token_ids)
    num_features = 0 if features_from is None else length + k - features_from
    output = yield Step(session_id, token_ids + draft_token_ids, k + 1, num_features)
    p = target_distribution(output.logits.cpu(), params)  # [k+1, V]
    drafts = torch.tensor(draft_token_ids, dtype=torch.long)
    verdict = accept_correct(drafts, q, p, uniforms, greedy=params.greedy, lenience=params.lenience)
    features = None
    if features_from is not None:  # rows [features_from, L+k) computed; [features_from, L+n) committed
        features = FeatureRows(features_from, output.features[: length + verdict.num_accepted - features_from].cpu())
    return BlockVerdict(verdict, features)


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
        # Greedy needs no randomness, and q is one-hot at each draft: nothing to read.
        q, uniforms = (None, Uniforms.none()) if params.greedy else check_sampled_step(
            request.draft_probs, request.uniforms, request.correction_uniform, draft_ids=drafts,
            vocab_size=info.vocab_size,
        )
        features_from = check_features_from(
            request.features_from if request.HasField("features_from") else None, len(tokens)
        )
        block, seconds = await self._model.scheduler.run(
            verify_block(request.session_id, tokens, drafts, q, uniforms, params, features_from)
        )
        reply = target_pb2.ScoreResponse(
            num_accepted=block.verdict.num_accepted, next_token=block.verdict.tokens[-1], compute_seconds=seconds,
            features=None if block.features is None else encode_features(block.features),
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


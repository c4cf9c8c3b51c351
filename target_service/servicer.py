"""specdec.v1.Target over gRPC: one forward pass over the uncached suffix plus the block."""

from __future__ import annotations

import grpc
import torch

from specdec import metrics
from specdec.cached_lm import CachedLM
from specdec.hosted_model import HostedModel
from specdec.sampling import SamplingParams, target_distribution
from specdec.serving import ModelWorker, map_errors
from specdec.v1 import target_pb2, target_pb2_grpc
from specdec.validation import check_tokens, sampling_from_proto
from specdec.wire import encode_rows


def score_block(
    lm: CachedLM, session_id: str, token_ids: list[int], draft_token_ids: list[int], params: SamplingParams
) -> torch.Tensor:
    """[k+1, V] p rows for the positions after token_ids + draft_token_ids[:i], i = 0..k."""
    logits = lm.logits(session_id, token_ids + draft_token_ids, len(draft_token_ids) + 1)
    return target_distribution(logits.cpu(), params)


class TargetServicer(target_pb2_grpc.TargetServicer):
    def __init__(self, model: HostedModel) -> None:
        self._model = model
        self._worker = ModelWorker()

    @map_errors
    async def Score(self, request: target_pb2.ScoreRequest, context: grpc.aio.ServicerContext):
        params = sampling_from_proto(request.sampling)
        info = self._model.info
        drafts = list(request.draft_token_ids)
        tokens = check_tokens(
            request.token_ids,
            num_new=len(drafts),
            max_new=info.max_speculative_tokens,
            vocab_size=info.vocab_size,
            max_context=info.max_context,
            draft_ids=drafts,
        )
        with metrics.MODEL_CALL_SECONDS.labels(method="Score").time():
            p = await self._worker.run(score_block, self._model.lm, request.session_id, tokens, drafts, params)
        metrics.observe_cache(self._model.lm)
        return target_pb2.ScoreResponse(probs=encode_rows(p))

    async def EndSession(self, request: target_pb2.TargetEndSessionRequest, context: grpc.aio.ServicerContext):
        await self._worker.run(self._model.lm.end_session, request.session_id)
        metrics.observe_cache(self._model.lm)
        return target_pb2.TargetEndSessionResponse()

    async def GetModelInfo(self, request: target_pb2.TargetGetModelInfoRequest, context: grpc.aio.ServicerContext):
        return target_pb2.TargetGetModelInfoResponse(info=self._model.info)

"""specdec.v1.Draft over gRPC: a thin adapter on draft_service.drafter."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from draft_service.drafter import propose_with_model, propose_with_ngram
from draft_service.eagle_drafter import propose_with_eagle
from specdec.runtime import service_metrics
from specdec.runtime.batching import Job
from specdec.runtime.errors import FailedPrecondition
from specdec.runtime.features import MissingFeatures
from specdec.runtime.hosted_model import HostedModel
from specdec.runtime.sampling import SamplingParams
from specdec.runtime.serving import Draining, serve_session_stream, timed
from specdec.runtime.speculative import Proposal
from specdec.runtime.validation import check_features, check_fingerprint, check_tokens, sampling_from_proto
from specdec.runtime.wire import encode_rows
from specdec.v1 import common_pb2, draft_pb2, draft_pb2_grpc

NGRAM_MAX_K = 64  # the n-gram drafter costs nothing per token; only the target bounds its k
# Without a model, what an n-gram request may hold: ids up to the largest vocabularies in use (the
# rows are this wide) and sequences up to a long context (the lookup scans them on the event loop).
NGRAM_MAX_VOCAB, NGRAM_MAX_CONTEXT = 1 << 18, 1 << 20


class DraftServicer(draft_pb2_grpc.DraftServicer):
    def __init__(self, model: HostedModel | None, draining: Draining) -> None:
        self._model = model
        self._draining = draining

    async def Propose(self, request: draft_pb2.ProposeRequest, context: grpc.aio.ServicerContext):
        return await self._propose(request)

    async def ProposeStream(
        self, requests: AsyncIterator[draft_pb2.ProposeStreamRequest], context: grpc.aio.ServicerContext
    ):
        replies = serve_session_stream(
            requests, self._propose, self._end_session, span_name="specdec.propose", draining=self._draining
        )
        async for reply in replies:
            yield draft_pb2.ProposeStreamResponse(response=reply)

    async def _propose(self, request: draft_pb2.ProposeRequest) -> draft_pb2.ProposeResponse:
        params = sampling_from_proto(request.sampling)
        k = request.num_tokens
        if request.method == draft_pb2.DRAFT_METHOD_MODEL:
            if self._model is None:
                raise FailedPrecondition("this draft service has no model loaded (start it with --model); use draft=ngram")
            info = self._model.info
            check_fingerprint(request.tokenizer_fingerprint, info)
            tokens = check_tokens(
                request.token_ids, num_new=k, max_new=info.max_speculative_tokens, vocab_size=info.vocab_size,
                max_context=info.max_context,
            )
            try:
                proposal, seconds = await self._model.scheduler.run(self._model_job(request, tokens, params))
            except MissingFeatures as missing:  # the caller resends with the rows from there
                return draft_pb2.ProposeResponse(features_from=missing.from_position)
        else:  # DRAFT_METHOD_NGRAM, and the default
            # The model's vocabulary and context when there is one: any other id means other text to it.
            info = self._model.info if self._model is not None else None
            tokens = check_tokens(
                request.token_ids, num_new=k, max_new=NGRAM_MAX_K,
                vocab_size=info.vocab_size if info else NGRAM_MAX_VOCAB,
                max_context=info.max_context if info else NGRAM_MAX_CONTEXT,
            )
            proposal, seconds = timed(propose_with_ngram, tokens, k)
        # Greedy q is one-hot at each proposed token: the tokens say it all.
        rows = None if params.greedy else encode_rows(proposal.q)
        reply = draft_pb2.ProposeResponse(token_ids=proposal.token_ids, probs=rows, compute_seconds=seconds)
        service_metrics.record_model_call_soon("Propose", seconds, self._model.lm if self._model else None)
        return reply

    def _model_job(self, request: draft_pb2.ProposeRequest, tokens: list[int], params: SamplingParams) -> Job[Proposal]:
        """The drafting job of the hosted model: a feature drafter's (ModelInfo.feature_size > 0) drafts from
        the target's features, an LM's from the tokens alone."""
        info, vocab_size = self._model.info, self._model.lm.vocab_size
        if not info.feature_size:
            return propose_with_model(request.session_id, tokens, request.num_tokens, params, request.seed, vocab_size)
        features = check_features(
            request.features if request.HasField("features") else None,
            width=info.feature_size, num_tokens=len(tokens), max_context=info.max_context,
        )
        return propose_with_eagle(self._model.lm, request.session_id, tokens, request.num_tokens, params, request.seed,
                                  features)

    async def EndSession(self, request: draft_pb2.DraftEndSessionRequest, context: grpc.aio.ServicerContext):
        await self._end_session(request.session_id)
        return draft_pb2.DraftEndSessionResponse()

    async def _end_session(self, session_id: str) -> None:
        if self._model is not None:
            await self._model.end_session(session_id)
            service_metrics.observe_cache(self._model.lm)

    async def GetModelInfo(self, request: draft_pb2.DraftGetModelInfoRequest, context: grpc.aio.ServicerContext):
        info = self._model.info if self._model is not None else common_pb2.ModelInfo(max_speculative_tokens=NGRAM_MAX_K)
        return draft_pb2.DraftGetModelInfoResponse(info=info)

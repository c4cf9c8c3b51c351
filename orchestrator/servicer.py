"""specdec.v1.Generation: request in, token and text chunks out, statistics on the last chunk."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator

import grpc
from opentelemetry import trace
from transformers import PreTrainedTokenizerBase

from orchestrator import metrics
from orchestrator.adaptive_k import CostModel
from orchestrator.admission import Admission
from orchestrator.auth import ApiTokens
from orchestrator.clients import DraftClient, TargetClient
from orchestrator.draft_guard import DraftGuard
from orchestrator.loop import LoopStats, SpeculativeLoop
from orchestrator.read_ahead import read_ahead
from orchestrator.request import GenerationConfig, ServerDefaults, parse_request
from orchestrator.text_stream import TextStream
from specdec.runtime.errors import Unavailable
from specdec.runtime.models import tokenizer_fingerprint
from specdec.v1 import generation_pb2, generation_pb2_grpc

log = logging.getLogger("specdec")
tracer = trace.get_tracer("specdec.orchestrator")


class GenerationServicer(generation_pb2_grpc.GenerationServicer):
    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        draft: DraftClient,
        target: TargetClient,
        default_draft: str,
        default_k: int,
        max_adaptive_k: int,
        default_max_new_tokens: int,
        admission: Admission,
        tokens: ApiTokens | None = None,
    ) -> None:
        self._tokenizer = tokenizer
        self._admission = admission
        self._tokens = tokens  # None: the API is open
        self._draft = draft
        self._target = target
        self._default_draft = default_draft
        self._default_k = default_k
        self._max_adaptive_k = max_adaptive_k
        self._default_max_new_tokens = default_max_new_tokens
        self._defaults: ServerDefaults | None = None
        # Draft/target call costs (at each load) and acceptance, learnt across requests for adaptive
        # k (which never drafts more than max_adaptive_k, so no position past it is tracked).
        self._costs = CostModel(max_k=max_adaptive_k, load=lambda: admission.running)
        self._draft_guard = DraftGuard(ceiling_s=draft.timeout_s)
        self._closing: set[asyncio.Task] = set()  # sessions whose upstream streams are being closed

    async def connect(self) -> None:
        """Waits for both upstreams and checks they and our tokenizer agree on token ids."""
        target_info, draft_info = await asyncio.gather(self._target.fetch_info(), self._draft.fetch_info())
        ours = tokenizer_fingerprint(self._tokenizer)
        self._target.fingerprint = self._draft.fingerprint = ours
        if target_info.tokenizer_fingerprint != ours:
            raise RuntimeError(
                f"the target model {target_info.model!r} uses a different tokenizer vocabulary than the "
                "orchestrator's --tokenizer; point --tokenizer at the target model"
            )
        if draft_info.model and (
            draft_info.tokenizer_fingerprint != ours or draft_info.vocab_size != target_info.vocab_size
        ):
            raise RuntimeError(
                f"the draft model {draft_info.model!r} and the target model {target_info.model!r} do not share a "
                "tokenizer vocabulary, so draft token ids would mean other text to the target; pick a draft "
                "trained with the target's tokenizer, or serve the draft without --model (n-gram drafting)"
            )
        if draft_info.feature_size and draft_info.feature_size != target_info.feature_size:
            returned = f"{target_info.feature_size}-wide ones" if target_info.feature_size else "none"
            raise RuntimeError(
                f"the draft model {draft_info.model!r} drafts from {draft_info.feature_size}-wide features, but the "
                f"target model {target_info.model!r} returns {returned}; pick a "
                "draft head trained on this target's features, or serve the draft without --model (n-gram drafting)"
            )
        default_draft = self._default_draft or ("model" if draft_info.model else "ngram")
        if default_draft == "model" and not draft_info.model:
            raise RuntimeError("--default-draft model, but the draft service has no model loaded")
        max_k = min(target_info.max_speculative_tokens, draft_info.max_speculative_tokens)
        self._defaults = ServerDefaults(
            draft=default_draft,
            k=self._default_k,
            max_k=max_k,
            adaptive_max_k=min(max_k, self._max_adaptive_k),
            max_new_tokens=self._default_max_new_tokens,
            draft_has_model=bool(draft_info.model),
        )
        log.info("target %s, draft %s (default %s, k=%s)", target_info.model, draft_info.model or "n-gram only",
                 default_draft, self._default_k or "adaptive")

    @property
    def ready(self) -> bool:
        """Both upstreams answered and agree with our tokenizer."""
        return self._defaults is not None

    @property
    def model(self) -> str:
        """The target model's name, as its service reports it."""
        return self._target.info.model

    def check_token(self, authorization: str | None) -> None:
        """Unauthenticated unless the API is open or `authorization` carries a valid token."""
        if self._tokens is not None:
            self._tokens.check(authorization)

    async def Generate(self, request: generation_pb2.GenerateRequest, context: grpc.aio.ServicerContext):
        self.check_token(dict(context.invocation_metadata() or ()).get("authorization"))
        async with contextlib.aclosing(self.generate(request, _deadline(context))) as chunks:
            async for chunk in chunks:
                yield chunk

    async def generate(
        self, request: generation_pb2.GenerateRequest, deadline: float | None
    ) -> AsyncIterator[generation_pb2.GenerateResponse]:
        """The one request path behind both front doors (gRPC, and the OpenAI-compatible HTTP API):
        chunks of text and tokens, the last with the finish reason and statistics. `deadline`:
        the client's, as a time.monotonic() instant (None: none)."""
        if self._defaults is None:
            raise Unavailable("the orchestrator is still connecting to the draft and target services; retry shortly")
        info = self._target.info
        config = parse_request(request, self._tokenizer, self._defaults, info.vocab_size, info.max_context)
        session_id = uuid.uuid4().hex
        # GenAI semantic conventions (gen_ai.*), so trace viewers show it as an LLM call.
        attributes = {
            "gen_ai.operation.name": "text_completion",
            "gen_ai.provider.name": "specdec",
            "gen_ai.request.model": info.model,
            "gen_ai.request.max_tokens": config.max_new_tokens,
            "gen_ai.request.temperature": config.params.temperature,
            "gen_ai.request.top_p": config.params.top_p,
            "gen_ai.request.top_k": config.params.top_k,
            "gen_ai.request.seed": config.seed,
            "gen_ai.usage.input_tokens": len(config.prompt_ids),
            "specdec.draft": config.draft,
            "specdec.k": config.k,
            "specdec.session_id": session_id,
        }
        with metrics.ACTIVE_REQUESTS.track_inprogress():
            async with self._admission.place():
                try:
                    with tracer.start_as_current_span(f"text_completion {info.model}", attributes=attributes):
                        # Closed here, not whenever it is garbage-collected: its producer must have stopped
                        # before the session's streams close, or its next call reopens one, for good.
                        async with contextlib.aclosing(read_ahead(self._stream(config, session_id, deadline))) as chunks:
                            async for chunk in chunks:
                                yield chunk
                finally:
                    # Closing the session's upstream streams frees its caches on the replicas that hold
                    # them (had the streams broken, the caches are bounded and evict on their own).
                    closing = asyncio.ensure_future(self._end_session(session_id))
                    self._closing.add(closing)  # the loop holds tasks weakly: this keeps it until it is done
                    closing.add_done_callback(self._closing.discard)

    async def _stream(self, config: GenerationConfig, session_id: str, deadline: float | None):
        started = time.perf_counter()
        first_token_at = 0.0
        stats = LoopStats()
        text = TextStream(self._tokenizer, config.prompt_ids, config.stop)
        eos_id = self._tokenizer.eos_token_id
        generated = 0
        finish_reason = ""
        # Opened here, the upstream streams are traced as children of the request's span.
        self._target.start_session(session_id, deadline)
        if config.draft != "none":
            self._draft.start_session(session_id, deadline)
        iterations = SpeculativeLoop(
            config, session_id, self._draft, self._target, stats, self._costs, self._draft_guard, deadline
        ).tokens()
        async with contextlib.aclosing(iterations):
            async for tokens in iterations:
                first_token_at = first_token_at or time.perf_counter()
                chunk = generation_pb2.GenerateResponse()
                for token in tokens:
                    chunk.token_ids.append(token)
                    generated += 1
                    if token == eos_id and not config.ignore_eos:
                        finish_reason = "eos"
                        break
                    chunk.text += text.push(token)
                    if text.stopped:
                        finish_reason = "stop"
                        break
                if finish_reason or generated >= config.max_new_tokens:
                    break  # this chunk is the last one: it carries the finish reason and stats
                yield chunk
        finish_reason = finish_reason or "length"
        if finish_reason != "stop":
            chunk.text += text.flush()
        elapsed = time.perf_counter() - started
        first_token_s = (first_token_at - started) if first_token_at else elapsed
        metrics.record_request(config.draft, finish_reason, len(config.prompt_ids), generated, elapsed, first_token_s)
        trace.get_current_span().set_attributes({
            "gen_ai.usage.output_tokens": generated,
            "gen_ai.response.finish_reasons": [finish_reason],
            "specdec.drafted_tokens": stats.drafted_tokens,
            "specdec.accepted_tokens": stats.accepted_tokens,
            "specdec.target_calls": stats.target_calls,
        })
        chunk.finish_reason = finish_reason
        draft_model = self._draft.info.model if config.draft == "model" else ""
        chunk.stats.CopyFrom(_stats_message(config, stats, draft_model, generated, elapsed, first_token_s))
        yield chunk

    async def _end_session(self, session_id: str) -> None:
        results = await asyncio.gather(
            self._target.end_session(session_id), self._draft.end_session(session_id), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Exception):
                log.debug("closing a session stream failed: %s", result)


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The client's deadline as a time.monotonic() instant; None when it set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _stats_message(
    config: GenerationConfig, stats: LoopStats, draft_model: str, generated: int, elapsed: float, first_token_s: float
) -> generation_pb2.GenerationStats:
    meter = stats.meter
    return generation_pb2.GenerationStats(
        prompt_tokens=len(config.prompt_ids),
        generated_tokens=generated,
        drafted_tokens=stats.drafted_tokens,
        accepted_tokens=stats.accepted_tokens,
        target_calls=stats.target_calls,
        acceptance_rate=stats.accepted_tokens / stats.drafted_tokens if stats.drafted_tokens else 0.0,
        mean_accepted_tokens=generated / stats.target_calls if stats.target_calls else 0.0,
        accepted_per_position=stats.accepted_per_position,
        drafted_per_position=stats.drafted_per_position,
        draft=config.draft,
        draft_model=draft_model,
        elapsed_seconds=elapsed,
        time_to_first_token_seconds=first_token_s,
        tokens_per_second=generated / elapsed if elapsed > 0 else 0.0,
        draft_seconds=meter.draft_seconds,
        target_seconds=meter.target_seconds,
        wire_bytes=meter.wire_bytes,
        draft_compute_seconds=meter.draft_compute_seconds,
        target_compute_seconds=meter.target_compute_seconds,
        lookup_drafted_tokens=stats.lookup_drafted_tokens,
        lookup_accepted_tokens=stats.lookup_accepted_tokens,
    )

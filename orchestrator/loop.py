"""The speculative loop: propose, score, accept/correct, commit, repeat.

The orchestrator alone owns a stream's committed tokens and its randomness; every draft and
target call carries the full sequence, so each call is idempotent and any replica can serve it. For a
feature drafter it also keeps the target's features of the committed positions (orchestrator.features).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import torch
from opentelemetry import trace

from orchestrator import metrics
from orchestrator.adaptive_k import AdaptiveK, CostModel, Plan
from orchestrator.clients import CallMeter, DraftClient, Drafted, Drafts, TargetClient
from orchestrator.draft_guard import REQUEST_ERRORS, DraftGuard
from orchestrator.features import FeatureLedger
from orchestrator.request import GenerationConfig
from specdec.runtime.ngram import find_ngram
from specdec.runtime.speculative import Proposal, draw_uniforms
from specdec.runtime.wire import encode_rows
from specdec.v1 import common_pb2

log = logging.getLogger("specdec")

_SEED_BOUND = 2**62
tracer = trace.get_tracer("specdec.orchestrator")


@dataclass
class LoopStats:
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    lookup_drafted_tokens: int = 0  # of those, from prompt lookup
    lookup_accepted_tokens: int = 0
    target_calls: int = 0
    accepted_per_position: list[int] = field(default_factory=list)
    drafted_per_position: list[int] = field(default_factory=list)
    meter: CallMeter = field(default_factory=CallMeter)

    def record(self, drafted: int, accepted: int, lookup: bool) -> None:
        self.target_calls += 1
        self.drafted_tokens += drafted
        self.accepted_tokens += accepted
        if lookup:
            self.lookup_drafted_tokens += drafted
            self.lookup_accepted_tokens += accepted
        for counts, upto in ((self.drafted_per_position, drafted), (self.accepted_per_position, accepted)):
            counts.extend([0] * (upto - len(counts)))
            for i in range(upto):
                counts[i] += 1


class SpeculativeLoop:
    """One request's loop. The caller stops early (EOS, stop strings) by closing `tokens()`.

    A draft that fails costs speed, never output: the iteration runs without drafts, and the guard
    keeps later ones from calling a draft that is down (see draft_guard). A target step is resent to
    any replica until `deadline` (time.monotonic(), the client's; None: the call timeout alone).
    """

    def __init__(
        self,
        config: GenerationConfig,
        session_id: str,
        draft: DraftClient,
        target: TargetClient,
        stats: LoopStats,
        costs: CostModel,
        guard: DraftGuard,
        deadline: float | None = None,
    ) -> None:
        self._config = config
        # Acceptance depends on the drafter and on how the target judges its drafts.
        # Lenience rounded, so clients sending many distinct values cannot grow that state without bound.
        judged = (config.params.greedy, round(config.params.lenience, 2))
        # An adaptive model-drafted stream also weighs prompt lookup over its own tokens: free where
        # text repeats.
        self._lookup = config.adaptive and config.draft == "model"
        self._adaptive_k = (
            AdaptiveK(costs, (config.draft, *judged), config.k, lookup=self._lookup, judged=judged)
            if config.adaptive else None
        )
        self._session_id = session_id
        self._draft = draft
        self._target = target
        self._stats = stats
        self._generator = torch.Generator().manual_seed(config.seed)  # all of the request's randomness
        self._guard = guard
        self._deadline = deadline
        self._can_draft = config.draft != "none"  # False once the draft said it cannot serve this request
        self._draft_seen = 0  # how much of the sequence the draft has been sent: the rest is its catch-up
        # A feature drafter drafts from the target's features: every Score asks for those it lacks.
        feature_size = draft.info.feature_size if config.draft == "model" else 0
        self._features = FeatureLedger(feature_size) if feature_size else None

    async def tokens(self) -> AsyncIterator[list[int]]:
        """Yields the tokens each iteration commits, until config.max_new_tokens are out."""
        committed = list(self._config.prompt_ids)
        budget = self._config.max_new_tokens
        generated = 0
        while generated < budget:
            # Never draft past the budget: an iteration commits up to k + 1 tokens.
            limit = budget - generated - 1
            match_n, continuation = find_ngram(committed, self._config.k) if self._lookup else (0, [])
            # While the draft is skipped, one iteration per backoff period is let through as its probe. A
            # feature drafter waits for the first Score's features (the prompt's): that iteration is plain.
            features_ready = self._features is None or self._features.ready(len(committed))
            drafter = self._can_draft and features_ready and self._guard.breaker.allow()
            if self._adaptive_k:
                plan = self._adaptive_k.choose(limit, match_n, len(continuation), drafter=drafter)
            else:
                plan = Plan(min(self._config.k, limit) if drafter else 0)
            with tracer.start_as_current_span("specdec.iteration") as span:
                new_tokens = await self._iteration(committed, plan, continuation, span)
            committed += new_tokens
            generated += len(new_tokens)
            yield new_tokens

    async def _iteration(
        self, committed: list[int], plan: Plan, continuation: list[int], span: trace.Span
    ) -> list[int]:
        """propose -> score -> accept/correct; returns the tokens it commits. A lookup plan's drafts
        are the first k tokens of `continuation`."""
        config, meter = self._config, self._stats.meter
        greedy = config.params.greedy
        draft_before, target_before = meter.draft_seconds, meter.target_seconds
        k = plan.k
        proposal, drafted_by_model = Drafts([], None), False
        if plan.lookup_n:  # deterministic proposals: q is one-hot at each
            looked_up = continuation[:k]
            proposal = Drafts(looked_up, None if greedy else encode_rows(Proposal.one_hot(looked_up).q))
        elif k > 0:
            answered = await self._propose(committed, k)
            proposal, drafted_by_model = answered or proposal, answered is not None
        # The whole accept/correct step runs in the target (it has the rows p) with our uniforms, drawn
        # after the draft's seed and before the next iteration's: a seeded request is reproducible.
        drafts = proposal.token_ids
        wants_features = self._features is not None and self._can_draft
        n, token, features = await self._target.score(
            self._session_id, committed, proposal, draw_uniforms(len(drafts), greedy, self._generator), config.params,
            meter, self._deadline, features_from=self._features.end if wants_features else None,
        )
        if features is not None:
            self._features.add(features)
        tokens = drafts[:n] + [token]
        self._stats.record(drafted=len(drafts), accepted=n, lookup=bool(plan.lookup_n))
        if self._adaptive_k:
            self._adaptive_k.observe(
                k, len(drafts), n, meter.draft_seconds - draft_before, meter.target_seconds - target_before,
                lookup_n=plan.lookup_n, draft_answered=drafted_by_model,
            )
        metrics.record_iteration_soon(drafted=len(drafts), accepted=n)
        span.set_attributes({
            "specdec.k": k,
            "specdec.lookup_ngram": plan.lookup_n,
            "specdec.drafted_tokens": len(drafts),
            "specdec.accepted_tokens": n,
            "specdec.committed_tokens": len(tokens),
            "specdec.draft_seconds": meter.draft_seconds - draft_before,
            "specdec.verify_seconds": meter.target_seconds - target_before,
        })
        return tokens

    async def _propose(self, committed: list[int], k: int) -> Drafts | None:
        """The draft's k tokens; None when it failed, and the iteration runs on the target alone."""
        config = self._config
        # Greedy drafting draws nothing: the seed only makes sampled drafts reproducible.
        seed = 0 if config.params.greedy else int(torch.randint(_SEED_BOUND, (1,), generator=self._generator))
        catch_up = len(committed) - self._draft_seen
        draft_deadline = self._guard.deadline
        draft_timeout_s = draft_deadline.timeout_s(catch_up, k)
        # Never past the request's own deadline; a draft cut short by it is not the draft's fault.
        request_left_s = float("inf") if self._deadline is None else max(self._deadline - time.monotonic(), 0.0)
        before = self._stats.meter.draft_seconds

        async def propose(features: common_pb2.Features | None) -> Drafted:
            return await self._draft.propose(
                self._session_id, committed, k, config.draft, config.params, seed, self._stats.meter,
                timeout_s=min(draft_timeout_s, request_left_s), features=features,
            )

        try:
            drafted = await propose(self._features.unsent() if self._features else None)
            if drafted.features_from is not None:  # a replica without the session's features: once, from there
                if self._features is None or not 0 <= drafted.features_from <= self._features.end:
                    log.warning("the draft asked for features from position %d, which session %s does not have",
                                drafted.features_from, self._session_id)
                    return None
                drafted = await propose(self._features.rows_from(drafted.features_from))
        except grpc.aio.AioRpcError as error:
            if error.code() in REQUEST_ERRORS:  # this request only: the service is fine for the others
                log.info("the draft cannot serve session %s (%s): it decodes without drafts",
                         self._session_id, error.details())
                self._can_draft = False
            elif request_left_s >= draft_timeout_s or error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                self._guard.breaker.failed(error.code())
            return None
        self._guard.breaker.succeeded()
        draft_deadline.observe(catch_up, k, self._stats.meter.draft_seconds - before)
        self._draft_seen = len(committed)
        if drafted.features_from is not None:  # still without features: this iteration runs without drafts
            log.info("the draft still lacks session %s's features from position %d after a resend",
                     self._session_id, drafted.features_from)
            return None
        if self._features is not None:
            self._features.sent()
        return drafted.drafts

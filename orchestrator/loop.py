"""The speculative loop: propose, score, accept/correct, commit, repeat.

The orchestrator alone owns a stream's committed tokens and its randomness; every draft and
target call carries the full sequence, so each call is idempotent and any replica can serve it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import torch

from orchestrator.clients import CallMeter, DraftClient, Proposal, TargetClient
from orchestrator.request import GenerationConfig
from specdec.speculative import accept_correct

log = logging.getLogger("specdec")

# A draft that is down or slow costs speed, never output: the iteration runs without drafts.
_DRAFT_FAULTS = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_SEED_BOUND = 2**62


@dataclass
class LoopStats:
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    target_calls: int = 0
    accepted_per_position: list[int] = field(default_factory=list)
    drafted_per_position: list[int] = field(default_factory=list)
    meter: CallMeter = field(default_factory=CallMeter)

    def record(self, drafted: int, accepted: int) -> None:
        self.target_calls += 1
        self.drafted_tokens += drafted
        self.accepted_tokens += accepted
        for counts, upto in ((self.drafted_per_position, drafted), (self.accepted_per_position, accepted)):
            counts.extend([0] * (upto - len(counts)))
            for i in range(upto):
                counts[i] += 1


async def speculative_tokens(
    config: GenerationConfig, session_id: str, draft: DraftClient, target: TargetClient, stats: LoopStats
) -> AsyncIterator[list[int]]:
    """Yields the tokens each iteration commits, until config.max_new_tokens are out.

    The caller stops early (EOS, stop strings) by closing the iterator.
    """
    vocab_size = target.info.vocab_size
    generator = torch.Generator().manual_seed(config.seed)
    committed = list(config.prompt_ids)
    generated = 0
    while generated < config.max_new_tokens:
        # Never draft past the budget: the iteration adds up to k + 1 tokens.
        k = min(config.k, config.max_new_tokens - generated - 1)
        proposal = Proposal([], torch.zeros(0, vocab_size))
        if k > 0:
            seed = int(torch.randint(_SEED_BOUND, (1,), generator=generator))
            try:
                proposal = await draft.propose(
                    session_id, committed, k, config.draft, config.params, seed, vocab_size, stats.meter
                )
            except grpc.aio.AioRpcError as error:
                if error.code() not in _DRAFT_FAULTS:
                    raise
                log.warning("draft call failed (%s); this iteration runs without drafts", error.code().name)
        p = await target.score(session_id, committed, proposal.token_ids, config.params, stats.meter)
        verdict = accept_correct(
            torch.tensor(proposal.token_ids, dtype=torch.long),
            proposal.q,
            p,
            greedy=config.params.greedy,
            lenience=config.params.lenience,
            generator=generator,
        )
        stats.record(drafted=len(proposal.token_ids), accepted=verdict.num_accepted)
        committed += verdict.tokens
        generated += len(verdict.tokens)
        yield verdict.tokens

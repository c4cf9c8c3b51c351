"""The token drafters behind the Draft service, free of gRPC: a causal LM and prompt lookup (the EAGLE
head drafts through propose_with_model too, see eagle_drafter)."""

from __future__ import annotations

import torch

from specdec.runtime.batching import Job
from specdec.runtime.cached_lm import Step
from specdec.runtime.features import FeatureRows
from specdec.runtime.ngram import find_ngram
from specdec.runtime.sampling import SamplingParams, argmax, sample_token, sampling_probs, truncate_top_n
from specdec.runtime.speculative import Proposal

# Sampling, x_i is drawn from the SAMPLED_DRAFT_TOP_N likeliest tokens of the processed distribution,
# renormalised. That truncated row is q_i, the distribution x_i is actually sampled from, and the accept
# rule min(1, p/q) with the residual max(0, p - q) is exact for any q the draft samples from; the tail it
# drops costs a little acceptance, and a row is <= N entries on the wire instead of a vocabulary.
SAMPLED_DRAFT_TOP_N = 64


def propose_with_model(
    session_id: str, token_ids: list[int], k: int, params: SamplingParams, seed: int, vocab_size: int,
    features: FeatureRows | None = None,
) -> Job[Proposal]:
    """A scheduler job that samples x_1..x_k autoregressively, one step each (batched with other
    sessions' steps), each from exactly the q_i it returns (top-N truncated, so sparse). Greedy drafts are
    each step's argmax and come without rows: q is one-hot at each x_i. `features` (a feature drafter's) go
    with the first step."""
    generator = torch.Generator().manual_seed(seed)
    sequence = list(token_ids)
    rows = []
    for i in range(k):
        logits = (yield Step(session_id, list(sequence), 1, features=features if i == 0 else None)).logits[0].cpu()
        if params.greedy:
            sequence.append(int(argmax(logits)))
        else:
            q_i = truncate_top_n(sampling_probs(logits, params), SAMPLED_DRAFT_TOP_N)
            sequence.append(sample_token(q_i, generator))
            rows.append(q_i)
    proposed = sequence[len(token_ids) :]
    if params.greedy:
        return Proposal(proposed, None)
    return Proposal(proposed, torch.stack(rows) if rows else torch.zeros(0, vocab_size))


def propose_with_ngram(token_ids: list[int], k: int) -> Proposal:
    """Prompt lookup over the request's tokens, matches of any length."""
    _, proposed = find_ngram(token_ids, k)
    return Proposal.one_hot(proposed)

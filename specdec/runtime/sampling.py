"""Logits -> the distributions tokens are actually sampled from.

Draft and target run the same code here, so p and q see the same temperature, top-k and
top-p processing, renormalised, in float32 (docs/design.md, "Rules that make it exact").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Below MIN_TEMPERATURE, logits / temperature overflow float32 on their way to a one-hot row: requests
# are treated as greedy, which says that exactly (validation.checked_sampling). Above MAX_TEMPERATURE
# a distribution is uniform for any practical purpose.
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-5, 100.0


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0  # 1 = off
    top_k: int = 0  # 0 = off
    lenience: float = 1.0  # 1 = exact

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def validate(self) -> None:
        """Raises ValueError with a message a person can act on."""
        if not (self.temperature == 0.0 or MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE):
            raise ValueError(f"temperature must be 0 (greedy) or in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}], "
                             f"got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.lenience <= 1.0:
            raise ValueError(f"lenience must be in (0, 1] (1 = exact), got {self.lenience}")


def sampling_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """[..., V] logits -> [..., V] float32 probabilities to sample from (temperature > 0).

    Order as in transformers' generate: temperature, then top-k, then top-p.
    """
    logits = logits.float() / params.temperature
    if params.top_k > 0 and params.top_k < logits.shape[-1]:
        kth_best = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p; the best one always stays.
        mass_above = sorted_probs.cumsum(dim=-1) - sorted_probs
        drop_sorted = mass_above >= params.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits.softmax(dim=-1)


def greedy_scores(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """[..., V] logits -> [..., V] float32 scores for greedy verification.

    Keeps the temperature-1 softmax of every token within `lenience` of the best one and zeroes
    the rest, so the accept rule `p(x) >= lenience * max p` sees the scores it needs and the row is
    small on the wire. Exact greedy (lenience 1) needs only the argmax: its rows are one-hot, with
    no softmax computed.
    """
    if params.lenience == 1.0:
        return one_hot_rows(argmax(logits.reshape(-1, logits.shape[-1])), logits.shape[-1]).reshape(logits.shape)
    probs = logits.float().softmax(dim=-1)
    best = probs.max(dim=-1, keepdim=True).values
    return probs.masked_fill(probs < params.lenience * best, 0.0)


def argmax(rows: torch.Tensor) -> torch.Tensor:
    """[..., V] -> [...] int64: the index of each row's largest entry, the first one on ties.

    numpy's, not torch's: on CPU rows of a 49k vocabulary it is ~25x faster (5 vs 128 us for two).
    """
    return torch.as_tensor(rows.detach().cpu().float().numpy().argmax(axis=-1))


def one_hot_rows(token_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[n] token ids -> [n, V] float32 one-hot rows (the q of a deterministic proposal)."""
    rows = torch.zeros(token_ids.shape[0], vocab_size, dtype=torch.float32)
    rows[torch.arange(token_ids.shape[0]), token_ids] = 1.0
    return rows


def target_distribution(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """[..., V] logits -> p rows as the accept/correct step expects them."""
    return greedy_scores(logits, params) if params.greedy else sampling_probs(logits, params)


def truncate_top_n(probs: torch.Tensor, n: int) -> torch.Tensor:
    """[..., V] probabilities -> [..., V]: each row's n largest entries, renormalised, the rest zeroed.
    A row already n wide or narrower comes back as it is."""
    if n >= probs.shape[-1]:
        return probs
    values, ids = torch.topk(probs, n, dim=-1)  # [..., n]
    return torch.zeros_like(probs).scatter_(-1, ids, values / values.sum(dim=-1, keepdim=True))


def uniform64(generator: torch.Generator) -> float:
    """One U[0, 1) draw in float64: the quantile a token is sampled at (sample_token, speculative.correct)."""
    return float(torch.rand(1, generator=generator, dtype=torch.float64))


def sample_token(weights: torch.Tensor, generator: torch.Generator) -> int:
    """One token from a [V] row of non-negative weights (token_at_quantile of a fresh draw)."""
    return token_at_quantile(weights, uniform64(generator))


def token_at_quantile(weights: torch.Tensor, u: float) -> int:
    """The token at quantile u in [0, 1) of a [V] row of non-negative weights, by inverting their running sum.

    Exact, and ~30x cheaper than torch.multinomial for one CPU row of a 49k vocabulary. In float64,
    as vLLM samples: a float32 running sum over a 49k-128k vocabulary resolves its tail only to
    ~6e-8. A one-hot row (greedy drafting) always gives its hot token.
    """
    cdf = weights.double().cumsum(dim=0)  # [V]
    # The first token whose cumulative weight exceeds u * total has weight > 0.
    index = int(torch.searchsorted(cdf, cdf[-1:] * u, right=True))
    return index if index < cdf.shape[0] else int(weights.nonzero()[-1])  # u rounded up to the total

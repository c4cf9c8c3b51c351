"""The accept/correct step of speculative decoding, as pure functions on tensors.

Leviathan, Kalman, Matias 2023, "Fast Inference from Transformers via Speculative Decoding",
Algorithm 1. Notation as in the paper and docs/design.md:

- x_1..x_k: the drafted tokens; q_i: the draft distribution x_i was sampled from.
- p_1..p_{k+1}: the target's distributions at the same positions (p_{k+1} follows x_k).
- Accepted tokens: the longest prefix of x that passes the test `u_i < p_i(x_i) / (l * q_i(x_i))`,
  u_i ~ U[0, 1). l is the lenience (1 = exact).
- Recovered token: at the first rejection n, a sample from `normalize(max(0, p_n - l * q_n))`.
- Bonus token: when all k drafts are accepted, a sample from p_{k+1}.

Every step therefore commits between 1 and k+1 tokens, distributed exactly as the target's own
samples when l = 1. Greedy (temperature 0) is the limit where p and q are one-hot: a draft is
accepted iff it is the target's argmax, and the recovered or bonus token is the argmax. For
lenient greedy, p_i carries the target's soft scores and x_i is kept if p_i(x_i) >= l * max p_i.

The whole step runs in the target service, where the rows p are, with randomness the orchestrator
drew (`draw_uniforms`: u_1..u_k for `count_accepted`, then the quantile `correct` samples at), so that
no row of p crosses the network and a seeded request stays the orchestrator's to reproduce. The q rows
travel to the target instead, and are small: a sampling draft draws from its own top-N, renormalised
(draft_service.drafter), which is exact because that truncated row is the q it samples from.
`accept_correct` is the whole step in one place, as the paper writes it, given those uniforms;
`count_accepted` and `correct` are its two halves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specdec.runtime.sampling import argmax, one_hot_rows, token_at_quantile, uniform64


@dataclass(frozen=True)
class Proposal:
    """What a drafter proposes: x_1..x_n (n <= k) and the rows q_i each was sampled from."""

    token_ids: list[int]
    q: torch.Tensor | None  # [n, V] float32; None where nothing reads it (greedy: one-hot at each x_i)

    @classmethod
    def one_hot(cls, token_ids: list[int]) -> Proposal:
        """A deterministic proposal (prompt lookup): q_i is one-hot at x_i. The rows are max id + 1 wide,
        as narrow as they can be: they go sparse on the wire, and the receiver widens them."""
        return cls(token_ids, one_hot_rows(torch.tensor(token_ids, dtype=torch.long), max(token_ids, default=0) + 1))


@dataclass(frozen=True)
class Verdict:
    tokens: list[int]  # the accepted drafts, then the recovered or bonus token
    num_accepted: int  # n = len(tokens) - 1


@dataclass(frozen=True)
class Uniforms:
    """A step's randomness, drawn by the orchestrator in this order. Greedy draws none."""

    accept: torch.Tensor  # [k] float32: u_i ~ U[0, 1) for the accept test
    correct: float  # U[0, 1), float64: the quantile the recovered or bonus token is sampled at

    @classmethod
    def none(cls) -> Uniforms:
        """What a greedy step takes: nothing is drawn."""
        return cls(torch.zeros(0), 0.0)


def draw_uniforms(k: int, greedy: bool, generator: torch.Generator) -> Uniforms:
    """The step's uniforms from the request's generator: the k accept tests' first, then the correction's."""
    if greedy:
        return Uniforms.none()
    accept = torch.rand(k, generator=generator)
    return Uniforms(accept, uniform64(generator))


def count_accepted(
    draft_tokens: torch.Tensor,  # [k] int64: x_1..x_k
    p: torch.Tensor,  # [k+1, V] float32: p_1..p_{k+1}
    q_x: torch.Tensor,  # [k] float32: q_i(x_i) (unused when greedy)
    u: torch.Tensor,  # [k] float32: u_i ~ U[0, 1) (unused when greedy)
    *,
    greedy: bool,
    lenience: float,
) -> int:
    """n, the number of drafts accepted: the index of the first rejection, or k."""
    k = draft_tokens.shape[0]
    p_x = p[torch.arange(k), draft_tokens]  # [k]: p_i(x_i)
    if greedy and lenience == 1.0:
        accepted = draft_tokens == argmax(p[:k])
    elif greedy:
        accepted = p_x >= lenience * p[:k].max(dim=-1).values
    else:
        # q_i(x_i) > 0 since x_i was sampled from q_i; u < min(1, p/(l q)) without dividing.
        accepted = u * lenience * q_x < p_x
    rejected = (~accepted).nonzero()
    return int(rejected[0]) if rejected.numel() else k


def correct(
    p_n: torch.Tensor,  # [V] float32: the target's row at the first rejection, or the bonus row
    q_n: torch.Tensor | None,  # [V] float32: the draft's row there; None for the bonus token
    *,
    greedy: bool,
    lenience: float,
    u: float,  # U[0, 1): the quantile to sample at (unused when greedy)
) -> int:
    """The token after the accepted drafts: recovered (q_n given) or bonus (q_n None)."""
    if greedy:
        return int(argmax(p_n))
    if q_n is None:
        return token_at_quantile(p_n, u)
    residual = (p_n - lenience * q_n).clamp(min=0.0)  # [V]
    # Zero mass only when p_n == l*q_n, where rejection has probability 0: guard rounding.
    return token_at_quantile(residual if residual.sum() > 0 else p_n, u)


def accept_correct(
    draft_tokens: torch.Tensor,  # [k] int64: x_1..x_k
    q: torch.Tensor | None,  # [k, V] float32: q_i, the rows x_i was sampled from; None when greedy
    p: torch.Tensor,  # [k+1, V] float32: p_1..p_{k+1}
    uniforms: Uniforms,
    *,
    greedy: bool,
    lenience: float,
) -> Verdict:
    """The whole step, given its randomness: what the target computes with the orchestrator's draws."""
    k = draft_tokens.shape[0]
    q_x = torch.zeros(0) if greedy else q[torch.arange(k), draft_tokens]  # [k]
    n = count_accepted(draft_tokens, p, q_x, uniforms.accept, greedy=greedy, lenience=lenience)
    q_n = q[n] if n < k and not greedy else None
    token = correct(p[n], q_n, greedy=greedy, lenience=lenience, u=uniforms.correct)
    return Verdict(tokens=draft_tokens[:n].tolist() + [token], num_accepted=n)

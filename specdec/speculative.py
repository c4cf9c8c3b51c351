"""The accept/correct step of speculative decoding, as a pure function on tensors.

Leviathan, Kalman, Matias 2023, "Fast Inference from Transformers via Speculative Decoding",
Algorithm 1. Notation as in the paper and DESIGN.md:

- x_1..x_k: the drafted tokens; q_i: the draft distribution x_i was sampled from.
- p_1..p_{k+1}: the target's distributions at the same positions (p_{k+1} follows x_k).
- Accepted tokens: the longest prefix of x that passes the test `u_i < p_i(x_i) / (l * q_i(x_i))`,
  u_i ~ U[0, 1). l is the lenience (1 = exact).
- Recovered token: at the first rejection i, a sample from `normalize(max(0, p_i - l * q_i))`.
- Bonus token: when all k drafts are accepted, a sample from p_{k+1}.

Every call therefore commits between 1 and k+1 tokens, distributed exactly as the target's own
samples when l = 1. Greedy (temperature 0) is the limit where p and q are one-hot: a draft is
accepted iff it is the target's argmax, and the recovered or bonus token is the argmax. For
lenient greedy, p_i carries the target's soft scores and x_i is kept if p_i(x_i) >= l * max p_i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Verdict:
    tokens: list[int]  # the accepted drafts, then the recovered or bonus token
    num_accepted: int  # how many drafts were accepted (len(tokens) - 1)


def accept_correct(
    draft_tokens: torch.Tensor,  # [k] int64: x_1..x_k
    q: torch.Tensor,  # [k, V] float32: q_i, the rows x_i was sampled from
    p: torch.Tensor,  # [k+1, V] float32: p_1..p_{k+1}
    *,
    greedy: bool,
    lenience: float,
    generator: torch.Generator,
) -> Verdict:
    k = draft_tokens.shape[0]
    positions = torch.arange(k)
    p_x = p[positions, draft_tokens]  # [k]: p_i(x_i)

    if greedy:
        target_best = p.argmax(dim=-1)  # [k+1]
        if lenience == 1.0:
            accepted = draft_tokens == target_best[:k]
        else:
            accepted = p_x >= lenience * p[:k].max(dim=-1).values
    else:
        q_x = q[positions, draft_tokens]  # [k]: q_i(x_i) > 0, the draft sampled x_i from q_i
        u = torch.rand(k, generator=generator)
        accepted = u * lenience * q_x < p_x  # u < min(1, p/(l q)) without dividing

    # n = number of accepted drafts = index of the first rejection (k if none).
    rejected = (~accepted).nonzero()
    n = int(rejected[0]) if rejected.numel() else k

    if greedy:
        next_token = int(target_best[n])
    elif n < k:
        residual = (p[n] - lenience * q[n]).clamp(min=0.0)  # [V]
        # Zero mass only when p_n == l*q_n, where rejection has probability 0: guard rounding.
        next_token = _sample(residual if residual.sum() > 0 else p[n], generator)
    else:
        next_token = _sample(p[k], generator)  # the bonus token

    return Verdict(tokens=draft_tokens[:n].tolist() + [next_token], num_accepted=n)


def _sample(weights: torch.Tensor, generator: torch.Generator) -> int:
    """One token from a [V] row of non-negative weights (normalised by multinomial)."""
    return int(torch.multinomial(weights, 1, generator=generator))

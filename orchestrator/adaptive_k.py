"""Choosing k each iteration to maximise expected tokens per second.

Leviathan et al. 2023, section 3: with acceptance rate alpha, an iteration that drafts k tokens
commits E(k) = (1 - alpha**(k+1)) / (1 - alpha) tokens in expectation, and costs one draft call of
k tokens plus one target call over k + 1 positions. We pick the k in 0..max_k that maximises
E(k) / (draft_seconds(k) + target_seconds(k)), from running estimates:

- costs, shared by all requests: seconds per draft call and per target call, each a line in k
  fitted by exponentially weighted least squares (on a GPU the target's line is nearly flat; on
  a CPU it rises measurably with the block);
- alpha, per request: an exponentially weighted count of accepted over tested drafts, started
  from the running acceptance of all requests with the same drafter. Its evidence fades while k
  is 0, so a stream that stopped drafting tries again after a while.
"""

from __future__ import annotations

from dataclasses import dataclass

_COST_DECAY = 0.99  # per observation: costs drift slowly (load, sequence length)
_ALPHA_DECAY = 0.9  # per iteration: acceptance follows the text being written
_ALPHA_PRIOR_WEIGHT = 4.0  # pseudo-tests behind the starting alpha
_PRIOR_RELATIVE_SLOPE = 0.1  # until two k values are seen: each draft adds 10% to a call
_MAX_ALPHA = 0.99
_PROBES = (1, 3)  # the k values tried first, once per drafter and orchestrator


def expected_tokens(alpha: float, k: int) -> float:
    """E(k): tokens one iteration commits on average (the paper's equation 1)."""
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


class LinearCost:
    """seconds(k) = a + b * k by exponentially weighted least squares."""

    def __init__(self) -> None:
        self._w = self._sk = self._skk = self._st = self._skt = 0.0
        self.ks_seen: set[int] = set()

    def observe(self, k: int, seconds: float) -> None:
        self.ks_seen.add(k)
        for name in ("_w", "_sk", "_skk", "_st", "_skt"):
            setattr(self, name, getattr(self, name) * _COST_DECAY)
        self._w += 1.0
        self._sk += k
        self._skk += k * k
        self._st += seconds
        self._skt += k * seconds

    def predict(self, k: int) -> float:
        mean_k, mean_t = self._sk / self._w, self._st / self._w
        variance = self._skk / self._w - mean_k**2
        if variance > 1e-6:
            slope = (self._skt / self._w - mean_k * mean_t) / variance
        else:  # one k seen so far: assume a mild rise
            slope = _PRIOR_RELATIVE_SLOPE * mean_t / (1.0 + _PRIOR_RELATIVE_SLOPE * mean_k)
        return max(mean_t + max(slope, 0.0) * (k - mean_k), 1e-6)


@dataclass
class DrafterCosts:
    """What one drafter's iterations cost and how often its drafts are accepted, across requests."""

    draft: LinearCost
    alpha: float = 0.5

    def observe_alpha(self, accepted: int, tested: int) -> None:
        if tested:
            self.alpha += 0.02 * tested * (accepted / tested - self.alpha)
            self.alpha = min(max(self.alpha, 0.0), _MAX_ALPHA)


class CostModel:
    """Shared by all requests of one orchestrator."""

    def __init__(self) -> None:
        self.target = LinearCost()
        self.drafters: dict[str, DrafterCosts] = {}

    def drafter(self, method: str) -> DrafterCosts:
        return self.drafters.setdefault(method, DrafterCosts(LinearCost()))


class AdaptiveK:
    """One request's k schedule."""

    def __init__(self, costs: CostModel, method: str, max_k: int) -> None:
        self._costs = costs
        self._drafter = costs.drafter(method)
        self._max_k = max_k
        self._accepted = _ALPHA_PRIOR_WEIGHT * self._drafter.alpha
        self._tested = _ALPHA_PRIOR_WEIGHT

    @property
    def alpha(self) -> float:
        return min(self._accepted / self._tested, _MAX_ALPHA)

    def choose(self, limit: int) -> int:
        """The k in 0..min(max_k, limit) with the most expected tokens per second."""
        upper = min(self._max_k, limit)
        unseen = [k for k in _PROBES if k not in self._drafter.draft.ks_seen]
        if unseen:  # measure first: two points fix each cost line (a draft LM's grows with k, n-gram's not)
            return min(upper, unseen[0])
        alpha = self.alpha

        def rate(k: int) -> float:
            seconds = self._costs.target.predict(k) + (self._drafter.draft.predict(k) if k else 0.0)
            return expected_tokens(alpha, k) / seconds

        return max(range(upper + 1), key=rate)

    def observe(self, k: int, drafted: int, accepted: int, draft_seconds: float, target_seconds: float) -> None:
        # Drafts after the first rejection were never tested.
        tested = accepted + (1 if accepted < drafted else 0)
        decay = _ALPHA_DECAY
        self._accepted = decay * self._accepted + (1 - decay) * _ALPHA_PRIOR_WEIGHT * self._drafter.alpha + accepted
        self._tested = decay * self._tested + (1 - decay) * _ALPHA_PRIOR_WEIGHT + tested
        self._drafter.observe_alpha(accepted, tested)
        if k:
            self._drafter.draft.observe(k, draft_seconds)
        self._costs.target.observe(drafted, target_seconds)

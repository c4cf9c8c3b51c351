"""Choosing k each iteration to maximise expected tokens per second.

Leviathan et al. 2023, section 3: an iteration that drafts k tokens commits E(k) tokens in
expectation and costs one draft call of k tokens plus one target call over k + 1 positions. We pick
the k in 0..max_k that maximises E(k) / (draft_seconds(k) + target_seconds(k)), from running
estimates:

- costs, shared by all requests: seconds per draft call and per target call at each k (on a GPU
  the target's cost is nearly flat in k; on a CPU it rises measurably with the block), as the
  stream waits for them, kept per load (streams running at once, see CostsByLoad): the services
  batch all streams' steps, so under load a draft token costs more and k falls, to plain decoding
  where drafting stops paying, and rises again as load falls;
- acceptance, shared by all requests with the same drafter, per draft position j: a_j, the chance
  that draft j is accepted once drafts 1..j-1 were. Acceptance is not the paper's i.i.d. alpha
  (a draft that got one token right is likelier to get the next), so E(k) = 1 + sum over j <= k
  of a_1 * ... * a_j, which is the paper's formula when every a_j = alpha;
- a per-request factor on those rates: the stream's accepted drafts over what the shared rates
  expected, shrunk towards 1 by a prior and fading with each iteration, so a request whose text
  the draft predicts well (or badly) drafts more (or less), and one that stopped drafting falls
  back to the shared rates and tries again.

A stream drafted by a model also has a drafter that costs nothing: prompt lookup (specdec.runtime.ngram)
over its own tokens, run here, with no draft call. Where the text repeats an earlier n-gram, its
continuation is a proposal whose only cost is verifying it, accepted more often the longer the
match. Each iteration weighs sending j tokens of that continuation (rates kept per match length n)
against the model's k drafts, and takes whichever promises more tokens per second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import NamedTuple

from specdec.runtime.ngram import MAX_NGRAM

_SCALE_WEIGHT = 0.1  # of each call in the cost scale: the machine's speed drifts within seconds
_SHAPE_WEIGHT = 0.05  # of each call in its k's relative cost, once 20 were seen
_MAX_STEP = 0.2  # relative: a stall (another tenant, a GC pause) must not condemn a k
_RATE_DECAY = 0.995  # per iteration: the shared acceptance rates follow the drafter's recent work
_STREAM_DECAY = 0.9  # per iteration: a stream's acceptance follows the text being written
_STREAM_PRIOR = 16.0  # pseudo-tests behind a stream's factor of 1: move it only on clear evidence
_RATE_PRIOR = (0.5, 1.0)  # pseudo accepted / tested behind each shared rate
_EXPLORATION = 0.1  # optimism per 1/sqrt(tests) in each shared rate
_PRIOR_RELATIVE_SLOPE = 0.1  # until two k values are seen: each draft adds 10% to a call
_MAX_RATE = 0.99
_PROBES = (1, 3)  # the k values tried first, once per drafter and orchestrator
# Only matches this long are weighed against the draft model: a lone repeated token predicts what
# follows it no better than the model does (the continuation's first token was right 12-34% of the
# time per category of dev.jsonl).
LOOKUP_MIN_NGRAM = 2


def expected_tokens(rates: list[float], k: int) -> float:
    """E(k): tokens one iteration commits on average, from per-position acceptance rates."""
    expected, reach = 1.0, 1.0
    for a in rates[:k]:
        reach *= a
        expected += reach
    return expected


class CallCost:
    """seconds(k) for one kind of call = scale * shape(k).

    The machine's speed drifts (other tenants, sequence length) by more than the cost differs
    between neighbouring k, and a k that is not chosen is not measured again; comparing raw means
    taken at different times locks adaptive k into whichever k was last measured on a fast spell. So
    every call moves the scale quickly, and each k's shape (its cost relative to the scale) is
    learned slowly. A k not seen yet takes its shape from a line through the seen ones (each draft
    adding _PRIOR_RELATIVE_SLOPE while only one k is seen). Not a line throughout: a CPU's verify
    cost jumps where its matrix kernels change shape (55, 61, 67, then 97 ms for blocks of 1, 2, 3
    and 5 positions on the dev VM).
    """

    def __init__(self) -> None:
        self._scale = 0.0
        self._shape: dict[int, float] = {}
        self._count: dict[int, int] = {}

    @property
    def ks_seen(self) -> set[int]:
        return set(self._shape)

    def observe(self, k: int, seconds: float) -> None:
        if seconds <= 0.0:  # no call was timed: nothing to learn, and a zero scale would divide by zero
            return
        if not self._shape:
            self._scale = seconds
        n = self._count.get(k, 0) + 1
        shape = self._shape.get(k, seconds / self._scale)
        # A plain mean at first, then a slow one.
        self._shape[k], self._count[k] = _toward(shape, seconds / self._scale, max(1 / n, _SHAPE_WEIGHT)), n
        self._scale = _toward(self._scale, seconds / self._shape[k], _SCALE_WEIGHT)

    def predict(self, k: int) -> float:
        return self._scale * self._shape_at(k)

    def _shape_at(self, k: int) -> float:
        if k in self._shape:
            return self._shape[k]
        ks, shapes = list(self._shape), list(self._shape.values())
        mean_k, mean_s = sum(ks) / len(ks), sum(shapes) / len(shapes)
        variance = sum((x - mean_k) ** 2 for x in ks)
        if variance:
            slope = sum((x - mean_k) * (s - mean_s) for x, s in zip(ks, shapes)) / variance
        else:
            slope = _PRIOR_RELATIVE_SLOPE * mean_s / (1.0 + _PRIOR_RELATIVE_SLOPE * mean_k)
        return max(mean_s + max(slope, 0.0) * (k - mean_k), 1e-3)


def _toward(value: float, observed: float, weight: float) -> float:
    """A running mean's step; one stall (a GC pause, another tenant) moves it by at most _MAX_STEP."""
    return value + weight * min(max(observed - value, -_MAX_STEP * value), _MAX_STEP * value)


class AcceptanceRates:
    """a_j for j = 1..max_k as decayed counts of accepted over tested drafts at position j."""

    def __init__(self, max_k: int) -> None:
        self._accepted = [_RATE_PRIOR[0]] * max_k
        self._tested = [_RATE_PRIOR[1]] * max_k

    def observe(self, drafted: int, accepted: int) -> None:
        """One iteration of any stream. Evidence fades even when nothing was drafted, so a drafter
        that every stream gave up on grows optimistic again and gets retried."""
        for j in range(len(self._tested)):
            tested = j < min(accepted + 1, drafted)  # drafts after the first rejection were never tested
            self._accepted[j] = _RATE_DECAY * self._accepted[j] + (tested and j < accepted)
            self._tested[j] = _RATE_DECAY * self._tested[j] + tested

    def rates(self) -> list[float]:
        """Optimistic estimates: the mean plus a bonus that shrinks with evidence, so k values that
        look slightly worse still get tried until the data rule them out. A position with few tests
        of its own leans on the rate before it."""
        rates: list[float] = []
        prior_accepted, prior_tested = _RATE_PRIOR
        for accepted, tested in zip(self._accepted, self._tested):
            prior_rate = rates[-1] if rates else prior_accepted / prior_tested
            mean = (accepted + prior_tested * prior_rate) / (tested + prior_tested)
            rates.append(min(mean + _EXPLORATION / math.sqrt(tested + prior_tested), _MAX_RATE))
        return rates


def load_bucket(streams: int) -> int:
    """Streams generating at once, rounded up to a power of two: 1, 2, 3-4, 5-8, 9-16, ..."""
    return max(streams - 1, 0).bit_length()


class CostsByLoad:
    """A CallCost per load bucket.

    The services batch every stream's step into shared passes, so what a call costs, and above all
    what each draft adds to it, depends on how many streams run: on the dev VM one pass of 8 rows
    costs 2.0 single steps with one new token per row and 3.7 with three, so at 8 streams a draft
    token costs nearly what a committed one does, where alone it costs ~10% of a step. Each load
    keeps its own costs, measured there (probes included), so k shrinks as load grows and comes
    back as it falls, each bucket remembering what k cost at that load.
    """

    def __init__(self, load: Callable[[], int]) -> None:
        self._load = load
        self._costs: dict[int, CallCost] = {}

    @property
    def now(self) -> CallCost:
        return self._costs.setdefault(load_bucket(self._load()), CallCost())


class DrafterStats:
    """What one drafter's calls cost (at each load) and how often its drafts are accepted, across requests."""

    def __init__(self, max_k: int, load: Callable[[], int]) -> None:
        self._draft = CostsByLoad(load)
        self.acceptance = AcceptanceRates(max_k)

    @property
    def draft(self) -> CallCost:
        return self._draft.now


class CostModel:
    """Shared by all requests of one orchestrator; `load` says how many streams it runs now."""

    def __init__(self, max_k: int = 64, load: Callable[[], int] = lambda: 1) -> None:
        self._target = CostsByLoad(load)
        self._load = load
        self._max_k = max_k
        self.drafters: dict[Hashable, DrafterStats] = {}

    @property
    def target(self) -> CallCost:
        return self._target.now

    def drafter(self, key: Hashable) -> DrafterStats:
        return self.drafters.setdefault(key, DrafterStats(self._max_k, self._load))


class Plan(NamedTuple):
    """An iteration's drafts: k of them, from the drafter, or from a prompt-lookup match of
    length lookup_n (0: the drafter)."""

    k: int
    lookup_n: int = 0


class _Source:
    """A drafter as one stream sees it: the shared statistics, and this stream's factor on their rates."""

    def __init__(self, stats: DrafterStats) -> None:
        self.stats = stats
        self._accepted = self._expected = 0.0  # this stream's accepted drafts, and the shared rates' forecast

    @property
    def factor(self) -> float:
        """This stream's acceptance relative to the drafter's shared rates."""
        return (self._accepted + _STREAM_PRIOR) / (self._expected + _STREAM_PRIOR)

    def rates(self) -> list[float]:
        return [min(a * self.factor, _MAX_RATE) for a in self.stats.acceptance.rates()]

    def observe(self, drafted: int, accepted: int) -> None:
        tested = min(accepted + 1, drafted)
        # An unused source (most of them, each iteration) tested nothing: no rates to compute.
        forecast = sum(self.stats.acceptance.rates()[:tested]) if tested else 0.0
        self._accepted = _STREAM_DECAY * self._accepted + accepted
        self._expected = _STREAM_DECAY * self._expected + forecast
        self.stats.acceptance.observe(drafted, accepted)


class AdaptiveK:
    """One request's k schedule. `drafter` keys its shared statistics; with `lookup`, prompt-lookup
    proposals compete with the drafter's, their statistics keyed by (match length, `judged`)."""

    def __init__(
        self, costs: CostModel, drafter: Hashable, max_k: int, lookup: bool = False, judged: Hashable = None
    ) -> None:
        self._costs = costs
        self._drafter = _Source(costs.drafter(drafter))
        ngrams = range(LOOKUP_MIN_NGRAM, MAX_NGRAM + 1) if lookup else ()
        self._lookups = {n: _Source(costs.drafter(("lookup", n, judged))) for n in ngrams}
        self._max_k = max_k
        self._target_prefilled = self._draft_prefilled = False

    @property
    def factor(self) -> float:
        return self._drafter.factor

    def choose(self, limit: int, match_n: int = 0, match_len: int = 0, drafter: bool = True) -> Plan:
        """The plan with the most expected tokens per second: k in 0..min(max_k, limit) drafts from
        the drafter (unless `drafter` is False: it is failing), or j of the match_len tokens a prompt
        lookup of an n = match_n gram found."""
        upper = min(self._max_k, limit)
        if upper == 0:
            return Plan(0)
        target = self._costs.target
        if not drafter:  # plain decoding, unless a lookup promises more (once target costs are known)
            plain = Plan(0)
            return self._best_lookup(upper, match_n, match_len, plain, 1.0 / target.predict(0)) if target.ks_seen else plain
        draft = self._drafter.stats.draft
        # Measure first: two points fix each cost line (a draft LM's grows with k, n-gram's not). A
        # probe the budget does not allow waits, or a stream of short requests would probe forever.
        unseen = [k for k in _PROBES if k not in draft.ks_seen and k <= upper]
        if unseen:
            return Plan(unseen[0])
        rates = self._drafter.rates()

        def drafter_rate(k: int) -> float:
            return expected_tokens(rates, k) / (target.predict(k) + (draft.predict(k) if k else 0.0))

        best = max(range(upper + 1), key=drafter_rate)
        return self._best_lookup(upper, match_n, match_len, Plan(best), drafter_rate(best))

    def _best_lookup(self, upper: int, match_n: int, match_len: int, plan: Plan, rate: float) -> Plan:
        """`plan`, or sending j tokens of the lookup's match if that promises more than `rate`."""
        if match_n in self._lookups:
            lookup_rates = self._lookups[match_n].rates()
            target = self._costs.target.predict
            for j in range(1, min(match_len, upper) + 1):
                lookup_rate = expected_tokens(lookup_rates, j) / target(j)
                if lookup_rate > rate:
                    plan, rate = Plan(j, match_n), lookup_rate
        return plan

    def observe(
        self, k: int, drafted: int, accepted: int, draft_seconds: float, target_seconds: float, lookup_n: int = 0,
        draft_answered: bool = True,
    ) -> None:
        """One iteration of the plan Plan(k, lookup_n). Every source observes it, the unused ones as
        an iteration that drafted nothing, so their evidence fades alike. `draft_answered`: False
        when a draft call failed (it took no measurable time, and drafted nothing)."""
        for n, source in ((0, self._drafter), *self._lookups.items()):
            if n == lookup_n:
                source.observe(drafted, accepted)
            else:
                source.observe(0, 0)
        # A stream's first call to each service also prefills the prompt: it says nothing about k.
        drafted_by_model = k > 0 and not lookup_n and draft_answered
        if drafted_by_model and self._draft_prefilled:
            self._drafter.stats.draft.observe(k, draft_seconds)
        if self._target_prefilled:
            self._costs.target.observe(drafted, target_seconds)
        self._draft_prefilled |= drafted_by_model
        self._target_prefilled = True

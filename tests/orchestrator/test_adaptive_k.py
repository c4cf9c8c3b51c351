"""Adaptive k: expected tokens from per-position acceptance, the cost fit and the choice they drive."""

from __future__ import annotations

import pytest

from orchestrator.adaptive_k import AcceptanceRates, AdaptiveK, CallCost, CostModel, Plan, expected_tokens


def test_expected_tokens_is_the_papers_formula_for_one_alpha():
    for alpha in (0.0, 0.3, 0.8):
        for k in range(6):
            assert expected_tokens([alpha] * 8, k) == pytest.approx((1 - alpha ** (k + 1)) / (1 - alpha))


def test_expected_tokens_chains_per_position_rates():
    assert expected_tokens([0.5, 0.8, 0.1], 3) == pytest.approx(1 + 0.5 + 0.5 * 0.8 + 0.5 * 0.8 * 0.1)


def test_acceptance_rates_are_measured_per_position():
    rates = AcceptanceRates(max_k=3)
    for i in range(400):  # the first draft is right half the time; once it is, the second always is
        rates.observe(drafted=2, accepted=2 if i % 2 else 0)
    first, second, third = rates.rates()
    assert first == pytest.approx(0.5, abs=0.03) and second == pytest.approx(1.0, abs=0.03)
    assert third == pytest.approx(second, abs=0.1)  # never tested: it leans on the position before


def test_call_cost_keeps_each_k_and_draws_a_line_for_the_unseen():
    cost = CallCost()
    cost.observe(2, 0.12)
    assert cost.predict(2) == pytest.approx(0.12)
    assert cost.predict(2) < cost.predict(6) < 0.12 * 2  # one k seen: a mild prior rise
    for k in (0, 1, 4, 8):
        cost.observe(k, 0.1 + 0.01 * k)
    assert cost.predict(10) == pytest.approx(0.2, rel=0.05)
    cost.observe(4, 0.1 + 0.01 * 4)
    assert cost.predict(3) == pytest.approx(0.13, rel=0.05)  # between its neighbours on the line


def test_call_cost_follows_a_jump_in_k_and_shrugs_off_a_stall():
    cost = CallCost()
    for _ in range(30):  # a CPU: flat up to k = 2, then the kernel changes and the cost jumps
        for k, seconds in ((0, 0.055), (1, 0.061), (2, 0.067), (4, 0.097)):
            cost.observe(k, seconds)
    assert [round(cost.predict(k), 3) for k in (0, 1, 2, 4)] == [0.055, 0.061, 0.067, 0.097]
    cost.observe(1, 0.5)  # one call stalled
    assert cost.predict(1) < 0.061 * 1.05  # a few percent, not eight times


def costs(target_slope: float, draft_per_token: float) -> CostModel:
    model = CostModel()
    model.target_seconds = lambda k: 0.08 * (1 + target_slope * k)  # the truth the fit should find
    model.draft_seconds = lambda k: 0.001 + draft_per_token * k
    for k in range(9):
        model.target.observe(k, model.target_seconds(k))
        if k:
            model.drafter("model").draft.observe(k, model.draft_seconds(k))
    return model


def adaptive(model: CostModel, alpha: float, steps: int = 60) -> AdaptiveK:
    chooser = AdaptiveK(model, "model", max_k=8)
    for _ in range(steps):  # a stream drafting 4 tokens at a time, ~alpha of them accepted
        chooser.observe(4, 4, round(alpha * 4), model.draft_seconds(4), model.target_seconds(4))
    return chooser


def test_cheap_verification_and_good_drafts_push_k_up():
    assert adaptive(costs(target_slope=0.0, draft_per_token=0.002), alpha=1.0).choose(limit=100).k == 8


def test_useless_drafts_fall_back_to_plain_decoding():
    assert adaptive(costs(target_slope=0.1, draft_per_token=0.004), alpha=0.0).choose(limit=100).k == 0


def test_k_never_exceeds_the_remaining_budget():
    assert adaptive(costs(target_slope=0.0, draft_per_token=0.002), alpha=1.0).choose(limit=3).k == 3


def test_a_stream_the_draft_predicts_badly_drafts_less_then_falls_back_to_the_shared_rates():
    model = costs(target_slope=0.1, draft_per_token=0.004)
    good = AdaptiveK(model, "model", max_k=8)
    for _ in range(200):  # other streams: the first 6 drafts are accepted
        good.observe(8, 8, 6, model.draft_seconds(8), model.target_seconds(8))
    bad = AdaptiveK(model, "model", max_k=8)
    for _ in range(30):
        bad.observe(8, 8, 0, model.draft_seconds(8), model.target_seconds(8))
    fresh = AdaptiveK(model, "model", max_k=8)
    assert bad.factor < 0.75 and 0 < bad.choose(limit=100).k < fresh.choose(limit=100).k == 6
    for _ in range(60):
        bad.observe(0, 0, 0, 0.0, model.target_seconds(0))  # plain decoding iterations: no new evidence
    assert bad.factor == pytest.approx(1.0, abs=0.05)


def test_a_drafter_every_stream_gave_up_on_is_retried():
    model = costs(target_slope=0.1, draft_per_token=0.004)
    chooser = adaptive(model, alpha=0.0, steps=100)
    assert chooser.choose(limit=100).k == 0
    retried_after = next(i for i in range(5000) if chooser.observe(0, 0, 0, 0.0, 0.08) or chooser.choose(limit=100).k)
    assert 100 < retried_after < 5000


def test_a_new_drafter_is_probed_at_two_k_values_first_after_the_prefill():
    model = CostModel()
    chooser = AdaptiveK(model, "model", max_k=8)
    ks = []
    for draft_s, target_s in ((0.05, 0.6), (None, 0.06), (None, 0.07)):  # the first call also prefills
        k = chooser.choose(limit=100).k
        chooser.observe(k, k, 0, draft_s or 0.004 * k, target_s)
        ks.append(k)
    assert ks == [1, 1, 3]  # the prefill measured nothing, so k = 1 is probed again
    assert model.drafter("model").draft.predict(5) == pytest.approx(0.02)  # the line through both probes
    assert model.target.predict(1) == pytest.approx(0.06)


def test_call_cost_compares_k_values_measured_at_different_speeds():
    cost = CallCost()
    for _ in range(40):  # k = 1 and k = 2 measured together: k = 2 costs 10% more
        cost.observe(1, 0.060)
        cost.observe(2, 0.066)
    for _ in range(40):  # then the machine slows by 30%, and only k = 2 is chosen
        cost.observe(2, 0.066 * 1.3)
    assert cost.predict(2) == pytest.approx(0.066 * 1.3, rel=0.02)
    # k = 1, not measured since, follows most of the slowdown instead of keeping its fast-spell cost
    # (a plain mean per k would say 0.060 and make k = 2 look 43% dearer, not 10%).
    assert cost.predict(1) > 0.060 * 1.15
    assert cost.predict(2) / cost.predict(1) < 1.25


def test_a_prompt_lookup_match_is_sent_when_it_promises_more_than_the_draft_model():
    model = costs(target_slope=0.1, draft_per_token=0.004)
    chooser = AdaptiveK(model, "model", max_k=8, lookup=True, judged="greedy")
    for _ in range(100):  # 3-gram matches: the first two of their continuation are accepted
        chooser.observe(4, 4, 2, 0.0, model.target_seconds(4), lookup_n=3)
        chooser.observe(0, 0, 0, 0.0, model.target_seconds(0))  # on other iterations, nothing drafted
    plan = chooser.choose(limit=100, match_n=3, match_len=8)
    assert plan.lookup_n == 3 and 2 <= plan.k <= 3
    assert chooser.choose(limit=100, match_n=3, match_len=1) == Plan(1, 3)  # no more than the match has
    assert chooser.choose(limit=100).lookup_n == 0  # no match: the draft model's plan
    for _ in range(200):  # 2-gram matches are never accepted
        chooser.observe(2, 2, 0, 0.0, model.target_seconds(2), lookup_n=2)
    assert chooser.choose(limit=100, match_n=2, match_len=8).lookup_n == 0
    assert chooser.choose(limit=100, match_n=1, match_len=8).lookup_n == 0  # 1-grams are never weighed
    # Only a stream with lookup on weighs it.
    assert AdaptiveK(model, "model", max_k=8).choose(limit=100, match_n=3, match_len=8).lookup_n == 0


def test_a_probe_the_budget_does_not_allow_is_put_off_not_repeated_forever():
    model = CostModel()
    chooser = AdaptiveK(model, "model", max_k=8)
    ks = []
    for _ in range(4):  # short requests, at most 2 drafts each, from a draft as slow as the target
        plan = chooser.choose(limit=2)
        chooser.observe(plan.k, plan.k, 0, 0.1 * plan.k, 0.06)
        ks.append(plan.k)
    assert ks == [1, 1, 0, 0]  # k = 1 probed (its first call prefilled); k = 3 does not fit, so no probe
    assert AdaptiveK(CostModel(), "model", max_k=8).choose(limit=0).k == 0  # no room, nothing measured yet
    assert chooser.choose(limit=100).k == 3  # a longer request probes it


def test_a_failed_draft_call_teaches_no_cost_and_never_divides_by_zero():
    costs = CostModel(max_k=8)
    adaptive = AdaptiveK(costs, "model", max_k=8)
    for _ in range(3):  # the stream's first calls (prefills), then one that the draft failed
        adaptive.observe(3, 0, 0, draft_seconds=0.0, target_seconds=0.05, draft_answered=False)
    assert costs.drafter("model").draft.ks_seen == set()
    CallCost().observe(2, 0.0)  # nothing to learn from no time at all
    adaptive.observe(1, 1, 1, draft_seconds=0.004, target_seconds=0.05)
    assert costs.drafter("model").draft.ks_seen == set()  # the draft's first answered call is its prefill
    adaptive.observe(1, 1, 1, draft_seconds=0.004, target_seconds=0.05)
    assert costs.drafter("model").draft.ks_seen == {1}


def test_without_a_drafter_only_plain_decoding_or_a_lookup_is_chosen():
    costs = CostModel(max_k=8)
    adaptive = AdaptiveK(costs, "model", max_k=8, lookup=True, judged="greedy")
    assert adaptive.choose(limit=8, match_n=3, match_len=4, drafter=False) == Plan(0)  # no target cost known yet
    for _ in range(5):
        adaptive.observe(0, 0, 0, draft_seconds=0.0, target_seconds=0.05)
    assert adaptive.choose(limit=8, drafter=False) == Plan(0)
    # A long match looks worth verifying (optimistic rates, a flat target cost), and needs no draft call.
    plan = adaptive.choose(limit=8, match_n=3, match_len=4, drafter=False)
    assert plan.lookup_n == 3 and plan.k >= 1


def test_k_falls_to_plain_decoding_under_load_and_comes_back_as_load_falls():
    """The dev VM's batched costs: alone a verify of k drafts costs 1 + 0.1 k steps and a draft token
    0.1 of a step; among 8 streams a pass costs 2 + 0.85 k single steps, a draft token 0.3."""
    streams = [1]
    model = CostModel(max_k=8, load=lambda: streams[0])
    target = {1: lambda k: 0.035 * (1 + 0.1 * k), 8: lambda k: 0.035 * (2 + 0.85 * k)}
    draft = {1: lambda k: 0.0035 * k, 8: lambda k: 0.0105 * k}
    chooser = AdaptiveK(model, "model", max_k=8)

    def run(iterations: int) -> list[int]:
        ks = []
        for i in range(iterations):  # the first draft is right 2 times in 5, the second never
            k = chooser.choose(limit=100).k
            load = streams[0]
            chooser.observe(k, k, int(k > 0 and i % 5 < 2), draft[load](k), target[load](k))
            ks.append(k)
        return ks

    run(100)
    assert chooser.choose(limit=100).k == 1  # alone: 1.4 tokens for 1.2 steps
    streams[0] = 8
    assert run(100)[-20:] == [0] * 20  # among 8: 1.4 tokens for 3.15 of a pass's 2 steps; plain wins
    streams[0] = 1
    assert run(10) == [1] * 10  # alone again: the costs measured alone still hold

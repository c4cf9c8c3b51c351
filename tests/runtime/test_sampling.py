"""specdec.runtime.sampling: p/q rows match transformers' logits processors; greedy rows and validation."""

from __future__ import annotations

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from specdec.runtime.errors import InvalidArgument
from specdec.runtime.sampling import (
    SamplingParams, argmax, greedy_scores, sampling_probs, token_at_quantile, truncate_top_n,
)
from specdec.runtime.validation import checked_sampling

V = 50


def reference_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """What transformers' generate samples from: temperature, top-k, top-p, softmax."""
    input_ids = torch.zeros(logits.shape[0], 1, dtype=torch.long)
    scores = TemperatureLogitsWarper(params.temperature)(input_ids, logits.float())
    if params.top_k > 0:
        scores = TopKLogitsWarper(params.top_k)(input_ids, scores)
    scores = TopPLogitsWarper(params.top_p)(input_ids, scores)
    return scores.softmax(dim=-1)


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [
        (1.0, 0, 1.0),  # plain softmax
        (0.7, 10, 1.0),  # top-k only
        (1.3, 0, 0.9),  # top-p only
        (0.5, 5, 0.8),  # both
        (1.0, V, 0.95),  # top_k == V is off
        (2.0, 10 * V, 1.0),  # top_k > V is off
        (1.0, 1, 1.0),  # top-1
        (0.9, 0, 0.05),  # top-p so small only the best survives
    ],
)
def test_sampling_probs_match_transformers(temperature, top_k, top_p):
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    logits = torch.randn(8, V, generator=torch.Generator().manual_seed(0)) * 3
    ours = sampling_probs(logits, params)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference_probs(logits, params), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.sum(dim=-1), torch.ones(8), atol=1e-5, rtol=0)


def test_top_k_keeps_every_token_tied_at_the_kth_logit():
    logits = torch.tensor([[4.0, 2.0, 2.0, 2.0, 1.0, 0.0]])
    params = SamplingParams(temperature=1.0, top_k=2, top_p=1.0)
    ours = sampling_probs(logits, params)
    assert (ours[0, :4] > 0).all() and (ours[0, 4:] == 0).all()
    torch.testing.assert_close(ours, reference_probs(logits, params))


def test_top_p_with_ties_away_from_the_cut_matches_transformers():
    logits = torch.tensor([[3.0, 3.0, 1.0, 1.0, 1.0, -2.0, -2.0]])
    params = SamplingParams(temperature=1.0, top_p=0.95)
    ours = sampling_probs(logits, params)
    torch.testing.assert_close(ours, reference_probs(logits, params))
    assert ours[0, 0] == ours[0, 1] and (ours[0, 5:] == 0).all()


def test_float16_logits_give_float32_rows_summing_to_one():
    logits = torch.randn(4, V, generator=torch.Generator().manual_seed(1)).half()
    probs = sampling_probs(logits, SamplingParams(temperature=0.8, top_k=7, top_p=0.9))
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(dim=-1), torch.ones(4), atol=1e-6, rtol=0)


def test_greedy_scores_exact_are_one_hot_at_the_argmax():
    logits = torch.randn(5, V, generator=torch.Generator().manual_seed(2)).half()
    scores = greedy_scores(logits, SamplingParams())
    assert scores.dtype == torch.float32
    assert torch.equal(scores, torch.nn.functional.one_hot(logits.argmax(dim=-1), V).float())


def test_greedy_scores_lenient_keeps_tokens_within_lenience_of_the_best():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    scores = greedy_scores(probs.log(), SamplingParams(lenience=0.5))
    torch.testing.assert_close(scores, torch.tensor([[0.5, 0.3, 0.0, 0.0]]))
    scores = greedy_scores(probs.log(), SamplingParams(lenience=0.25))
    torch.testing.assert_close(scores, torch.tensor([[0.5, 0.3, 0.15, 0.0]]))


def test_argmax_agrees_with_torch_and_takes_the_first_of_ties():
    rows = torch.randn(3, V, generator=torch.Generator().manual_seed(3))
    rows[2, 7] = rows[2, 11] = rows[2].max() + 1  # a tie: the first one wins, as in torch
    assert argmax(rows).tolist() == rows.argmax(dim=-1).tolist() == [*rows[:2].argmax(dim=-1).tolist(), 7]
    assert int(argmax(rows[0].half())) == int(rows[0].half().argmax())  # one row, another dtype


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": -0.2}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"lenience": 0.0}, "lenience"),
        ({"lenience": 1.01}, "lenience"),
    ],
)
def test_validate_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs).validate()


@pytest.mark.parametrize(
    "kwargs", [{}, {"temperature": 0.5, "top_p": 1.0, "top_k": 3, "lenience": 1.0}, {"top_p": 1e-6, "lenience": 1e-6}]
)
def test_validate_accepts_boundary_values(kwargs):
    SamplingParams(**kwargs).validate()


@pytest.mark.parametrize("temperature", [float("inf"), float("nan"), 101.0, -1.0])
def test_temperatures_that_mean_nothing_are_refused(temperature):
    with pytest.raises(InvalidArgument, match="temperature must be 0"):
        checked_sampling(SamplingParams(temperature=temperature))


@pytest.mark.parametrize("temperature", [1e-40, 1e-6])
def test_temperatures_below_the_floor_are_greedy(temperature):
    with pytest.raises(ValueError):
        SamplingParams(temperature=temperature).validate()  # never sampled at: logits / t would overflow
    assert checked_sampling(SamplingParams(temperature=temperature)).greedy


@pytest.mark.parametrize("temperature", [0.0, 1e-5, 0.7, 100.0])
def test_greedy_and_usable_temperatures_are_accepted(temperature):
    SamplingParams(temperature=temperature).validate()
    if temperature:
        probs = sampling_probs(torch.tensor([[30.0, 29.0, -5.0]]), SamplingParams(temperature=temperature))
        assert torch.isfinite(probs).all() and abs(float(probs.sum()) - 1) < 1e-5


def test_truncate_top_n_keeps_each_rows_n_largest_renormalised():
    probs = torch.tensor([[0.1, 0.4, 0.2, 0.3], [0.5, 0.0, 0.0, 0.5]])
    truncated = truncate_top_n(probs, 2)
    torch.testing.assert_close(truncated, torch.tensor([[0.0, 4 / 7, 0.0, 3 / 7], [0.5, 0.0, 0.0, 0.5]]))
    assert truncated.dtype == torch.float32


def test_truncate_top_n_leaves_rows_no_wider_than_n_and_sparsifies_a_vocabulary():
    probs = torch.rand(3, 4).softmax(-1)
    assert truncate_top_n(probs, 4) is probs
    wide = torch.randn(2, 5000).softmax(-1)
    truncated = truncate_top_n(wide, 64)
    assert (truncated > 0).sum(-1).tolist() == [64, 64]
    torch.testing.assert_close(truncated.sum(-1), torch.ones(2))
    assert torch.equal(truncated.argmax(-1), wide.argmax(-1))


def test_token_at_quantile_inverts_the_running_sum_of_unnormalised_weights():
    weights = torch.tensor([0.0, 2.0, 0.0, 1.0, 1.0])  # total 4: token 1 below 0.5, 3 below 0.75, then 4
    assert [token_at_quantile(weights, u) for u in (0.0, 0.49, 0.5, 0.74, 0.75, 0.999999)] == [1, 1, 3, 3, 4, 4]


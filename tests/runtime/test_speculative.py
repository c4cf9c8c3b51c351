"""The accept/correct step: deterministic cases, then its output distribution against p."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from specdec.runtime.speculative import accept_correct, draw_uniforms
from specdec.runtime.validation import check_sampled_step
from specdec.runtime.wire import encode_rows
from specdec.v1 import target_pb2

V = 5


def rows(*values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def step(x: torch.Tensor, q: torch.Tensor, p: torch.Tensor, generator: torch.Generator, *, greedy=False,
         lenience=1.0):
    """The step in one process: the orchestrator's draws, then the target's computation."""
    uniforms = draw_uniforms(x.shape[0], greedy, generator)
    return accept_correct(x, None if greedy else q, p, uniforms, greedy=greedy, lenience=lenience)


def run(x: list[int], q: torch.Tensor, p: torch.Tensor, *, greedy=False, lenience=1.0, seed=0):
    return step(torch.tensor(x, dtype=torch.long), q, p, torch.Generator().manual_seed(seed), greedy=greedy,
                lenience=lenience)


def test_forced_accept_then_bonus_from_last_target_row():
    # p(x_i) >= q(x_i) for every draft: always accepted; the bonus token is the only mass of p_3.
    q = rows([0, 0.5, 0.5, 0, 0], [0, 0, 1, 0, 0])
    p = rows([0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1])
    for seed in range(20):
        verdict = run([1, 2], q, p, seed=seed)
        assert verdict.tokens == [1, 2, 4] and verdict.num_accepted == 2


def test_forced_reject_samples_the_residual():
    # p_1(x_1) = 0: x_1 is always rejected; max(0, p_1 - q_1) has its only mass on token 3.
    q = rows([0, 0.5, 0.5, 0, 0], [0.2] * 5)
    p = rows([0, 0, 0.5, 0.5, 0], [0.2] * 5, [0.2] * 5)
    for seed in range(20):
        verdict = run([1, 0], q, p, seed=seed)
        assert verdict.tokens == [3] and verdict.num_accepted == 0


def test_rejection_at_second_position_keeps_first():
    q = rows([1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0])
    p = rows([1, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0.2] * 5, [0.2] * 5)
    verdict = run([0, 1, 2], q, p)
    assert verdict.tokens == [0, 4] and verdict.num_accepted == 1


def test_no_drafts_is_plain_sampling_from_p():
    p = rows([0, 0, 1, 0, 0])
    verdict = run([], torch.zeros(0, V), p)
    assert verdict.tokens == [2] and verdict.num_accepted == 0


def test_greedy_accepts_the_target_argmax_and_corrects_with_it():
    p = rows([0.1, 0.6, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.2, 0.5], [0.9, 0, 0, 0, 0.1])
    q = torch.zeros(2, V)  # greedy ignores q
    assert run([1, 4], q, p, greedy=True).tokens == [1, 4, 0]  # all accepted + bonus argmax
    assert run([1, 3], q, p, greedy=True).tokens == [1, 4]  # 3 is not the argmax: corrected to 4
    assert run([2, 4], q, p, greedy=True).tokens == [1]


def test_lenient_greedy_keeps_near_best_tokens():
    p = rows([0.1, 0.5, 0.4, 0, 0], [0, 0, 0, 0, 1])
    q = torch.zeros(1, V)
    assert run([2], q, p, greedy=True, lenience=1.0).tokens == [1]
    assert run([2], q, p, greedy=True, lenience=0.75).tokens == [2, 4]  # 0.4 >= 0.75 * 0.5
    assert run([0], q, p, greedy=True, lenience=0.75).tokens == [1]  # 0.1 < 0.375


def _first_token_counts(p, q, lenience, samples, k):
    """Counts of the first committed token when x_i ~ q_i, over `samples` runs."""
    generator = torch.Generator().manual_seed(1234)
    counts = torch.zeros(p.shape[1])
    for _ in range(samples):
        x = torch.stack([torch.multinomial(q[i], 1, generator=generator)[0] for i in range(k)])
        verdict = step(x, q, p, generator, lenience=lenience)
        counts[verdict.tokens[0]] += 1
    return counts


@pytest.fixture
def random_rows():
    generator = torch.Generator().manual_seed(7)
    p = (3 * torch.randn(3, 6, generator=generator)).softmax(-1)
    q = (3 * torch.randn(2, 6, generator=generator)).softmax(-1)
    return p, q


def _pvalue(counts: torch.Tensor, expected_probs: torch.Tensor) -> float:
    expected = expected_probs.double() / expected_probs.double().sum() * counts.sum().double()
    return float(chisquare(counts.double().numpy(), expected.numpy()).pvalue)


def test_first_token_follows_p_exactly(random_rows):
    p, q = random_rows
    counts = _first_token_counts(p, q, lenience=1.0, samples=20_000, k=2)
    assert _pvalue(counts, p[0]) > 1e-3


def test_lenience_is_detected_as_a_different_distribution(random_rows):
    p, q = random_rows
    counts = _first_token_counts(p, q, lenience=0.5, samples=20_000, k=2)
    assert _pvalue(counts, p[0]) < 1e-6


def test_a_truncated_q_keeps_the_first_token_exactly_p(random_rows):
    """A draft that samples from its own top-N (draft_service.drafter) returns that truncated q: still exact."""
    p, q = random_rows
    top2 = torch.zeros_like(q).scatter(-1, q.topk(2).indices, q.topk(2).values)
    counts = _first_token_counts(p, top2 / top2.sum(-1, keepdim=True), lenience=1.0, samples=20_000, k=2)
    assert _pvalue(counts, p[0]) > 1e-3


def test_the_uniforms_drawn_are_the_accept_tests_then_the_corrections():
    first = draw_uniforms(3, False, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    assert torch.equal(first.accept, torch.rand(3, generator=generator))
    assert first.correct == float(torch.rand(1, generator=generator, dtype=torch.float64))
    greedy = draw_uniforms(3, True, generator)
    assert greedy.accept.numel() == 0 and greedy.correct == 0.0


@pytest.mark.parametrize("lenience", [1.0, 0.6])
def test_the_target_given_the_score_requests_rows_and_uniforms_gives_the_one_process_steps_tokens(lenience):
    """The orchestrator's draws and the draft's rows reach the target through a ScoreRequest (float32 u_i, a
    double for the correction's quantile, q as ProbRows) unchanged: its step gives the one-process step's
    tokens, seed for seed."""
    generator = torch.Generator().manual_seed(3)
    for seed in range(200):
        p = (2 * torch.randn(4, 7, generator=generator)).softmax(-1)
        q = (2 * torch.randn(3, 7, generator=generator)).softmax(-1)
        x = torch.stack([torch.multinomial(q[i], 1, generator=generator)[0] for i in range(3)])
        whole = step(x, q, p, torch.Generator().manual_seed(seed), lenience=lenience)

        drawn = draw_uniforms(3, False, torch.Generator().manual_seed(seed))
        request = target_pb2.ScoreRequest.FromString(target_pb2.ScoreRequest(
            draft_probs=encode_rows(q), uniforms=drawn.accept.tolist(), correction_uniform=drawn.correct,
        ).SerializeToString())
        received_q, received = check_sampled_step(request.draft_probs, request.uniforms, request.correction_uniform,
                                                  draft_ids=x.tolist(), vocab_size=7)
        assert accept_correct(x, received_q, p, received, greedy=False, lenience=lenience) == whole

"""target_service over real gRPC on loopback: a Score runs the whole accept/correct step on the target's
rows with the caller's uniforms and q rows, and answers the token after the accepted drafts, no row of p;
sampling inputs that do not fit are INVALID_ARGUMENT, each saying what to send."""

from __future__ import annotations

import math
import re

import grpc
import numpy as np
import pytest
import torch

from specdec.runtime.sampling import SamplingParams, target_distribution
from specdec.runtime.speculative import Uniforms, accept_correct, draw_uniforms
from specdec.runtime.validation import sampling_to_proto
from specdec.runtime.wire import decode_rows, encode_rows
from specdec.v1 import common_pb2, target_pb2
from tests.target_service.loopback import Stub, with_target

PROMPT = [1, 2, 3, 4, 5, 6, 7, 1, 2, 3]
DRAFTS = [4, 5, 6]
VOCAB = 8
SAMPLED = SamplingParams(temperature=1.0)


def sampled_score(q: common_pb2.ProbRows, uniforms: Uniforms, session_id: str = "s", drafts: list[int] = DRAFTS):
    return target_pb2.ScoreRequest(
        session_id=session_id, token_ids=PROMPT, draft_token_ids=drafts, sampling=sampling_to_proto(SAMPLED),
        draft_probs=q, uniforms=uniforms.accept.tolist(), correction_uniform=uniforms.correct,
    )


def random_q() -> common_pb2.ProbRows:
    return encode_rows((2 * torch.randn(len(DRAFTS), VOCAB, generator=torch.Generator().manual_seed(0))).softmax(-1))


def one_hot_q() -> common_pb2.ProbRows:
    """Prompt lookup's: one-hot at each draft, max id + 1 wide (narrower than the vocabulary)."""
    return encode_rows(torch.nn.functional.one_hot(torch.tensor(DRAFTS), max(DRAFTS) + 1).float())


@pytest.mark.parametrize("q", [random_q(), one_hot_q()], ids=["random", "one-hot"])
def test_a_sampled_score_is_accept_correct_with_the_callers_uniforms_and_reproducible(tiny_target, reference, q):
    p = target_distribution(reference.run(PROMPT + DRAFTS)[0][len(PROMPT) - 1 :], SAMPLED)  # [k+1, V]
    q_rows = decode_rows(q, VOCAB)

    async def test(stub: Stub) -> None:
        outcomes = set()
        for seed in range(40):
            uniforms = draw_uniforms(len(DRAFTS), False, torch.Generator().manual_seed(seed))
            want = accept_correct(torch.tensor(DRAFTS), q_rows, p, uniforms, greedy=False, lenience=1.0)
            replies = [await stub.Score(sampled_score(q, uniforms, session_id)) for session_id in ("s", "other")]
            for reply in replies:
                assert (reply.num_accepted, reply.next_token) == (want.num_accepted, want.tokens[-1]), seed
            outcomes.add((replies[0].num_accepted, replies[0].next_token))
        assert len(outcomes) > 3  # the uniforms decide: not one answer whatever they are

    with_target(tiny_target, test)


def test_a_greedy_score_answers_the_targets_argmax_and_reads_no_rows(tiny_target, reference):
    accepted = int(reference.run(PROMPT)[0][-1].argmax())
    after = reference.run(PROMPT + [accepted])[0][-1]
    rejected = int(after.argmin())

    async def test(stub: Stub) -> None:
        reply = await stub.Score(target_pb2.ScoreRequest(session_id="g", token_ids=PROMPT, draft_token_ids=[]))
        assert reply.num_accepted == 0 and reply.next_token == accepted
        # Sampling's fields, even malformed, mean nothing to a greedy step.
        junk = common_pb2.ProbRows(num_rows=5, dense=b"\0")
        reply = await stub.Score(target_pb2.ScoreRequest(session_id="g", token_ids=PROMPT, draft_token_ids=[
            accepted, rejected], draft_probs=junk, uniforms=[2.0]))
        assert reply.num_accepted == 1 and reply.next_token == int(after.argmax())

    with_target(tiny_target, test)


def _sparse(lengths: list[int], ids: list[int], probs: list[float], vocab_size: int = VOCAB) -> common_pb2.ProbRows:
    return common_pb2.ProbRows(
        num_rows=len(lengths), vocab_size=vocab_size, sparse_row_lengths=np.array(lengths, "<i4").tobytes(),
        sparse_token_ids=np.array(ids, "<i4").tobytes(), sparse_probs=np.array(probs, "<f4").tobytes(),
    )


FINE = Uniforms(torch.tensor([0.5, 0.5, 0.5]), 0.5)
BAD_STEPS = [
    (random_q(), Uniforms(torch.tensor([0.5]), 0.5), "uniforms and draft_probs rows .* 3 draft tokens; got 1 and 3"),
    (None, FINE, "got 3 and 0"),
    (encode_rows(torch.full((4, VOCAB), 1 / VOCAB)), FINE, "got 3 and 4"),
    (random_q(), Uniforms(torch.tensor([0.5, 1.0, 0.5]), 0.5), r"must be in \[0, 1\)"),
    (random_q(), Uniforms(FINE.accept, 1.0), r"correction_uniform must be in \[0, 1\)"),
    (random_q(), Uniforms(FINE.accept, math.nan), r"correction_uniform must be in \[0, 1\)"),
    (encode_rows(torch.full((3, VOCAB + 1), 1 / (VOCAB + 1))), FINE, "wider than the vocabulary"),
    (_sparse([9, 1, 1], [4] * 9 + [5, 6], [0.1] * 11), FINE, "9 entries, more than the 8 tokens"),
    (common_pb2.ProbRows(num_rows=3, vocab_size=VOCAB, dense=b"\0" * 7), FINE, "draft_probs: malformed"),
    (_sparse([1, 1, 1], [4, 5, 7], [1.0] * 3), FINE, "row 2 gives draft token 6 probability 0"),
    (_sparse([1, 1, 1], [4, 5, 6], [1.0, 2.0, 1.0]), FINE, r"probabilities, in \[0, 1\]"),
    (_sparse([1, 1, 1], [4, 5, 6], [1.0, math.nan, 1.0]), FINE, r"probabilities, in \[0, 1\]"),
]


def test_sampling_inputs_that_do_not_fit_the_drafts_are_invalid_argument(tiny_target):
    async def test(stub: Stub) -> None:
        for q, uniforms, words in BAD_STEPS:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Score(sampled_score(q, uniforms))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, words
            assert re.search(words, caught.value.details()), (words, caught.value.details())

    with_target(tiny_target, test)

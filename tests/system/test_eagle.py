"""The EAGLE head through the real services: the target sends its features, the draft drafts from them,
and the output is still exactly the target's (a random head on the tiny target; test_exactness's
chi-square test, greedy equality), across a draft replica killed mid-stream too."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from specdec.runtime.sampling import SamplingParams
from specdec.v1 import draft_pb2, draft_pb2_grpc
from tests.stack import Stack
from tests.system.test_exactness import SAMPLES, chi_square_pvalue, exact_joint, sampled_joint
from tests.system.test_faults import LONG, collect, collect_all, plain, request


@pytest.fixture(scope="module")
def eagle_stack(tiny_target, tiny_eagle):
    stack = Stack(str(tiny_target), str(tiny_eagle), threads=1)
    yield stack
    stack.close()


def test_the_draft_says_it_drafts_from_the_target_features(eagle_stack):
    with grpc.insecure_channel(eagle_stack.draft_address) as channel:
        info = draft_pb2_grpc.DraftStub(channel).GetModelInfo(draft_pb2.DraftGetModelInfoRequest()).info
    assert info.feature_size == 16 and info.vocab_size == 8


@pytest.mark.parametrize("params", [SamplingParams(temperature=1.0), SamplingParams(temperature=0.7, top_k=4)],
                         ids=["temperature 1", "temperature 0.7, top-k 4"])
def test_speculative_sampling_with_the_head_matches_the_target_distribution(eagle_stack, tiny_target, params):
    exact = exact_joint(tiny_target, params)
    counts, _ = asyncio.run(sampled_joint(eagle_stack.address, params, "model", 2, exact.shape[0]))
    assert counts.sum() == SAMPLES
    assert chi_square_pvalue(counts, exact) > 1e-3


@pytest.mark.parametrize("k", [1, 3, 0], ids=["k=1", "k=3", "adaptive k"])
def test_greedy_with_the_head_is_the_target_own_output(eagle_stack, k):
    expected = plain(eagle_stack, 60)
    tokens, last = asyncio.run(collect(eagle_stack.address, request(max_new_tokens=60, draft="model",
                                                                     num_speculative_tokens=k)))
    assert tokens == expected
    assert last.stats.drafted_tokens > 0 and last.stats.draft == "model"
    assert last.stats.wire_bytes > 0


def test_a_draft_replica_killed_mid_stream_the_other_catches_up_on_features(tiny_target, tiny_eagle):
    stack = Stack(str(tiny_target), str(tiny_eagle), threads=1, draft_replicas=2)
    try:
        expected = plain(stack)

        outputs = asyncio.run(collect_all(
            stack.address, [request(max_new_tokens=LONG, draft="model", num_speculative_tokens=2)] * 2,
            stack.processes["draft-1"].kill,
        ))
    finally:
        stack.close()
    assert [tokens for tokens, _ in outputs] == [expected, expected]
    # Both streams kept drafting (2 per iteration, an iteration commits at most 3 tokens): the stream
    # whose replica died went on with the other, which asked for the session's features.
    assert all(last.stats.drafted_tokens > LONG / 2 for _, last in outputs)

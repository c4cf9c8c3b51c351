"""draft_service.servicer: what the n-gram drafter accepts (found by tests/fuzz/test_fuzz_model_services.py:
negative ids answered INTERNAL, and a huge id made q rows that wide)."""

from __future__ import annotations

import asyncio

import pytest

from draft_service.servicer import NGRAM_MAX_CONTEXT, NGRAM_MAX_VOCAB, DraftServicer
from specdec.runtime.errors import InvalidArgument
from specdec.runtime.hosted_model import HostedModel, ModelOptions
from specdec.runtime.serving import Draining
from specdec.v1 import common_pb2, draft_pb2

SAMPLED = common_pb2.SamplingParams(temperature=1.0)  # the reply carries q rows


def propose(servicer: DraftServicer, token_ids: list[int], k: int = 2) -> draft_pb2.ProposeResponse:
    request = draft_pb2.ProposeRequest(token_ids=token_ids, num_tokens=k, sampling=SAMPLED,
                                       method=draft_pb2.DRAFT_METHOD_NGRAM)
    return asyncio.run(servicer.Propose(request, None))


@pytest.mark.parametrize("token_ids, words", [
    ([-1, -1], r"token ids must be in \[0, 262144\); got -1..-1"),
    ([2**31 - 1, 2**31 - 1], r"token ids must be in \[0, 262144\); got 2147483647..2147483647"),
    ([1] * (NGRAM_MAX_CONTEXT + 1), "exceed the model's context"),
])
def test_ngram_only_draft_bounds_ids_and_length(token_ids, words):
    with pytest.raises(InvalidArgument, match=words):
        propose(DraftServicer(None, Draining()), token_ids)


def test_ngram_only_draft_still_proposes_ids_of_large_vocabularies():
    reply = propose(DraftServicer(None, Draining()), [NGRAM_MAX_VOCAB - 1, 5, NGRAM_MAX_VOCAB - 1])
    assert list(reply.token_ids) == [5, NGRAM_MAX_VOCAB - 1]


def test_ngram_proposals_beside_a_model_use_its_vocabulary_and_context(tiny_draft):
    servicer = DraftServicer(HostedModel.load(str(tiny_draft), ModelOptions()), Draining())
    assert list(propose(servicer, [1, 2, 1]).token_ids) == [2, 1]
    with pytest.raises(InvalidArgument, match=r"token ids must be in \[0, 8\); got 1..8"):
        propose(servicer, [8, 1, 8])

"""draft_service with a model, sampling: x_i is drawn from the top SAMPLED_DRAFT_TOP_N of the processed
distribution, renormalised, and that truncated row is the q_i the reply carries, sparse on the wire."""

from __future__ import annotations

import asyncio

import torch
from transformers import AutoModelForCausalLM

from draft_service.drafter import SAMPLED_DRAFT_TOP_N
from draft_service.servicer import DraftServicer
from specdec.runtime.hosted_model import HostedModel, ModelOptions
from specdec.runtime.sampling import SamplingParams, sampling_probs, truncate_top_n
from specdec.runtime.serving import Draining
from specdec.runtime.wire import decode_rows
from specdec.v1 import common_pb2, draft_pb2

PROMPT = [5, 900, 17, 4000, 2]


def test_sampled_q_rows_are_the_truncated_rows_the_drafts_come_from_and_go_sparse(wide_draft):
    servicer = DraftServicer(HostedModel.load(str(wide_draft), ModelOptions(cache_mb=16)), Draining())
    request = draft_pb2.ProposeRequest(session_id="s", token_ids=PROMPT, num_tokens=3, seed=11,
                                       sampling=common_pb2.SamplingParams(temperature=1.5),
                                       method=draft_pb2.DRAFT_METHOD_MODEL)
    reply, again = (asyncio.run(servicer.Propose(request, None)) for _ in range(2))
    assert reply.token_ids == again.token_ids  # the seed's (a cached pass rounds the rows a little differently)
    assert not reply.probs.dense and reply.probs.ByteSize() < 3 * SAMPLED_DRAFT_TOP_N * 8 + 64

    q = decode_rows(reply.probs, 4096)  # [3, V]
    drafts = list(reply.token_ids)
    model = AutoModelForCausalLM.from_pretrained(wide_draft).eval()
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([PROMPT + drafts])).logits[0, len(PROMPT) - 1 : -1]  # [3, V]
    want = truncate_top_n(sampling_probs(logits, SamplingParams(temperature=1.5)), SAMPLED_DRAFT_TOP_N)
    torch.testing.assert_close(q, want, atol=1e-5, rtol=1e-4)
    assert (q > 0).sum(-1).tolist() == [SAMPLED_DRAFT_TOP_N] * 3 and bool((q[range(3), drafts] > 0).all())
    torch.testing.assert_close(q.sum(-1), torch.ones(3))

"""FR-Spec's vocabulary slice on an LM draft: the same logits on the slice, -inf elsewhere, served for real."""

from __future__ import annotations

import grpc
import torch
from transformers import AutoModelForCausalLM

from specdec.cli.launcher import stop_process, wait_healthy
from specdec.runtime import precision
from specdec.runtime.vocab_slice import apply_vocab_slice
from specdec.runtime.wire import decode_rows
from specdec.v1 import common_pb2, draft_pb2, draft_pb2_grpc
from tests.stack import start_service

SLICE = list(range(1, 8))  # tiny_eagle's: every token of the tiny vocabulary but <eos> (0)


def test_the_sliced_output_layer_scores_the_slice_alone(tiny_draft):
    full = AutoModelForCausalLM.from_pretrained(tiny_draft).eval()
    sliced = AutoModelForCausalLM.from_pretrained(tiny_draft).eval()
    apply_vocab_slice(sliced, torch.tensor([2, 5, 6]))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():
        want, got = full(input_ids=ids).logits, sliced(input_ids=ids).logits
    assert got.shape == want.shape
    assert torch.allclose(got[..., [2, 5, 6]], want[..., [2, 5, 6]], atol=1e-6)
    assert torch.isinf(got[..., [0, 1, 3, 4, 7]]).all()
    precision.apply(sliced, precision.Precision("int8"))  # the slice's own linear is quantized like any
    with torch.inference_mode():
        assert torch.isinf(sliced(input_ids=ids).logits[..., 0]).all()


def test_a_draft_service_with_a_slice_drafts_inside_it(tiny_draft, tiny_eagle):
    process, address = start_service("draft", "--model", str(tiny_draft), "--vocab-slice", str(tiny_eagle),
                                     "--threads", "1")
    try:
        wait_healthy("draft", address, process, timeout_s=120)
        with grpc.insecure_channel(address) as channel:
            reply = draft_pb2_grpc.DraftStub(channel).Propose(draft_pb2.ProposeRequest(
                session_id="s", token_ids=[1, 2, 3], num_tokens=6, method=draft_pb2.DRAFT_METHOD_MODEL, seed=3,
                sampling=common_pb2.SamplingParams(temperature=1.5)), timeout=60)
    finally:
        stop_process(process)
    q = decode_rows(reply.probs, 8)
    assert len(reply.token_ids) == 6 and set(reply.token_ids) <= set(SLICE)
    assert torch.all(q[:, 0] == 0) and torch.allclose(q.sum(-1), torch.ones(6))

"""`--compile`: the compiled forward pass gives the eager pass's logits for every kind of pass the services send."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from specdec.runtime.cached_lm import Step
from specdec.runtime.hosted_model import compile_forward
from specdec.runtime.slot_lm import SlotLM

BATCHES = [
    [Step("a", [1, 2, 3, 4, 5, 6, 7], 1)],
    [Step("a", [1, 2, 3, 4, 5, 6, 7, 1], 1)],
    [Step("a", [1, 2, 3, 4, 5, 6, 7, 1, 2, 3], 3)],
    [Step("a", [1, 2, 3, 4, 5, 6, 7, 1, 2, 4], 2), Step("b", [3, 2, 1], 1)],
]


def _logits(lm: SlotLM) -> list[torch.Tensor]:
    out = [output.logits for batch in BATCHES for output in lm.forward(batch)]
    for session_id in ("a", "b"):
        lm.end_session(session_id)
    return out


def test_compiled_forward_matches_eager(tiny_target):
    lm = SlotLM(AutoModelForCausalLM.from_pretrained(tiny_target).eval(), 1 << 20, capacity=64)
    eager = _logits(lm)
    compile_forward(lm)
    assert isinstance(lm.model, torch._dynamo.eval_frame.OptimizedModule)
    for want, got in zip(eager, _logits(lm), strict=True):
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)

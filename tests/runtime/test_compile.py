"""`--compile`: the compiled forward pass gives the eager pass's logits (and features, read by a hook on the
decoder) for every kind of pass the services send."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from specdec.runtime.cached_lm import Step
from specdec.runtime.hosted_model import compile_forward
from specdec.runtime.slot_lm import SlotLM

BATCHES = [
    [Step("a", [1, 2, 3, 4, 5, 6, 7], 1)],
    [Step("a", [1, 2, 3, 4, 5, 6, 7, 1], 1)],
    [Step("a", [1, 2, 3, 4, 5, 6, 7, 1, 2, 3], 3, num_features=4)],
    [Step("a", [1, 2, 3, 4, 5, 6, 7, 1, 2, 4], 2), Step("b", [3, 2, 1], 1, num_features=1)],
]


def _outputs(lm: SlotLM) -> list[torch.Tensor]:
    out = [row for batch in BATCHES for output in lm.forward(batch) for row in (output.logits, output.features)
           if row is not None]
    for session_id in ("a", "b"):
        lm.end_session(session_id)
    return out


def test_compiled_forward_matches_eager(tiny_target):
    lm = SlotLM(AutoModelForCausalLM.from_pretrained(tiny_target).eval(), 1 << 20, capacity=64)
    eager = _outputs(lm)
    compile_forward(lm)
    assert isinstance(lm.model, torch._dynamo.eval_frame.OptimizedModule)
    for want, got in zip(eager, _outputs(lm), strict=True):
        tolerance = 1e-4 if want.dtype == torch.float32 else 1e-3  # features travel as float16
        assert torch.allclose(got.float(), want.float(), atol=tolerance, rtol=tolerance)

"""FR-Spec's vocabulary slice (Zhao et al. 2025) for a draft LM: its output layer scores only the target's
most frequent output tokens, and every other token gets -inf, so q is zero there.

The output layer is most of a small draft's compute (the shipped LM draft: 49,152 x 128 of its 7 M weights),
and a slice of 8,192 tokens keeps ~95% of the default target's answer tokens. Exact, as every truncation the
draft samples from is: q is the distribution the draft sampled from, and the accept rule holds for any q.
The slice's ids come from an EAGLE head (`specdec distill --method eagle` ranks them on the target's data).
"""

from __future__ import annotations

import torch
from torch import nn


class SlicedOutput(nn.Module):
    """An output layer over `ids` only: [..., d] -> [..., V] logits, -inf outside the slice."""

    def __init__(self, full: nn.Linear, ids: torch.Tensor) -> None:
        super().__init__()
        self.out_features = full.out_features  # the vocabulary the logits still span
        self.sliced = nn.Linear(full.in_features, len(ids), bias=full.bias is not None,
                                device=full.weight.device, dtype=full.weight.dtype)
        with torch.no_grad():
            self.sliced.weight.copy_(full.weight[ids])
            if full.bias is not None:
                self.sliced.bias.copy_(full.bias[ids])
        self.register_buffer("ids", ids.to(full.weight.device))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        scores = self.sliced(hidden)
        out = scores.new_full((*scores.shape[:-1], self.out_features), float("-inf"))
        return out.index_copy_(-1, self.ids, scores)


def apply_vocab_slice(model, ids: torch.Tensor) -> None:
    """Replaces the model's output layer with its slice (the input embeddings stay whole, tied or not)."""
    full = model.get_output_embeddings()
    if ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < full.out_features:
        raise ValueError(f"the vocabulary slice has ids outside the model's {full.out_features} tokens")
    model.config.tie_word_embeddings = False  # keep transformers from tying the new layer back
    model.set_output_embeddings(SlicedOutput(full, ids.long()))

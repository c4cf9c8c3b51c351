"""The draft shipped for the default target, found as package data of specdec.default_models."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from specdec.default_models import shipped_draft_dir


def test_shipped_draft_loads_and_shares_the_default_tokenizer(default_model):
    draft_dir = shipped_draft_dir()
    size = sum(f.stat().st_size for f in draft_dir.iterdir() if f.is_file())
    assert size <= 25 * 1024 * 1024, f"shipped draft is {size / 2**20:.1f} MiB"
    assert (draft_dir / "README.md").exists()
    draft = AutoModelForCausalLM.from_pretrained(draft_dir, dtype=torch.float32)
    assert AutoTokenizer.from_pretrained(draft_dir).get_vocab() == AutoTokenizer.from_pretrained(default_model).get_vocab()
    target_config = AutoModelForCausalLM.from_pretrained(default_model).config
    assert draft.config.vocab_size == target_config.vocab_size
    with torch.inference_mode():
        logits = draft(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, target_config.vocab_size) and torch.isfinite(logits).all()

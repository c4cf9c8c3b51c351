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


def test_shipped_eagle_head_fits_the_default_target(default_model):
    from specdec.default_models import SHIPPED_EAGLE
    from specdec.runtime.eagle_head import eagle_dir, load_eagle

    head_dir = shipped_draft_dir(SHIPPED_EAGLE)
    size = sum(f.stat().st_size for f in head_dir.iterdir() if f.is_file())
    assert size <= 25 * 1024 * 1024, f"shipped head is {size / 2**20:.1f} MiB"
    assert (head_dir / "README.md").exists() and eagle_dir("default-eagle") == head_dir
    assert AutoTokenizer.from_pretrained(head_dir).get_vocab() == AutoTokenizer.from_pretrained(default_model).get_vocab()
    head, context = load_eagle(head_dir, "cpu")
    target = AutoModelForCausalLM.from_pretrained(default_model)
    assert head.config.hidden_size == target.config.hidden_size and context == target.config.max_position_embeddings
    # Fed the target's own features, the head's first draft is often the target's next token.
    text = "The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is Madrid."
    ids = torch.tensor([AutoTokenizer.from_pretrained(head_dir)(text)["input_ids"]])
    with torch.inference_mode():
        features = target.model(input_ids=ids).last_hidden_state
        previous = torch.cat([torch.zeros_like(features[:, :1]), features[:, :-1]], dim=1)
        g = head.unrolled(previous, ids, 1)[0]
        agree = (head.full_logits(g[0]).argmax(-1)[1:] == target(input_ids=ids).logits[0, 1:].argmax(-1)).float()
    assert torch.isfinite(g).all() and agree.mean() >= 0.2, agree  # 0.30 measured; a random head: ~0

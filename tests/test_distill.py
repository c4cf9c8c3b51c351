"""`specdec distill` end to end on a tiny random target, and the shipped draft for the default target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from specdec import cli
from tests.tiny_models import char_tokenizer, save_tiny_lm

SHIPPED_DRAFT = Path(__file__).resolve().parents[1] / "models" / "smollm2-135m-draft"


def _distill(target: Path, out: Path, prompts: Path, steps: int, eval_prompts: Path | None = None) -> None:
    argv = ["distill", "--target", str(target), "--out", str(out), "--prompts", str(prompts),
            "--gen-batch-size", "4", "--max-new-tokens", "12", "--passes", "0,1.0", "--hidden", "8", "--heads", "2",
            "--kv-heads", "1", "--intermediate", "16", "--layers", "1", "--batch-tokens", "32", "--max-steps", str(steps),
            "--minutes", "10", "--export-dtype", "float32", "--threads", "1"]
    if eval_prompts:
        argv += ["--eval-prompts", str(eval_prompts), "--eval-tokens", "8"]
    cli.main(argv)


def test_distill_trains_resumes_and_exports(tmp_path, capsys):
    tokenizer = char_tokenizer("abcdefghij ")
    target = save_tiny_lm(tmp_path / "target", tokenizer, seed=3, hidden=16, layers=1)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(["abc", "hello", "a big cab", "jig", "feed", "bad egg", "fig", "ace"]) + "\n")
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text("".join(json.dumps({"messages": [{"role": "user", "content": c}]}) + "\n" for c in ("dab", "gab")))
    out = tmp_path / "draft"

    _distill(target, out, prompts, steps=3)
    work = out / ".distill"
    assert len(list((work / "data").glob("shard-*.pt"))) == 4  # 8 prompts x 2 passes / batch 4
    assert torch.load(work / "checkpoint.pt", weights_only=False)["state"]["step"] == 3
    capsys.readouterr()

    _distill(target, out, prompts, steps=6, eval_prompts=held_out)  # resumes: data done, training at step 3
    printed = capsys.readouterr().out
    assert "all 4 data shards already" in printed
    assert "resuming from" in printed and "at step 3" in printed
    assert torch.load(work / "checkpoint.pt", weights_only=False)["state"]["step"] == 6

    draft = AutoModelForCausalLM.from_pretrained(out)
    assert type(draft).__name__ == "LlamaForCausalLM"
    assert draft.config.vocab_size == len(tokenizer)
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(target).get_vocab()
    assert list(out.glob("*.safetensors"))
    card = (out / "README.md").read_text()
    assert "greedy acceptance" in card and "Data provenance" in card and "specdec distill" in card
    metrics = json.loads((work / "metrics.json").read_text())
    assert 0.0 <= metrics["greedy_acceptance"] <= 1.0 and metrics["c"] > 0


def test_shipped_draft_loads_and_shares_the_default_tokenizer(default_model):
    if not (SHIPPED_DRAFT / "config.json").exists():
        pytest.skip("no draft shipped under models/smollm2-135m-draft")
    size = sum(f.stat().st_size for f in SHIPPED_DRAFT.iterdir() if f.is_file())
    assert size <= 25 * 1024 * 1024, f"shipped draft is {size / 2**20:.1f} MiB"
    assert (SHIPPED_DRAFT / "README.md").exists()
    draft = AutoModelForCausalLM.from_pretrained(SHIPPED_DRAFT, dtype=torch.float32)
    assert AutoTokenizer.from_pretrained(SHIPPED_DRAFT).get_vocab() == AutoTokenizer.from_pretrained(default_model).get_vocab()
    target_config = AutoModelForCausalLM.from_pretrained(default_model).config
    assert draft.config.vocab_size == target_config.vocab_size
    with torch.inference_mode():
        logits = draft(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, target_config.vocab_size) and torch.isfinite(logits).all()

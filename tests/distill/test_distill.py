"""`specdec distill` end to end on a tiny random target."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from specdec.cli.main import main
from tests.tiny_models import char_tokenizer, save_tiny_lm


def _distill(target: Path, out: Path, prompts: Path, steps: int, eval_prompts: Path | None = None) -> None:
    argv = ["distill", "--target", str(target), "--out", str(out), "--prompts", str(prompts),
            "--gen-batch-size", "4", "--max-new-tokens", "12", "--passes", "0,1.0", "--hidden", "8", "--heads", "2",
            "--kv-heads", "1", "--intermediate", "16", "--layers", "1", "--batch-tokens", "32", "--max-steps", str(steps),
            "--minutes", "10", "--export-dtype", "float32", "--threads", "1"]
    if eval_prompts:
        argv += ["--eval-prompts", str(eval_prompts), "--eval-tokens", "8"]
    main(argv)


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
    assert torch.load(work / "checkpoint.pt", weights_only=True)["state"]["step"] == 3
    capsys.readouterr()

    _distill(target, out, prompts, steps=6, eval_prompts=held_out)  # resumes: data done, training at step 3
    printed = capsys.readouterr().out
    assert "all 4 data shards already" in printed
    assert "resuming from" in printed and "at step 3" in printed
    assert torch.load(work / "checkpoint.pt", weights_only=True)["state"]["step"] == 6

    draft = AutoModelForCausalLM.from_pretrained(out)
    assert type(draft).__name__ == "LlamaForCausalLM"
    assert draft.config.vocab_size == len(tokenizer)
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(target).get_vocab()
    assert list(out.glob("*.safetensors"))
    card = (out / "README.md").read_text()
    assert "greedy acceptance" in card and "Data provenance" in card and "specdec distill" in card
    metrics = json.loads((work / "metrics.json").read_text())
    assert 0.0 <= metrics["greedy_acceptance"] <= 1.0 and metrics["c"] > 0

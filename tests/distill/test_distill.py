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


def test_distill_eagle_trains_resumes_and_exports_a_loadable_head(tmp_path, capsys):
    from specdec.runtime.eagle_head import is_eagle_dir, load_head

    tokenizer = char_tokenizer("abcdefghij ")
    target = save_tiny_lm(tmp_path / "target", tokenizer, seed=3, hidden=16, layers=1)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(["abc", "hello", "a big cab", "jig"]) + "\n")
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text(json.dumps({"messages": [{"role": "user", "content": "dab"}]}) + "\n")
    out = tmp_path / "head"
    argv = ["distill", "--method", "eagle", "--target", str(target), "--out", str(out), "--prompts", str(prompts),
            "--gen-batch-size", "4", "--max-new-tokens", "12", "--passes", "0", "--slice-size", "8",
            "--batch-tokens", "32", "--minutes", "10", "--export-dtype", "float32", "--threads", "1"]
    main(argv + ["--max-steps", "2", "--stage", "train"])
    work = out / ".distill"
    assert len(list((work / "data").glob("features-*.pt"))) == 1  # one shard's features, stored once
    capsys.readouterr()
    main(argv + ["--max-steps", "4", "--eval-prompts", str(held_out), "--eval-tokens", "8"])
    assert "resuming from" in capsys.readouterr().out
    assert torch.load(work / "checkpoint.pt", weights_only=True)["state"]["step"] == 4

    assert is_eagle_dir(out)
    head = load_head(out)
    assert head.config.slice_size == 8 and head.config.vocab_size == len(tokenizer)
    metrics = json.loads((work / "metrics.json").read_text())
    assert 0.0 <= metrics["acceptance_pos1"] <= 1.0 and metrics["c"] > 0 and 0 < metrics["slice_coverage"] <= 1
    card = (out / "README.md").read_text()
    assert "acceptance at drafted position 1" in card and "--method eagle" in card

"""Training the draft for `specdec distill`: a narrow stock LlamaForCausalLM on stored teacher logits.

The draft shares the target's vocabulary and ties its input and output embeddings, so its
output layer costs V x hidden (49,152 x 128 floats = 25 MB for SmolLM2, against 113 MB for the
target's). The embeddings start as the target's embedding matrix projected on its top `hidden`
right singular vectors: the draft's output layer then scores tokens in the subspace that carries
most of the target's own output layer, and the final norm starts at the scale the target's final
hidden states have in that subspace. Training only teaches the layers (and fine-tunes the
embeddings) to map a prefix to the target's next-token choice.

Loss per answer position (the target's own text, stored by data.py):
    hard_weight * CE(draft, target argmax) + soft_weight * CE(softmax(target top-k logits), draft)
with the draft's log-softmax over the full vocabulary. The state (weights, AdamW, step, time
used, data order) is checkpointed atomically to WORK/checkpoint.pt and a rerun resumes from it.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import LlamaConfig, LlamaForCausalLM


@dataclass(frozen=True)
class DraftConfig:
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 512
    max_context: int = 0


@dataclass(frozen=True)
class TrainOptions:
    minutes: float = 30.0
    max_steps: int = 0
    batch_tokens: int = 2048
    lr: float = 3e-3
    hard_weight: float = 1.0
    soft_weight: float = 1.0
    checkpoint_every_s: float = 60.0
    seed: int = 0
    embed_lr_scale: float = 0.3  # the embeddings start good (projected from the target): move them slower
    warmup_steps: int = 30
    val_every: int = 25  # every 25th answer is held out: agreement on it picks the exported weights
    bf16: bool = False  # autocast matmuls to bfloat16 (fast on CPUs with AMX and on GPUs)


def build_draft(target, config: DraftConfig) -> LlamaForCausalLM:
    tc = target.config.get_text_config()
    cfg = LlamaConfig(
        vocab_size=tc.vocab_size,
        hidden_size=config.hidden,
        intermediate_size=config.intermediate,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.kv_heads,
        head_dim=config.hidden // config.heads,
        max_position_embeddings=config.max_context or getattr(tc, "max_position_embeddings", 2048),
        rope_theta=getattr(tc, "rope_theta", None) or (getattr(tc, "rope_parameters", None) or {}).get("rope_theta", 10000.0),
        rms_norm_eps=getattr(tc, "rms_norm_eps", 1e-5),
        bos_token_id=tc.bos_token_id,
        eos_token_id=tc.eos_token_id,
        pad_token_id=getattr(tc, "pad_token_id", None),
        tie_word_embeddings=True,
        initializer_range=0.02,
    )
    return LlamaForCausalLM(cfg)


@torch.no_grad()
def init_from_target(target, draft, records: list[dict], device: str, n: int = 16) -> dict:
    """Ties the draft's embeddings to the target's, projected on the top principal directions of the
    target's final hidden states (measured on n answers), and sets the final norm to the per-direction
     as the target's head restricted to the
    subspace its hidden states use most (the final norm starts at 1). Returns how often that restricted head alone (fed the
    target's own projected hidden states) keeps the target's argmax, in-sample: an optimistic bound."""
    target = target.to(device)
    hidden_states, answers = [], []
    for record in records[:n]:
        ids = torch.tensor([record["prompt"] + record["answer"][:-1]], device=device)
        hidden_states.append(target.model(input_ids=ids).last_hidden_state[0, len(record["prompt"]) - 1 :].float())
        answers.append(torch.tensor(record["answer"]))
    hidden = torch.cat(hidden_states).cpu()  # [T, D]
    answer = torch.cat(answers)  # [T]
    _, _, vh = torch.linalg.svd(hidden, full_matrices=False)  # rows: principal directions (uncentered)
    width = draft.config.hidden_size
    projection = vh[:width].T.contiguous()  # [D, h]
    embedding = target.get_input_embeddings().weight.detach().float().cpu() @ projection  # [V, h]
    z = hidden @ projection  # [T, h] the target's final hidden states in the subspace
    draft.get_input_embeddings().weight.copy_(embedding)
    draft.tie_weights()
    draft.model.norm.weight.fill_(1.0)  # the hidden states' own scale (z.pow(2).mean(0).sqrt()) learned 2x slower
    ceiling = float(((z @ embedding.T).argmax(-1) == answer).float().mean())
    return {"projected_head_agreement": ceiling, "positions": int(answer.numel()), "hidden_rms": float(z.pow(2).mean().sqrt())}


def _examples(records: list[dict]) -> list[tuple[list[int], int, torch.Tensor, torch.Tensor]]:
    out = []
    for r in records:
        out.append((r["prompt"] + r["answer"][:-1], len(r["prompt"]) - 1, r["topk_ids"].long(), r["topk_logits"].float()))
    return out


def _batches(examples: list, batch_tokens: int, rng: random.Random, size: Callable[[Any], int]):
    order = list(range(len(examples)))
    rng.shuffle(order)
    batch, tokens = [], 0
    for i in order:
        batch.append(examples[i])
        tokens += size(examples[i])
        if tokens >= batch_tokens:
            yield batch
            batch, tokens = [], 0
    if batch:
        yield batch


def _loss(draft, batch, device: str, options: TrainOptions) -> tuple[torch.Tensor, dict]:
    pad = draft.config.pad_token_id or 0
    width = max(len(ids) for ids, *_ in batch)
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    rows, cols = [], []
    for b, (ids, start, top_ids, _) in enumerate(batch):
        input_ids[b, : len(ids)] = torch.tensor(ids)  # right padding: causal attention never looks at it
        rows += [b] * top_ids.shape[0]
        cols += list(range(start, start + top_ids.shape[0]))
    top_ids = torch.cat([t for *_, t, _ in batch]).to(device)  # [N, K]
    top_logits = torch.cat([t for *_, t in batch]).to(device)  # [N, K]
    with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=options.bf16):
        hidden = draft.model(input_ids=input_ids.to(device)).last_hidden_state  # [B, S, h]
        hidden = hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]  # [N, h]
        logits = draft.lm_head(hidden)  # [N, V]
    logq = F.log_softmax(logits.float(), dim=-1)  # [N, V]
    hard = -logq.gather(1, top_ids[:, :1]).mean()
    p = F.softmax(top_logits, dim=-1)  # [N, K] the target's top-k distribution
    soft = -(p * logq.gather(1, top_ids)).sum(-1).mean()
    with torch.no_grad():
        acc = (logits.argmax(-1) == top_ids[:, 0]).float().mean()
    loss = options.hard_weight * hard + options.soft_weight * soft
    return loss, {"hard": float(hard.detach()), "soft": float(soft.detach()), "acc": float(acc), "tokens": top_ids.shape[0]}


def train(target, tokenizer, records: list[dict], config: DraftConfig, options: TrainOptions, work: Path,
          device: str) -> LlamaForCausalLM:
    torch.manual_seed(options.seed)
    draft = build_draft(target, config)
    info: dict = {}
    if not (work / "checkpoint.pt").exists():
        info = init_from_target(target, draft, records, device)
        print(f"distill: init: {json.dumps(info)}")
    embed = draft.get_input_embeddings().weight
    others = [p for p in draft.parameters() if p is not embed]
    groups = [{"params": [embed], "lr_scale": options.embed_lr_scale, "weight_decay": 0.0},
              {"params": others, "lr_scale": 1.0, "weight_decay": 0.01}]
    return fit(draft, _examples(records), lambda model, batch, dev: _loss(model, batch, dev, options), options, work,
               device, groups, asdict(config), info, size=lambda example: example[2].shape[0])


def fit(model: torch.nn.Module, examples: list, loss_fn: Callable, options: TrainOptions, work: Path, device: str,
        groups: list[dict], signature: dict, info: dict, size: Callable[[Any], int]) -> torch.nn.Module:
    """The training loop every draft shares: AdamW over `groups` (each with an lr_scale), warm-up and cosine
    decay over the time budget, a held-out slice whose agreement (the loss's "acc") picks the exported
    weights, and a checkpoint in `work` that a rerun with the same `signature` resumes from.
    loss_fn(model, batch, device) -> (loss, stats with "acc" and "tokens"); size(example) -> its tokens."""
    work.mkdir(parents=True, exist_ok=True)
    checkpoint_path = work / "checkpoint.pt"
    best_path = work / "best.pt"
    rng = random.Random(options.seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(groups, lr=options.lr, betas=(0.9, 0.98))
    state = {"step": 0, "seconds": 0.0, "tokens": 0, "epoch": 0, "config": signature, "init": info}
    if checkpoint_path.exists():
        saved = torch.load(checkpoint_path, weights_only=True, map_location=device)
        if saved["state"]["config"] != signature:
            raise SystemExit(f"distill: {checkpoint_path} is for {saved['state']['config']}, not {signature}; "
                             "use another --work or the same model flags")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        rng.setstate(saved["rng"])
        print(f"distill: resuming from {checkpoint_path} at step {state['step']} ({state['seconds'] / 60:.1f} min trained)")

    held_out = examples[:: options.val_every] if len(examples) >= 4 * options.val_every else []
    examples = [e for i, e in enumerate(examples) if not held_out or i % options.val_every]
    data_tokens = sum(size(e) for e in examples)
    budget_s = options.minutes * 60

    def progress() -> float:
        p = state["seconds"] / budget_s if budget_s > 0 else 0.0
        if options.max_steps:
            p = max(p, state["step"] / options.max_steps)
        return min(p, 1.0)

    def done() -> bool:
        return progress() >= 1.0

    def validate() -> float:
        if not held_out:
            return float("nan")
        model.eval()
        hits = total = 0
        with torch.no_grad():
            for batch in _batches(held_out, options.batch_tokens, random.Random(0), size):
                _, stats = loss_fn(model, batch, device)
                hits += stats["acc"] * stats["tokens"]
                total += stats["tokens"]
        model.train()
        return hits / total

    def save() -> None:
        state["val_acc"] = validate()
        if held_out and state["val_acc"] > state.get("best_val_acc", -1.0):
            state["best_val_acc"], state["best_step"] = state["val_acc"], state["step"]
            tmp = best_path.with_suffix(".tmp")
            torch.save(model.state_dict(), tmp)
            os.replace(tmp, best_path)
        print(f"\ndistill: step {state['step']}: held-out agreement with the target's argmax {state['val_acc']:.3f} "
              f"(best {state.get('best_val_acc', float('nan')):.3f} at step {state.get('best_step')})", flush=True)
        tmp = checkpoint_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
                    "rng": rng.getstate()}, tmp)
        os.replace(tmp, checkpoint_path)

    trained = sum(p.numel() for group in groups for p in group["params"])
    print(f"distill: training {trained / 1e6:.2f} M parameters on {len(examples)} answers "
          f"({data_tokens} tokens), {options.batch_tokens} tokens/step, budget {options.minutes:g} min"
          + (f" / {options.max_steps} steps" if options.max_steps else "") + f", device {device}")
    bar = tqdm(total=100, initial=int(100 * progress()), desc="distill: training", unit="%", dynamic_ncols=True)
    last_save = time.monotonic()
    ema = None
    while not done():
        for batch in _batches(examples, options.batch_tokens, rng, size):
            if done():
                break
            started = time.monotonic()
            warm = min(1.0, (state["step"] + 1) / options.warmup_steps)
            lr = options.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress())))
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            loss, stats = loss_fn(model, batch, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for group in groups for p in group["params"]], 1.0)
            optimizer.step()
            elapsed = time.monotonic() - started
            state["step"] += 1
            state["seconds"] += elapsed
            state["tokens"] += stats["tokens"]
            ema = stats if ema is None else {k: 0.9 * ema[k] + 0.1 * stats[k] for k in stats}
            bar.n = int(100 * progress())
            bar.set_postfix(step=state["step"], epoch=state["epoch"], loss=f"{float(loss.detach()):.3f}",
                            **{k: f"{v:.3f}" for k, v in ema.items() if k.startswith("acc")},
                            tok_s=f"{stats['tokens'] / elapsed:.0f}", lr=f"{lr:.1e}")
            if time.monotonic() - last_save > options.checkpoint_every_s:
                save()
                last_save = time.monotonic()
        else:
            state["epoch"] += 1
    bar.n = 100
    bar.close()
    save()
    times_path = work / "times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    if best_path.exists() and state.get("best_val_acc", -1.0) > state.get("val_acc", -1.0):
        model.load_state_dict(torch.load(best_path, map_location=device))
        print(f"distill: exporting the best held-out step {state['best_step']} ({state['best_val_acc']:.3f})")
    times.update({"val_acc": state.get("val_acc"), "best_val_acc": state.get("best_val_acc"), "best_step": state.get("best_step"),
                  "train_seconds": state["seconds"], "train_steps": state["step"], "train_tokens": state["tokens"],
                  "device": device, "init": state.get("init", {}), "train_acc_ema": ema["acc"] if ema else None})
    times_path.write_text(json.dumps(times, indent=2))
    return model.eval()


def export(draft, tokenizer, out: Path, dtype: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    draft = draft.to("cpu").to({"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype])
    draft.config.use_cache = True
    draft.save_pretrained(out, safe_serialization=True)
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(out)
    draft.float()


def data_summary(records: list[dict]) -> dict:
    return {"answers": len(records), "tokens": sum(len(r["answer"]) for r in records),
            "greedy_tokens": sum(len(r["answer"]) for r in records if r.get("temperature", 0) == 0)}

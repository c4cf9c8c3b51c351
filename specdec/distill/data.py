"""On-policy training data for `specdec distill`: the target answers the prompts, once.

The target's answers are generated in batches (left-padded, chat template, greedy first, then
sampled passes) and stored with the target's top-k logits at every generated position, so that
training never runs the target again (the teacher's distribution is computed once). Each batch is
one shard file `shard-PPP-BBBBB.pt` in the data directory, written atomically: an interrupted run
resumes at the first missing shard.

A shard holds, per answer: `prompt` (token ids), `answer` (token ids, ending in EOS when the
target stopped), `topk_ids` [len(answer), K] int32 and `topk_logits` [len(answer), K] float16,
the target's raw (unprocessed, temperature 1) logits of its K most likely next tokens at each
answer position.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

import torch
from tqdm import tqdm


@dataclass(frozen=True)
class GenerationPlan:
    prompts: list[str]
    passes: list[float]  # temperature of each pass over the prompts; 0 = greedy
    batch_size: int
    max_new_tokens: int
    topk: int
    seed: int

    def batches(self) -> list[tuple[int, int, list[int]]]:
        """(pass index, batch index, prompt indices): the fixed order every run walks."""
        out = []
        for p in range(len(self.passes)):
            order = list(range(len(self.prompts)))
            random.Random(self.seed + p).shuffle(order)
            for b in range(0, len(order), self.batch_size):
                out.append((p, b // self.batch_size, order[b : b + self.batch_size]))
        return out


def read_prompts(path: Path | Traversable) -> list[str]:
    """One prompt per line (a literal backslash-n stands for a newline), or a .jsonl of chat records."""
    prompts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        if path.name.endswith(".jsonl"):
            import json

            record = json.loads(line)
            prompts.append(record["messages"][-1]["content"] if "messages" in record else record["prompt"])
        else:
            prompts.append(line.replace("\\n", "\n"))
    return prompts


def render(tokenizer, prompt: str) -> list[int]:
    """The prompt as the orchestrator sends it: one user message through the chat template."""
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    else:
        text = prompt
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def shard_path(data_dir: Path, pass_index: int, batch_index: int) -> Path:
    return data_dir / f"shard-{pass_index:03d}-{batch_index:05d}.pt"


@torch.inference_mode()
def generate_batch(model, tokenizer, prompt_ids: list[list[int]], temperature: float, max_new_tokens: int,
                   topk: int, seed: int) -> list[dict]:
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(ids) for ids in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for row, ids in enumerate(prompt_ids):  # left padding: every row's answer starts at column `width`
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {"do_sample": False}
    out = model.generate(
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), max_new_tokens=max_new_tokens,
        pad_token_id=pad, eos_token_id=tokenizer.eos_token_id, return_dict_in_generate=True, output_logits=True,
        **sampling,
    )
    answers = out.sequences[:, width:].cpu()  # [B, T]
    logits = torch.stack(out.logits, dim=1)  # [B, T, V] raw logits
    top_logits, top_ids = logits.float().topk(min(topk, logits.shape[-1]), dim=-1)  # [B, T, K]
    records = []
    eos = tokenizer.eos_token_id
    for row, ids in enumerate(prompt_ids):
        answer = answers[row].tolist()
        length = answer.index(eos) + 1 if eos in answer else len(answer)
        records.append({
            "prompt": list(ids),
            "answer": answer[:length],
            "topk_ids": top_ids[row, :length].to(torch.int32).cpu(),
            "topk_logits": top_logits[row, :length].to(torch.float16).cpu(),
            "temperature": temperature,
        })
    return records


def generate_data(model, tokenizer, plan: GenerationPlan, data_dir: Path, minutes: float, log=print) -> None:
    """Fills data_dir with shards until the plan is done or `minutes` of generation have passed."""
    data_dir.mkdir(parents=True, exist_ok=True)
    batches = plan.batches()
    todo = [b for b in batches if not shard_path(data_dir, b[0], b[1]).exists()]
    if not todo:
        log(f"distill: all {len(batches)} data shards already in {data_dir}")
        return
    log(f"distill: generating {len(todo)} of {len(batches)} shards ({plan.batch_size} answers each, "
        f"<= {plan.max_new_tokens} tokens) into {data_dir}, for at most {minutes:g} min")
    rendered = {}
    started, tokens = time.monotonic(), 0
    bar = tqdm(todo, desc="distill: target answers", unit="batch", dynamic_ncols=True)
    for pass_index, batch_index, indices in bar:
        if time.monotonic() - started > minutes * 60:
            log(f"\ndistill: generation time budget reached after {tokens} tokens; training on what exists")
            break
        prompt_ids = [rendered.setdefault(i, render(tokenizer, plan.prompts[i])) for i in indices]
        records = generate_batch(model, tokenizer, prompt_ids, plan.passes[pass_index], plan.max_new_tokens,
                                 plan.topk, seed=plan.seed * 100_003 + pass_index * 1009 + batch_index)
        path = shard_path(data_dir, pass_index, batch_index)
        tmp = path.with_suffix(".tmp")
        torch.save(records, tmp)
        os.replace(tmp, path)
        tokens += sum(len(r["answer"]) for r in records)
        bar.set_postfix(tokens=tokens, tok_s=f"{tokens / (time.monotonic() - started):.0f}")
    bar.close()


def load_shards(data_dir: Path) -> list[dict]:
    records = []
    for path in sorted(Path(data_dir).glob("shard-*.pt")):
        records.extend(torch.load(path, weights_only=True))
    return [r for r in records if len(r["answer"]) > 0]

"""Measuring a draft against its target: greedy acceptance and draft cost c.

- Greedy acceptance: the target answers each held-out prompt greedily; at every answer position
  the draft, fed the target's own greedy prefix, agrees when its argmax is the target's token.
- Greedy speculative acceptance for k: with greedy drafting, a block drafted at position i keeps
  the drafts up to the first disagreement, so the per-position agreements above give each block's
  accepted count exactly (capped at k); the target then adds one token (correction or bonus).
- c: one draft decode step over one target decode step, both through the KV cache the services run
  (hosted_model.kv_cache_for: the slot cache where the architecture allows), with a ~100-token
  context, interleaved so machine drift hits both alike.

    python -m specdec.distill.eval --draft DIR [--target default] [--prompts dev.jsonl]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from specdec.runtime.hosted_model import ModelOptions, kv_cache_for
from specdec.runtime.models import max_context


@torch.inference_mode()
def target_greedy_answers(target, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int, batch_size: int = 32):
    from specdec.distill.data import generate_batch

    answers = []
    for start in range(0, len(prompt_ids), batch_size):
        records = generate_batch(target, tokenizer, prompt_ids[start : start + batch_size], 0.0, max_new_tokens, 1, seed=0)
        answers += [r["answer"] for r in records]
    return answers


@torch.inference_mode()
def agreement(draft, prompt: list[int], answer: list[int]) -> list[bool]:
    """Per answer position: the draft's argmax after prompt + answer[:j] == answer[j]."""
    device = next(draft.parameters()).device
    ids = torch.tensor([prompt + answer[:-1]], device=device)
    logits = draft(input_ids=ids).logits[0, len(prompt) - 1 :]  # [len(answer), V]
    return (logits.argmax(-1).cpu() == torch.tensor(answer)).tolist()


def speculative_greedy(matches: list[bool] | list[list[bool]], k: int) -> tuple[int, int, int]:
    """(drafted, accepted, target calls) for greedy speculative decoding of this answer with k drafts.
    `matches[j]`: whether a draft of answer[j] is right; or, for a drafter whose t-th draft of a block
    differs from its first (an EAGLE head drafts from its own guesses), `matches[t][j]` for the t-th."""
    by_step = matches if matches and isinstance(matches[0], list) else [matches]
    drafted = accepted = calls = 0
    i, n = 0, len(by_step[0])
    while i < n:
        block = min(k, n - i - 1) if n - i > 1 else 0  # the target's last token needs no drafting
        a = 0
        while a < block and by_step[min(a, len(by_step) - 1)][i + a]:
            a += 1
        drafted += block
        accepted += a
        calls += 1
        i += a + 1
    return drafted, accepted, calls


@torch.inference_mode()
def step_costs(target, draft, context: list[int], steps: int = 40) -> tuple[float, float]:
    """Median seconds of one decode step with a warm KV cache: (draft, target), interleaved."""
    times = interleaved_medians({"draft": decode_calls(draft, context), "target": decode_calls(target, context)}, steps)
    return times["draft"], times["target"]


def decode_calls(model, context: list[int]) -> tuple[Callable[[], object], Callable[[int], object]]:
    """(reset, step) for interleaved_medians: a decode step after `context`, through the services' KV cache."""
    lm = kv_cache_for(model, 1 << 30, min(ModelOptions.max_context, max_context(model)))
    return (lambda: lm.logits("s", context, 1),  # back to the context (a crop), not timed
            lambda i: lm.logits("s", context + [context[(i + 7) % len(context)]], 1))


def interleaved_medians(calls: dict[str, tuple[Callable[[], object], Callable[[int], object]]], steps: int) -> dict[str, float]:
    """Median seconds of each name's step(i), run after its untimed reset(), the names taking turns (in
    alternating order) so that machine drift hits all alike; one warm-up each first."""
    for reset, step in calls.values():
        reset()
        step(0)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(steps):
        for name in (list(calls) if i % 2 == 0 else list(reversed(calls))):
            reset, step = calls[name]
            reset()
            started = time.perf_counter()
            step(i)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(target, draft, tokenizer, prompts: list[str], max_new_tokens: int = 128, k_values=(2, 3, 4, 6)) -> dict:
    from specdec.distill.data import render

    draft = draft.float().eval()
    prompt_ids = [render(tokenizer, p) for p in prompts]
    answers = target_greedy_answers(target, tokenizer, prompt_ids, max_new_tokens)
    matches = [agreement(draft, p, a) for p, a in zip(prompt_ids, answers)]
    flat = [m for ms in matches for m in ms]
    result = {"prompts": len(prompts), "tokens_per_prompt": max_new_tokens, "positions": len(flat),
              "greedy_acceptance": sum(flat) / len(flat)}
    for k in k_values:
        d, a, calls = map(sum, zip(*(speculative_greedy(m, k) for m in matches)))
        result[f"spec_acceptance_k{k}"] = a / d
        result[f"tokens_per_call_k{k}"] = len(flat) / calls
    context = prompt_ids[0] + answers[0][:60]
    draft_s, target_s = step_costs(target, draft, context)
    result.update({"draft_step_ms": draft_s * 1e3, "target_step_ms": target_s * 1e3, "c": draft_s / target_s,
                   "device": str(next(draft.parameters()).device), "threads": torch.get_num_threads()})
    return result


def main() -> None:
    from specdec.distill.data import read_prompts
    from specdec.runtime.models import load_model, load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draft", required=True)
    parser.add_argument("--target", default="default")
    parser.add_argument("--prompts", default="/work/shared/prompts/dev.jsonl")
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.target)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    target = load_model(args.target)
    draft = load_model(args.draft, "float32")
    print(json.dumps(measure(target, draft, tokenizer, read_prompts(Path(args.prompts)), args.tokens), indent=2))


if __name__ == "__main__":
    main()

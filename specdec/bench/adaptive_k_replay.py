"""Adaptive k replayed offline: its choices against fixed k = 1, per prompt category, in seconds
instead of the half hour `specdec bench` takes, so a change to orchestrator/adaptive_k.py can be
judged over many noise draws before it is measured for real.

Greedy speculative decoding is a function of where the draft's argmax agrees with the target's
greedy answer, so `collect` records that per answer position for each prompt (teacher-forced, one
forward pass per prompt and model), and what prompt lookup finds there: the n-gram length, how many
tokens of its continuation match the answer, and how many it has. `replay` then runs the prompts in
`specdec bench`'s order (every prompt, `--repeats` times) through the real AdaptiveK, prompt lookup
on, with one shared CostModel, charging each iteration measured costs: per-call milliseconds from
`specdec bench` on the dev VM by default.
The machine's drift is modelled as a speed factor per run, shared by the adaptive and the fixed
run of the same prompt (the bench interleaves them), plus per-call jitter and rare stalls.

    .venv/bin/python -m specdec.bench.adaptive_k_replay collect --draft-model default-draft
    .venv/bin/python -m specdec.bench.adaptive_k_replay replay [--seeds 30]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

from orchestrator.adaptive_k import AdaptiveK, CostModel, Plan
from specdec.bench.command import DEFAULT_PROMPTS

MAX_K = 8
# ms per target call scoring k drafts (k + 1 positions) and per draft call of k tokens, RPC included
TARGET_MS = (58.0, 61.0, 65.0, 80.0, 93.0, 100.0, 110.0, 121.0, 125.0)
DRAFT_MS_FIXED, DRAFT_MS_PER_TOKEN = 2.8, 3.1
ORCHESTRATION_MS = 0.4
PREFILL_FACTOR = 5.0  # a first call, prompt included, against a decode step


def collect(args: argparse.Namespace) -> None:
    import torch

    from specdec.distill.data import read_prompts, render
    from specdec.distill.eval import agreement, target_greedy_answers
    from specdec.runtime.models import load_model, load_tokenizer

    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(args.target_model)
    target = load_model(args.target_model).eval()
    draft = load_model(args.draft_model).eval()
    categories = [json.loads(line).get("category", "") for line in args.prompts.read_text().splitlines() if line.strip()]
    prompt_ids = [render(tokenizer, prompt) for prompt in read_prompts(args.prompts)]
    answers = target_greedy_answers(target, tokenizer, prompt_ids, args.max_new_tokens)
    records = [{"category": category, "matches": agreement(draft, prompt, answer), "lookup": lookups(prompt, answer)}
               for category, prompt, answer in zip(categories, prompt_ids, answers)]
    args.matches.write_text(json.dumps(records))
    print(f"wrote {args.matches}: {len(records)} prompts")


def lookups(prompt: list[int], answer: list[int]) -> list[tuple[int, int, int]]:
    """Per answer position: (n, matching tokens, all tokens) of what prompt lookup proposes there."""
    from specdec.runtime.ngram import find_ngram

    result = []
    for j in range(len(answer)):
        n, continuation = find_ngram(prompt + answer[:j], MAX_K)
        matching = next((i for i, (a, b) in enumerate(zip(continuation, answer[j:])) if a != b),
                        min(len(continuation), len(answer) - j))
        result.append((n, matching, len(continuation)))
    return result


def run_stream(record: dict, chooser: AdaptiveK | None, fixed_k: int, speed: float, rng: random.Random) -> float:
    """Tokens per second of one greedy generation, at the chooser's plan or, without one, at fixed_k."""
    matches = record["matches"]
    position, ms = 0, 0.0
    target_prefill = draft_prefill = PREFILL_FACTOR  # a service's first call also prefills the prompt
    while position < len(matches):
        limit = len(matches) - position - 1
        lookup_n, lookup_matching, lookup_len = record["lookup"][position]
        plan = chooser.choose(limit, lookup_n, lookup_len) if chooser else Plan(min(fixed_k, limit))
        k = plan.k
        accepted = 0
        if plan.lookup_n:
            accepted = min(lookup_matching, k)
        else:
            while accepted < k and matches[position + accepted]:
                accepted += 1
        stall = 1.5 if rng.random() < 0.02 else 1.0
        drafted_by_model = k and not plan.lookup_n
        draft_ms = DRAFT_MS_FIXED + DRAFT_MS_PER_TOKEN * k if drafted_by_model else 0.0
        draft_ms *= speed * rng.uniform(0.9, 1.1) * stall
        target_ms = TARGET_MS[k] * speed * rng.uniform(0.9, 1.1) * target_prefill
        if drafted_by_model:
            draft_ms *= draft_prefill
            draft_prefill = 1.0
        target_prefill = 1.0
        ms += draft_ms + target_ms + ORCHESTRATION_MS
        if chooser:
            chooser.observe(k, k, accepted, draft_ms / 1000, target_ms / 1000, lookup_n=plan.lookup_n)
        position += accepted + 1
    return 1000 * len(matches) / ms


def replay_once(records: list[dict], seed: int, fixed_k: int | None, repeats: int) -> list[float]:
    """Tokens per second of every run, at adaptive k (fixed_k None) or at fixed_k."""
    costs = CostModel(max_k=MAX_K)
    speeds = random.Random(seed)
    result = []
    for run, record in enumerate(record for _ in range(repeats) for record in records):
        rng = random.Random(seed * 100_000 + run)  # the same draws for the adaptive and the fixed run
        speed = speeds.uniform(0.85, 1.15) * rng.uniform(0.97, 1.03)
        chooser = None if fixed_k is not None else AdaptiveK(
            costs, ("model", True, 1.0), MAX_K, lookup=True, judged=(True, 1.0)
        )
        result.append(run_stream(record, chooser, fixed_k or 0, speed, rng))
    return result


def replay(args: argparse.Namespace) -> None:
    records = json.loads(args.matches.read_text())
    categories = sorted({r["category"] for r in records})
    runs_of = [r["category"] for _ in range(args.repeats) for r in records]
    worst, mixed, hindsight_mixed = [], [], []
    for seed in range(args.seeds):
        adaptive = replay_once(records, seed, None, args.repeats)
        fixed = replay_once(records, seed, 1, args.repeats)
        # The ceiling for choosing k per prompt: each run at whichever fixed k was fastest for it.
        hindsight = [max(runs) for runs in zip(*(replay_once(records, seed, k, args.repeats) for k in range(5)))]

        def ratio(tokens_per_second: list[float], category: str | None) -> float:
            pick = [i for i, c in enumerate(runs_of) if category in (None, c)]
            return statistics.median(tokens_per_second[i] for i in pick) / statistics.median(fixed[i] for i in pick)

        worst.append(min((ratio(adaptive, c), c) for c in categories))
        mixed.append(ratio(adaptive, None))
        hindsight_mixed.append(ratio(hindsight, None))
    print(f"adaptive / fixed k=1 over {args.seeds} noise draws, {len(records)} prompts x {args.repeats} repeats")
    print(f"mixed set: median {statistics.median(mixed):.3f}, min {min(mixed):.3f}; each prompt at its best fixed "
          f"k in 0..4, chosen in hindsight: median {statistics.median(hindsight_mixed):.3f}")
    print(f"worst category: median {statistics.median(w for w, _ in worst):.3f}, min {min(worst)[0]:.3f} ({min(worst)[1]}); "
          f"draws with a category under 0.95: {sum(w < 0.95 for w, _ in worst)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    gather = commands.add_parser("collect", help="record where the draft agrees with the target's greedy answers")
    gather.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    gather.add_argument("--target-model", default="default")
    gather.add_argument("--draft-model", required=True)
    gather.add_argument("--max-new-tokens", type=int, default=64)
    gather.add_argument("--threads", type=int, default=2)
    again = commands.add_parser("replay", help="run adaptive k and fixed k=1 over the recorded agreement")
    again.add_argument("--seeds", type=int, default=30)
    again.add_argument("--repeats", type=int, default=2)
    for command in (gather, again):
        command.add_argument("--matches", type=Path, default=Path("bench-results/matches.json"))
    args = parser.parse_args()
    {"collect": collect, "replay": replay}[args.command](args)


if __name__ == "__main__":
    main()

"""`specdec bench`: drafters side by side through a running stack, interleaved per prompt.

Every prompt is generated once per configuration, the configurations taking turns (rotating the
order prompt by prompt) so the machine's drift hits all of them alike. Speedups are ratios of
medians measured in the same run against `draft=none` through the same target service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from specdec.v1 import generation_pb2, generation_pb2_grpc


@dataclass
class Runs:
    name: str
    tokens_per_second: list[float] = field(default_factory=list)
    generated: int = 0
    drafted: int = 0
    accepted: int = 0
    target_calls: int = 0
    wire_bytes: int = 0
    draft_seconds: float = 0.0
    target_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    outputs: list[list[int]] = field(default_factory=list)

    def add(self, tokens: list[int], stats: generation_pb2.GenerationStats) -> None:
        self.tokens_per_second.append(stats.tokens_per_second)
        self.generated += stats.generated_tokens
        self.drafted += stats.drafted_tokens
        self.accepted += stats.accepted_tokens
        self.target_calls += stats.target_calls
        self.wire_bytes += stats.wire_bytes
        self.draft_seconds += stats.draft_seconds
        self.target_seconds += stats.target_seconds
        self.elapsed_seconds += stats.elapsed_seconds
        self.outputs.append(tokens)

    def summary(self, baseline: Runs | None) -> dict:
        median = statistics.median(self.tokens_per_second)
        return {
            "config": self.name,
            "tokens_per_second_median": median,
            "tokens_per_second_min": min(self.tokens_per_second),
            "tokens_per_second_max": max(self.tokens_per_second),
            "speedup": median / statistics.median(baseline.tokens_per_second) if baseline else None,
            "acceptance_rate": self.accepted / self.drafted if self.drafted else 0.0,
            "tokens_per_target_call": self.generated / self.target_calls,
            "wire_bytes_per_token": self.wire_bytes / self.generated,
            "draft_share": self.draft_seconds / self.elapsed_seconds,
            "target_share": self.target_seconds / self.elapsed_seconds,
            "same_output_as_baseline": self.outputs == baseline.outputs if baseline else None,
        }


def load_prompts(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def run_bench(args: argparse.Namespace) -> list[dict]:
    prompts = load_prompts(args.prompts)
    configs = [(draft, k) for draft in args.drafts.split(",") for k in ([0] if draft == "none" else args.k)]
    runs = {config: Runs(f"draft={config[0]}" + (f" k={config[1]}" if config[1] else "")) for config in configs}
    async with grpc.aio.insecure_channel(args.address) as channel:
        stub = generation_pb2_grpc.GenerationStub(channel)
        for i, prompt in enumerate(prompts):
            order = configs[i % len(configs) :] + configs[: i % len(configs)]
            for draft, k in order:
                request = generation_pb2.GenerateRequest(
                    messages=prompt["messages"], max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                    seed=args.seed + i, draft=draft, num_speculative_tokens=k, ignore_eos=True,
                )
                tokens, last = [], None
                async for chunk in stub.Generate(request, timeout=600):
                    tokens.extend(chunk.token_ids)
                    last = chunk
                runs[(draft, k)].add(tokens, last.stats)
            print(f"\r[{i + 1}/{len(prompts)}] {prompt.get('id', '')}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    baseline = runs.get(("none", 0))
    return [r.summary(baseline if r is not baseline else None) for r in runs.values()]


def markdown_table(rows: list[dict], greedy: bool) -> str:
    header = ["config", "tokens/s median (min–max)", "speedup", "acceptance", "tokens/target call",
              "wire B/token", "draft / target time"] + (["= target output"] if greedy else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        baseline = r["speedup"] is None
        cells = [
            r["config"],
            f"{r['tokens_per_second_median']:.1f} ({r['tokens_per_second_min']:.1f}–{r['tokens_per_second_max']:.1f})",
            "1.00× (baseline)" if baseline else f"{r['speedup']:.2f}×",
            "–" if baseline else f"{r['acceptance_rate']:.2f}",
            f"{r['tokens_per_target_call']:.2f}",
            f"{r['wire_bytes_per_token']:.0f}",
            f"{r['draft_share']:.0%} / {r['target_share']:.0%}",
        ]
        if greedy:
            cells.append("–" if baseline else ("yes" if r["same_output_as_baseline"] else "NO"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_parser(commands) -> None:
    bench = commands.add_parser("bench", help="compare drafters side by side through a running stack")
    bench.add_argument("--address", default="localhost:50051")
    bench.add_argument("--prompts", type=Path, required=True, help="JSONL with a `messages` list per line")
    bench.add_argument("--max-new-tokens", type=int, default=128)
    bench.add_argument("--temperature", type=float, default=0.0)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--drafts", default="none,ngram", help="comma-separated: none, ngram, model")
    bench.add_argument("--k", type=lambda s: [int(k) for k in s.split(",")], default=[4], help="e.g. 2,4,6")
    bench.add_argument("--out", type=Path, default=None, help="write results.json and results.md here")
    bench.set_defaults(func=main)


def main(args: argparse.Namespace) -> None:
    rows = asyncio.run(run_bench(args))
    table = markdown_table(rows, greedy=args.temperature == 0)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items() if k != "func"}, "results": rows}, indent=2))
        (args.out / "results.md").write_text(table + "\n")

"""`specdec bench --concurrency 1,2,4,8,16`: throughput and latency under load, speculative against draft=none.

It starts the stack as `specdec bench` does (no peers) and runs two configurations: the default
speculative one (the model draft at adaptive k, or the n-gram drafter at adaptive k without a draft
model) and draft=none. At each concurrency level N, each configuration runs N streams (asyncio tasks
on one channel) that take prompts from one shared queue of the whole prompt set until it is empty,
so every level and configuration serves the same requests. The two configurations take turns going
first, level by level and round by round (--repeats), so the machine's drift hits both alike.

Per level and configuration: aggregate tokens/s (all output tokens over the wall time of the level's
run, the median over rounds), per-request time per output token and time to first token (median,
p95), the share of the target's scored rows that were rejected drafts, and how many outputs differ
from the same prompt's output at the lowest level (greedy: batching must not change a token).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from specdec.bench.configs import Config, Results, Run, configs_for
from specdec.bench.run import bench_stack, prompt_set, run_service
from specdec.bench.soak import percentile
from specdec.v1 import generation_pb2_grpc


@dataclass
class LevelRun:
    """One configuration's pass over the prompt set at one concurrency level."""

    seconds: float  # wall time, first request sent to last stream done
    runs: dict[int, Run]  # by prompt index

    def tokens_per_second(self) -> float:
        return sum(len(run.tokens) for run in self.runs.values()) / self.seconds


Rounds = dict[tuple[int, str], list[LevelRun]]  # (level, configuration name) -> one LevelRun per round


def level_configs(args: argparse.Namespace) -> list[Config]:
    """The default speculative configuration, as `specdec bench` names it, and draft=none."""
    drafter = "model" if args.draft_model else "ngram"
    speculative = next(c for c in configs_for(args) if c.draft == drafter and c.k == 0 and c.lenience == 1.0)
    return [speculative, Config("draft=none")]


def time_per_output_token(run: Run) -> float | None:
    """(last token chunk - first token chunk) / (tokens - 1), as vLLM defines TPOT: the wait for the
    first token, queueing included, is TTFT's and reported apart. None for a one-token output."""
    if len(run.tokens) < 2:
        return None
    return (run.last_token_seconds - run.first_token_seconds) / (len(run.tokens) - 1)


def rejected_share(results: Results) -> float:
    """The share of the rows the target scored in decoding that went to waste on rejected drafts.

    A target call with k drafts scores k + 1 rows of p; with n accepted, the n + 1 rows up to the first
    rejection make the committed tokens and the other k - n are wasted: (drafted - accepted) over
    (drafted + target_calls). The prompt's prefill is left out: it is the same work in every
    configuration. The stats carry no count of the positions a target recomputed (after a cache
    eviction, or a batch's padding), so this is a share of the rows the accept test saw, not of FLOPs.
    """
    drafted, calls = results.total("drafted_tokens"), results.total("target_calls")
    return (drafted - results.total("accepted_tokens")) / (drafted + calls) if calls else 0.0


async def run_level(stub, config: Config, level: int, prompts: list[list[int]], args: argparse.Namespace) -> LevelRun:
    pending = iter(enumerate(prompts))  # the shared queue: each stream takes the next prompt when it is free
    runs: dict[int, Run] = {}

    async def stream() -> None:
        for i, prompt_ids in pending:
            runs[i] = await run_service(stub, config, prompt_ids, args, args.seed + i)
            print(f"[c={level} {config.name}] {len(runs)}/{len(prompts)} requests", file=sys.stderr, flush=True)

    started = time.perf_counter()
    await asyncio.gather(*(stream() for _ in range(level)))
    return LevelRun(time.perf_counter() - started, runs)


async def run_levels(args: argparse.Namespace, address: str, prompts: list[list[int]]) -> Rounds:
    configs = level_configs(args)
    rounds: Rounds = {(level, c.name): [] for level in args.concurrency for c in configs}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = generation_pb2_grpc.GenerationStub(channel)
        for config in configs:  # unmeasured: the first calls pay the services' one-time costs
            await run_service(stub, config, prompts[0], args, args.seed)
        for repeat in range(args.repeats):
            for n, level in enumerate(args.concurrency):
                for config in configs if (n + repeat) % 2 == 0 else configs[::-1]:
                    level_run = await run_level(stub, config, level, prompts, args)
                    rounds[level, config.name].append(level_run)
                    print(f"[c={level} {config.name}] {level_run.tokens_per_second():.1f} tokens/s "
                          f"over {level_run.seconds:.2f} s", file=sys.stderr, flush=True)
    return rounds


def summarize_level(config: Config, level_runs: list[LevelRun], reference: dict[int, Run]) -> dict:
    """One configuration at one level, over its rounds; `reference`: the same prompts' runs at the lowest level."""
    results = Results(config, [run for r in level_runs for run in r.runs.values()])
    tpot = [t for run in results.runs if (t := time_per_output_token(run)) is not None]
    ttft = [run.first_token_seconds for run in results.runs]
    same = [(i, run.tokens == reference[i].tokens) for r in level_runs for i, run in r.runs.items()]
    return {
        "requests": len(results.runs),
        "tokens": sum(len(run.tokens) for run in results.runs),
        "tokens_per_second": statistics.median(r.tokens_per_second() for r in level_runs),
        "tokens_per_second_rounds": [r.tokens_per_second() for r in level_runs],
        "tpot_ms_p50": 1000 * statistics.median(tpot) if tpot else None,  # None: every output was one token
        "tpot_ms_p95": 1000 * percentile(tpot, 0.95) if tpot else None,
        "ttft_ms_p50": 1000 * statistics.median(ttft),
        "ttft_ms_p95": 1000 * percentile(ttft, 0.95),
        "rejected_share": rejected_share(results),
        "mismatches": sum(not equal for _, equal in same),
        "mismatched_prompts": sorted({i for i, equal in same if not equal}),
    }


def summarize(configs: list[Config], rounds: Rounds, levels: list[int]) -> list[dict]:
    """One row per (configuration, level); ratios against the configuration's lowest level and draft=none."""
    rows = []
    for config in configs:
        reference = rounds[levels[0], config.name][0].runs  # the lowest level's first round
        for level in levels:
            rows.append({"config": config.name, "concurrency": level, "reference_concurrency": levels[0],
                         **summarize_level(config, rounds[level, config.name], reference)})
    base = {(r["config"], r["concurrency"]): r["tokens_per_second"] for r in rows}
    for r in rows:
        r["vs_lowest_level"] = r["tokens_per_second"] / base[r["config"], levels[0]]
        r["vs_draft_none"] = r["tokens_per_second"] / base["draft=none", r["concurrency"]]
    return rows


def markdown_table(rows: list[dict], configs: list[Config], levels: list[int], greedy: bool) -> str:
    by = {(r["config"], r["concurrency"]): r for r in rows}
    low = levels[0]
    per_config = [f"tok/s (× c={low})", "TPOT ms p50/p95", "TTFT ms p50/p95", "rejected"]
    per_config += [f"≠ c={low}"] if greedy else []
    header = ["c"] + [f"{c.name}: {h}" for c in configs for h in per_config] + [f"{configs[0].name} / draft=none"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for level in levels:
        cells = [str(level)]
        for config in configs:
            r = by[config.name, level]
            cells += [f"{r['tokens_per_second']:.1f} ({r['vs_lowest_level']:.2f}×)",
                      f"{r['tpot_ms_p50']:.1f} / {r['tpot_ms_p95']:.1f}" if r["tpot_ms_p50"] is not None else "–",
                      f"{r['ttft_ms_p50']:.0f} / {r['ttft_ms_p95']:.0f}", f"{r['rejected_share']:.1%}"]
            cells += [f"{r['mismatches']}/{r['requests']}"] if greedy else []
        cells.append(f"{by[configs[0].name, level]['vs_draft_none']:.2f}×")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], configs: list[Config], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.2))
    for config in configs:
        points = sorted((r["concurrency"], r["tokens_per_second"]) for r in rows if r["config"] == config.name)
        axes.plot(*zip(*points, strict=True), "o-", label=config.name)
    levels = sorted({r["concurrency"] for r in rows})
    axes.set_xscale("log", base=2)
    axes.set_xticks(levels, labels=[str(level) for level in levels])
    axes.set(xlabel="concurrent streams", ylabel="aggregate output tokens/s", title="Throughput under load")
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(args: argparse.Namespace) -> None:
    _, prompts = prompt_set(args)
    args.out.mkdir(parents=True, exist_ok=True)
    configs = level_configs(args)
    print(f"specdec bench: concurrency {','.join(map(str, args.concurrency))} x {len(configs)} configurations x "
          f"{args.repeats} rounds, {len(prompts)} prompts of {args.max_new_tokens} tokens each; "
          f"service logs in {args.out / 'services.log'}", file=sys.stderr)
    with bench_stack(args) as stack:
        rounds = asyncio.run(run_levels(args, stack.address, prompts))
    rows = summarize(configs, rounds, args.concurrency)
    table = markdown_table(rows, configs, args.concurrency, greedy=args.temperature == 0)
    print(table)
    settings = {k: str(v) for k, v in vars(args).items() if k != "func"}
    (args.out / "concurrency.json").write_text(json.dumps({"settings": settings, "results": rows}, indent=2))
    (args.out / "concurrency.md").write_text(table + "\n")
    plot(rows, configs, args.out / "concurrency.png")
    print(f"wrote {args.out / 'concurrency.json'}, concurrency.md and concurrency.png", file=sys.stderr)

"""`specdec bench`: specdec side by side with its peers, on the same prompts and models.

It starts its own stack (target, draft, orchestrator as real processes on free loopback ports)
and loads the same models in-process for the peers, then runs every prompt once (or --repeats
times) per configuration, the configurations taking turns in an order that rotates prompt by
prompt, so the machine's drift hits all of them alike. Speedups are ratios of median tokens/s
measured in this one run against `draft=none` through the same target service.

Configurations: draft=none; the model draft at each fixed k and at adaptive k (plus a lenience
sweep); the n-gram drafter at adaptive k; transformers `generate()`; transformers assisted
generation with the same draft; transformers prompt lookup (the n-gram peer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import torch

from specdec.bench.command import read_records
from specdec.bench.configs import Config, Results, Run, configs_for
from specdec.bench.peers import Peers
from specdec.bench.report import by_category, category_table, markdown_table, plot, summarize
from specdec.cli.launcher import ROLES, LocalStack, StackSpec, free_port
from specdec.runtime.models import load_tokenizer
from specdec.v1 import generation_pb2, generation_pb2_grpc


async def run_service(stub, config: Config, prompt_ids: list[int], args: argparse.Namespace, seed: int) -> Run:
    request = generation_pb2.GenerateRequest(
        prompt_token_ids=prompt_ids, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        seed=seed, draft=config.draft, num_speculative_tokens=config.k, lenience=config.lenience,
        ignore_eos=args.ignore_eos,
    )
    started = time.perf_counter()
    tokens, last, first_at, last_at = [], None, 0.0, 0.0
    async for chunk in stub.Generate(request, timeout=1800):
        if chunk.token_ids:
            last_at = time.perf_counter()
            first_at = first_at or last_at
        tokens.extend(chunk.token_ids)
        last = chunk
    return Run(tokens, time.perf_counter() - started, last.stats, first_at - started, last_at - started)


async def run_all(args: argparse.Namespace, address: str, peers: Peers | None, prompts: list[list[int]]):
    configs = configs_for(args)
    results = {config: Results(config) for config in configs if peers is not None or not config.peer}
    order_base = list(results)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = generation_pb2_grpc.GenerationStub(channel)
        for n, (i, prompt_ids) in enumerate((i, p) for _ in range(args.repeats) for i, p in enumerate(prompts)):
            shift = n % len(order_base)
            for config in order_base[shift:] + order_base[:shift]:
                seed = args.seed + i
                if config.peer:
                    run = peers.run(config, prompt_ids, args, seed)
                else:
                    run = await run_service(stub, config, prompt_ids, args, seed)
                results[config].runs.append(run)
                tokens_per_second = len(run.tokens) / run.seconds
                print(f"[{n + 1}/{len(prompts) * args.repeats}] {config.name:<34} {tokens_per_second:6.1f} tokens/s",
                      file=sys.stderr, flush=True)
    return results


def prompt_set(args: argparse.Namespace) -> tuple[list[dict], list[list[int]]]:
    """The prompt set's records and their token ids, rendered with the target's chat template."""
    tokenizer = load_tokenizer(args.target_model)  # also prepares the default model once
    lines = read_records(args.prompts, args.limit)
    prompts = [list(tokenizer.apply_chat_template(line["messages"], add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"]) for line in lines]
    return lines, prompts


@contextmanager
def bench_stack(args: argparse.Namespace) -> Iterator[LocalStack]:
    """The bench's own stack on free loopback ports, its services' logs in --out/services.log."""
    spec = StackSpec(target_model=args.target_model, draft_model=args.draft_model,
                     ports={role: free_port() for role in ROLES}, model_flags=("--threads", str(args.threads)))
    with open(args.out / "services.log", "w") as log, LocalStack(spec, output=log, log=lambda _: None) as stack:
        yield stack


def main(args: argparse.Namespace) -> None:
    lines, prompts = prompt_set(args)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)  # the in-process peers compute like the services
    print(f"specdec bench: {len(prompts)} prompts x {args.repeats} repeats x {len(configs_for(args))} configurations, "
          f"{args.max_new_tokens} tokens each; service logs in {args.out / 'services.log'}", file=sys.stderr)
    with bench_stack(args) as stack:
        peers = Peers(args.target_model, args.draft_model) if args.peers or args.lenience != [1.0] else None
        results = asyncio.run(run_all(args, stack.address, peers if args.peers else None, prompts))
    # Runs go prompt by prompt, repeat after repeat.
    rows = summarize(results, results[Config("draft=none")], peers, prompts * args.repeats)
    categories = by_category(results, [line.get("category", "all") for line in lines] * args.repeats)
    table = markdown_table(rows, greedy=args.temperature == 0)
    if categories:
        table += "\n\nAdaptive k against the best fixed k, per prompt category:\n\n" + category_table(categories)
    print(table)
    settings = {k: str(v) for k, v in vars(args).items() if k != "func"}
    (args.out / "results.json").write_text(
        json.dumps({"settings": settings, "results": rows, "by_category": categories}, indent=2)
    )
    (args.out / "results.md").write_text(table + "\n")
    plot(rows, args.out / "plot.png")
    print(f"wrote {args.out / 'results.json'}, results.md and plot.png", file=sys.stderr)

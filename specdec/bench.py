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
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from specdec.bench_report import by_category, category_table, markdown_table, plot, summarize
from specdec.v1 import generation_pb2, generation_pb2_grpc

DEFAULT_PROMPTS = Path(__file__).resolve().parent.parent / "benchmarks" / "dev.jsonl"


@dataclass(frozen=True)
class Config:
    name: str
    draft: str = "none"  # services: "none", "model", "ngram"; peers: "" (in-process)
    k: int = 0  # 0 = adaptive (services) / the library's default (peers)
    lenience: float = 1.0
    peer: str = ""  # "generate", "assisted", "prompt_lookup"


@dataclass
class Run:
    tokens: list[int]
    seconds: float
    stats: generation_pb2.GenerationStats | None = None  # services only


@dataclass
class Results:
    config: Config
    runs: list[Run] = field(default_factory=list)

    def total(self, name: str) -> float:
        return sum(getattr(run.stats, name) for run in self.runs if run.stats is not None)

    def tokens_per_second(self) -> list[float]:
        return [len(run.tokens) / run.seconds for run in self.runs]


def configs_for(args: argparse.Namespace) -> list[Config]:
    configs = [Config("draft=none")]
    if args.draft_model:
        configs += [Config(f"model k={k}", "model", k) for k in args.k]
        configs += [Config("model adaptive k", "model", 0)]
        configs += [Config(f"model adaptive k, lenience {l:g}", "model", 0, l) for l in args.lenience if l != 1.0]
    configs += [Config(f"ngram k={k}", "ngram", k) for k in args.ngram_k]
    configs += [Config("ngram adaptive k", "ngram", 0)]
    if args.peers:
        configs += [Config("transformers generate", peer="generate")]
        if args.draft_model:
            configs += [Config("transformers assisted", peer="assisted")]
        configs += [Config("transformers prompt lookup", peer="prompt_lookup")]
    return configs


async def run_service(stub, config: Config, prompt_ids: list[int], args: argparse.Namespace, seed: int) -> Run:
    request = generation_pb2.GenerateRequest(
        prompt_token_ids=prompt_ids, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        seed=seed, draft=config.draft, num_speculative_tokens=config.k, lenience=config.lenience,
    )
    started = time.perf_counter()
    tokens, last = [], None
    async for chunk in stub.Generate(request, timeout=1800):
        tokens.extend(chunk.token_ids)
        last = chunk
    return Run(tokens, time.perf_counter() - started, last.stats)


class Peers:
    """transformers in one process: the baseline a user would otherwise pick."""

    def __init__(self, target_model: str, draft_model: str) -> None:
        import torch

        from specdec.models import load_model

        self._torch = torch
        self.target = load_model(target_model)
        self.draft = load_model(draft_model) if draft_model else None

    def run(self, config: Config, prompt_ids: list[int], args: argparse.Namespace, seed: int) -> Run:
        torch = self._torch
        extra = {"generate": {}, "assisted": {"assistant_model": self.draft},
                 "prompt_lookup": {"prompt_lookup_num_tokens": 4}}[config.peer]
        sampling = {"do_sample": True, "temperature": args.temperature} if args.temperature else {"do_sample": False}
        torch.manual_seed(seed)
        ids = torch.tensor([prompt_ids])
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.target.generate(ids, max_new_tokens=args.max_new_tokens, **sampling, **extra)
        return Run(out[0, len(prompt_ids):].tolist(), time.perf_counter() - started)

    def mean_log_likelihood(self, prompt_ids: list[int], tokens: list[int]) -> float:
        """The target's mean log-probability of `tokens` after the prompt (temperature 1)."""
        torch = self._torch
        with torch.inference_mode():
            logits = self.target(torch.tensor([prompt_ids + tokens])).logits[0, len(prompt_ids) - 1 : -1]
        return float(logits.log_softmax(-1).gather(1, torch.tensor(tokens)[:, None]).mean())


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


def main(args: argparse.Namespace) -> None:
    import torch

    from specdec.launcher import ROLES, LocalStack, StackSpec, free_port
    from specdec.models import load_tokenizer

    tokenizer = load_tokenizer(args.target_model)  # also prepares the default model once
    lines = [json.loads(line) for line in args.prompts.read_text().splitlines() if line.strip()]
    lines = lines[: args.limit or None]
    prompts = [list(tokenizer.apply_chat_template(line["messages"], add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"]) for line in lines]
    args.out.mkdir(parents=True, exist_ok=True)
    spec = StackSpec(target_model=args.target_model, draft_model=args.draft_model,
                     ports={role: free_port() for role in ROLES}, model_flags=("--threads", str(args.threads)))
    if args.threads:
        torch.set_num_threads(args.threads)  # the in-process peers compute like the services
    print(f"specdec bench: {len(prompts)} prompts x {args.repeats} repeats x {len(configs_for(args))} configurations, "
          f"{args.max_new_tokens} tokens each; service logs in {args.out / 'services.log'}", file=sys.stderr)
    with open(args.out / "services.log", "w") as log, LocalStack(spec, output=log, log=lambda _: None) as stack:
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


def add_parser(commands) -> None:
    bench = commands.add_parser("bench", help="benchmark specdec against draft=none and transformers, side by side")
    bench.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="JSONL, a `messages` list per line")
    bench.add_argument("--limit", type=int, default=0, help="use only the first N prompts (0 = all)")
    bench.add_argument("--repeats", type=int, default=1, help="run every prompt this many times per configuration")
    bench.add_argument("--max-new-tokens", type=int, default=128)
    bench.add_argument("--temperature", type=float, default=0.0)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--target-model", default="default")
    bench.add_argument("--draft-model", default="", help="a draft model ('' = only the n-gram drafter)")
    bench.add_argument("--k", type=lambda s: [int(k) for k in s.split(",")], default=[2, 4, 6], help="fixed k values")
    bench.add_argument("--ngram-k", type=lambda s: [int(k) for k in s.split(",") if k], default=[],
                       help="fixed k values for the n-gram drafter too, e.g. 2,4")
    bench.add_argument("--lenience", type=lambda s: [float(x) for x in s.split(",")], default=[1.0],
                       help="lenience sweep for the model draft, e.g. 1,0.7,0.5")
    bench.add_argument("--threads", type=int, default=0,
                       help="torch threads for every model, services and peers alike (0 = torch's default); "
                            "on a shared machine 1 avoids the collapse of oversubscribed thread pools")
    bench.add_argument("--no-peers", dest="peers", action="store_false", help="skip the in-process transformers runs")
    bench.add_argument("--out", type=Path, default=Path("bench-results"))
    bench.set_defaults(func=main)

"""`specdec bench --dtypes float32,bfloat16,int8,int4`: what each serving precision costs and buys.

It starts one stack per precision (`--dtype X` for draft and target; float32 is always among them,
the reference), all up at once, and runs every prompt through each: draft=none and, with a draft
model, the model draft at adaptive k, the precisions and configurations taking turns in an order
that rotates prompt by prompt, so the machine's drift hits all of them alike.

Per precision: median tokens/s of both, draft=none against float32's, speculative against draft=none;
how close the draft=none output stays to float32's (greedy: the share of it reproduced before the first
difference, and the identical outputs) and the float32 target's mean log-likelihood of it; and whether
the stack is exact at that precision: the prompts whose greedy outputs equal transformers `generate()`
in this process at the same precision. With --llama-cpp, llama.cpp's llama-bench on the GGUF type that
pairs with each precision, run after the stacks have stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass

import grpc
import torch

from specdec.bench.configs import Config, Results
from specdec.bench.llama_cpp import GGUF_TYPES, LlamaCpp
from specdec.bench.peers import Peers
from specdec.bench.run import prompt_set, run_service
from specdec.cli.launcher import ROLES, LocalStack, StackSpec, free_port
from specdec.runtime.cached_lm import common_prefix_len
from specdec.v1 import generation_pb2_grpc, target_pb2, target_pb2_grpc

REFERENCE = "float32"
NONE, SPECULATIVE = Config("draft=none"), Config("model adaptive k", "model", 0)
GENERATE = Config("transformers generate", peer="generate")


@dataclass
class Swept:
    """One precision of the sweep: the name asked for, what the target serves it as, and its runs."""

    name: str  # as --dtype got it, maybe auto
    served: str  # the target's ModelInfo.precision, never auto
    results: dict[Config, Results]

    @property
    def label(self) -> str:
        return f"auto ({self.served})" if self.name == "auto" else self.name


def start_stack(stacks: ExitStack, args: argparse.Namespace, name: str, threads: int) -> LocalStack:
    """A stack at precision `name` on free loopback ports, its services' logs in --out/services-<name>.log."""
    log = stacks.enter_context(open(args.out / f"services-{name}.log", "w"))
    spec = StackSpec(args.target_model, args.draft_model, ports={role: free_port() for role in ROLES},
                     model_flags=("--dtype", name, "--threads", str(threads)))
    return stacks.enter_context(LocalStack(spec, output=log, log=lambda _: None))


def served_precision(stack: LocalStack) -> str:
    with grpc.insecure_channel(stack.spec.address("target")) as channel:
        reply = target_pb2_grpc.TargetStub(channel).GetModelInfo(target_pb2.TargetGetModelInfoRequest(), timeout=60)
    return reply.info.precision


async def run_interleaved(args: argparse.Namespace, addresses: dict[str, str], configs: list[Config],
                          prompts: list[list[int]]) -> dict[str, dict[Config, Results]]:
    """Every prompt (--repeats times) through every (precision, configuration), in rotating order."""
    results = {name: {config: Results(config) for config in configs} for name in addresses}
    jobs = [(name, config) for name in addresses for config in configs]
    async with AsyncExitStack() as channels:
        stubs = {name: generation_pb2_grpc.GenerationStub(await channels.enter_async_context(
            grpc.aio.insecure_channel(address))) for name, address in addresses.items()}
        for name, config in jobs:  # unmeasured: the first calls pay each stack's one-time costs
            await run_service(stubs[name], config, prompts[0], args, args.seed)
        total = len(prompts) * args.repeats
        for n, (i, prompt_ids) in enumerate((i, p) for _ in range(args.repeats) for i, p in enumerate(prompts)):
            for name, config in jobs[n % len(jobs):] + jobs[: n % len(jobs)]:
                run = await run_service(stubs[name], config, prompt_ids, args, args.seed + i)
                results[name][config].runs.append(run)
                print(f"[{n + 1}/{total}] {name:<9} {config.name:<17} {len(run.tokens) / run.seconds:6.1f} tokens/s",
                      file=sys.stderr, flush=True)
    return results


def generate_outputs(peers: Peers, prompts: list[list[int]], args: argparse.Namespace) -> list[list[int]]:
    return [peers.run(GENERATE, prompt_ids, args, args.seed + i).tokens for i, prompt_ids in enumerate(prompts)]


def inexact_prompts(swept: Swept, generated: list[list[int]]) -> dict[str, list[int]]:
    """By configuration, the prompts with an output at this precision (in any repeat) that differs from generate()'s."""
    n = len(generated)
    return {config.name: sorted({j % n for j, run in enumerate(r.runs) if run.tokens != generated[j % n]})
            for config, r in swept.results.items()}


def summarize_precision(swept: Swept, reference: Swept, scorer: Peers, prompts: list[list[int]], greedy: bool) -> dict:
    """One precision's row but for the ratios to float32 and llama.cpp; `prompts`: the prompt of each run."""
    none, speculative = swept.results[NONE], swept.results.get(SPECULATIVE)
    none_tps = statistics.median(none.tokens_per_second())
    spec_tps = statistics.median(speculative.tokens_per_second()) if speculative else None
    row = {
        "precision": swept.label,
        "served": swept.served,
        "runs": len(none.runs),
        "none_tokens_per_second": none_tps,
        "speculative_tokens_per_second": spec_tps,
        "speculative_vs_none": spec_tps / none_tps if spec_tps is not None else None,
        "float32_mean_log_likelihood": statistics.mean(
            scorer.mean_log_likelihood(p, run.tokens) for p, run in zip(prompts, none.runs)),
    }
    if greedy:  # sampled outputs are compared by their likelihood only
        pairs = list(zip(none.runs, reference.results[NONE].runs))
        row["agreement_with_float32"] = statistics.mean(
            common_prefix_len(a.tokens, b.tokens) / len(b.tokens) for a, b in pairs)
        row["identical_to_float32"] = sum(a.tokens == b.tokens for a, b in pairs)
    return row


def summarize(swept: list[Swept], args: argparse.Namespace, prompts: list[list[int]],
              llama_cpp: dict[str, float] | None) -> list[dict]:
    """One row per precision, float32's first; `llama_cpp`: llama-bench tokens/s by served precision."""
    greedy = args.temperature == 0
    scorer = Peers(args.target_model, "")  # float32: the judge of every precision's output
    rows = [summarize_precision(s, swept[0], scorer, prompts * args.repeats, greedy) for s in swept]
    for s, row in zip(swept, rows):
        row["vs_float32"] = row["none_tokens_per_second"] / rows[0]["none_tokens_per_second"]
        row["log_likelihood_vs_float32"] = row["float32_mean_log_likelihood"] - rows[0]["float32_mean_log_likelihood"]
        if llama_cpp is not None:
            row["llama_cpp_gguf"] = GGUF_TYPES[s.served]
            row["llama_cpp_tokens_per_second"] = llama_cpp[s.served]
            row["ours_vs_llama_cpp"] = row["none_tokens_per_second"] / llama_cpp[s.served]
    if greedy:
        generated: dict[str, list[list[int]]] = {}
        for s, row in zip(swept, rows):
            if s.served not in generated:
                peers = scorer if s.served == REFERENCE else Peers(args.target_model, "", s.served)
                generated[s.served] = generate_outputs(peers, prompts, args)
            row["inexact_prompts"] = inexact_prompts(s, generated[s.served])
            row["exact_prompts"] = len(prompts) - len(set().union(*row["inexact_prompts"].values()))
    return rows


def llama_cpp_speeds(llama: LlamaCpp, swept: list[Swept], args: argparse.Namespace) -> dict[str, float]:
    """llama-bench's decode tokens/s for each served precision's GGUF type."""
    speeds = {}
    for precision in dict.fromkeys(s.served for s in swept):
        print(f"llama.cpp: llama-bench on {GGUF_TYPES[precision]}", file=sys.stderr, flush=True)
        speeds[precision] = llama.decode_tokens_per_second(llama.gguf(args.target_model, precision),
                                                           args.max_new_tokens)
    return speeds


def markdown_table(rows: list[dict], args: argparse.Namespace, prompts: int, threads: int) -> str:
    llama = "llama_cpp_tokens_per_second" in rows[0]
    header = ["precision", "draft=none tok/s", "× float32", "speculative tok/s", "speculative / draft=none",
              "agreement with float32 (identical)", "float32 log-lik (Δ)", "= generate()"]
    header += ["llama.cpp tok/s (GGUF)", "ours / llama.cpp"] if llama else []
    runs = rows[0]["runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        spec = r["speculative_tokens_per_second"] is not None
        cells = [
            r["precision"],
            f"{r['none_tokens_per_second']:.1f}",
            f"{r['vs_float32']:.2f}×",
            f"{r['speculative_tokens_per_second']:.1f}" if spec else "–",
            f"{r['speculative_vs_none']:.2f}×" if spec else "–",
            f"{r['agreement_with_float32']:.2f} ({r['identical_to_float32']}/{runs})" if "identical_to_float32" in r
            else "–",
            f"{r['float32_mean_log_likelihood']:.3f} ({r['log_likelihood_vs_float32']:+.3f})",
            f"{r['exact_prompts']}/{prompts}" if "exact_prompts" in r else "–",
        ]
        if llama:
            cells += [f"{r['llama_cpp_tokens_per_second']:.1f} ({r['llama_cpp_gguf']})",
                      f"{r['ours_vs_llama_cpp']:.2f}×"]
        lines.append("| " + " | ".join(cells) + " |")
    caption = (
        f"Tokens/s: medians of {prompts * args.repeats} runs ({prompts} prompts, --repeats {args.repeats}) of "
        f"{args.max_new_tokens} new tokens, --threads {threads} for every model, through the stack (orchestrator, "
        "draft and target services over gRPC); "
        "speculative: the model draft at adaptive k. Agreement: the share of float32's draft=none output "
        "that each precision's draft=none output reproduces before the first difference. Log-lik: the float32 "
        "target's mean log-likelihood of each precision's draft=none output (Δ: against float32's own). "
        "= generate(): prompts whose greedy outputs, draft=none and speculative, equal transformers "
        "generate() at the same precision."
    )
    if llama:
        caption += (f" llama.cpp: llama-bench on the GGUF type shown, timing pure decode of {args.max_new_tokens} "
                    f"tokens after an empty prompt in one process with no server (-t {threads}, the median of its "
                    "repetitions), while ours goes through three services.")
    return "\n".join(lines) + "\n\n" + caption


def main(args: argparse.Namespace) -> None:
    names = [REFERENCE, *dict.fromkeys(name for name in args.dtypes if name != REFERENCE)]
    _, prompts = prompt_set(args)
    args.out.mkdir(parents=True, exist_ok=True)
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)  # generate() here computes as the services do
    llama = LlamaCpp(args.llama_cpp, args.out, threads) if args.llama_cpp else None
    if llama is not None:
        llama.gguf(args.target_model, REFERENCE)  # the conversion, before the stacks: it is what fails, when it does
    configs = [NONE, SPECULATIVE] if args.draft_model else [NONE]
    print(f"specdec bench: precisions {','.join(names)} x {len(configs)} configurations, {len(prompts)} prompts x "
          f"{args.repeats} repeats of {args.max_new_tokens} tokens; service logs in {args.out}/services-*.log",
          file=sys.stderr)
    with ExitStack() as stacks:
        started = {name: start_stack(stacks, args, name, threads) for name in names}
        served = {name: served_precision(stack) for name, stack in started.items()}
        results = asyncio.run(run_interleaved(args, {n: s.address for n, s in started.items()}, configs, prompts))
    swept = [Swept(name, served[name], results[name]) for name in names]
    # The stacks have stopped: llama-bench has the machine to itself.
    llama_cpp = llama_cpp_speeds(llama, swept, args) if llama is not None else None
    rows = summarize(swept, args, prompts, llama_cpp)
    table = markdown_table(rows, args, len(prompts), threads)
    print(table)
    settings = {k: str(v) for k, v in vars(args).items() if k != "func"}
    (args.out / "precision.json").write_text(json.dumps({"settings": settings, "results": rows}, indent=2))
    (args.out / "precision.md").write_text(table + "\n")
    print(f"wrote {args.out / 'precision.json'} and precision.md", file=sys.stderr)

"""`specdec soak`: keeps a stack of its own busy for a while and checks it stays correct and lean.

It starts target, draft and orchestrator as real processes on free loopback ports, runs every prompt
once, alone, greedy, for the reference tokens, then keeps --streams concurrent greedy streams busy
for --minutes (asyncio tasks over one channel, taking prompts round-robin) and checks every output
against its prompt's reference. It samples each service's resident memory (RSS) every few seconds.
The warm RSS is the first sample taken once 20% of the soak has passed (the caches and allocator
have seen the load by then); growth is the last sample (taken after the streams drain) against it.

Exits non-zero on any error, any mismatch, a service that exits, or RSS growth of 10% or more.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil

from specdec.bench.command import read_records
from specdec.cli.launcher import ROLES, LocalStack, StackSpec, free_port
from specdec.default_models import prepare_if_named
from specdec.v1 import generation_pb2, generation_pb2_grpc

WARM_UP_SHARE = 0.2  # the warm RSS is the first sample after this share of the soak
MAX_RSS_GROWTH_PCT = 10.0
REQUEST_TIMEOUT_S = 600.0
MIB = 2**20


@dataclass
class Tally:
    requests: int = 0
    tokens: int = 0
    seconds: float = 0.0  # the soak's wall time, the drain included
    mismatches: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # by gRPC status code name
    latencies: list[float] = field(default_factory=list)
    rss: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # role -> [(elapsed s, bytes)]
    exited: list[str] = field(default_factory=list)


async def generate(stub, messages: list[dict], max_new_tokens: int) -> list[int]:
    request = generation_pb2.GenerateRequest(
        messages=[generation_pb2.Message(role=m["role"], content=m["content"]) for m in messages],
        max_new_tokens=max_new_tokens,  # temperature unset: greedy
    )
    tokens: list[int] = []
    async for chunk in stub.Generate(request, timeout=REQUEST_TIMEOUT_S):
        tokens.extend(chunk.token_ids)
    return tokens


async def run_soak(args: argparse.Namespace, stack: LocalStack, prompts: list[list[dict]]) -> Tally:
    tally = Tally(rss={role: [] for role in stack.processes})
    async with grpc.aio.insecure_channel(stack.address) as channel:
        stub = generation_pb2_grpc.GenerationStub(channel)
        try:
            references = [await generate(stub, messages, args.max_new_tokens) for messages in prompts]
        except grpc.aio.AioRpcError as error:
            sys.exit(f"specdec soak: a solo reference run failed: {error.code().name}: {error.details()}")
        print(f"specdec soak: {len(references)} solo references; {args.streams} streams for {args.minutes:g} min",
              file=sys.stderr, flush=True)
        duration = args.minutes * 60
        interval = min(5.0, max(duration / 10, 0.5))
        processes = {role: psutil.Process(process.pid) for role, process in stack.processes.items()}
        started = time.monotonic()
        next_prompt = itertools.count()

        def sample() -> None:
            elapsed = time.monotonic() - started
            for role, process in processes.items():
                try:
                    tally.rss[role].append((elapsed, process.memory_info().rss))
                except psutil.NoSuchProcess:
                    pass
            tally.exited = stack.exited()

        async def stream() -> None:
            while time.monotonic() - started < duration and not tally.exited:
                i = next(next_prompt) % len(prompts)
                begun = time.perf_counter()
                try:
                    tokens = await generate(stub, prompts[i], args.max_new_tokens)
                except grpc.aio.AioRpcError as error:
                    tally.errors[error.code().name] += 1
                    await asyncio.sleep(0.1)  # no hot loop against a stack that is down
                    continue
                tally.latencies.append(time.perf_counter() - begun)
                tally.requests += 1
                tally.tokens += len(tokens)
                tally.mismatches += tokens != references[i]

        async def monitor() -> None:
            while True:
                sample()
                elapsed = time.monotonic() - started
                print(f"[{elapsed:6.1f} s] {tally.requests} requests, {sum(tally.errors.values())} errors, "
                      f"{tally.mismatches} mismatches, {tally.tokens / max(elapsed, 1e-9):6.1f} tokens/s",
                      file=sys.stderr, flush=True)
                await asyncio.sleep(interval)

        monitoring = asyncio.create_task(monitor())
        await asyncio.gather(*(stream() for _ in range(args.streams)))
        monitoring.cancel()
        tally.seconds = time.monotonic() - started
        sample()  # the end sample, after the streams drained
    return tally


def percentile(values: list[float], share: float) -> float:
    """Nearest rank; 0 for no values."""
    ordered = sorted(values)
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)] if ordered else 0.0


def summarize(tally: Tally, duration_s: float) -> dict:
    rss = {}
    for role, samples in tally.rss.items():
        warm = next((b for t, b in samples if t >= WARM_UP_SHARE * duration_s), samples[-1][1] if samples else 0)
        end = samples[-1][1] if samples else 0
        rss[role] = {"warm_mib": round(warm / MIB, 1), "end_mib": round(end / MIB, 1),
                     "growth_pct": round(100 * (end - warm) / warm, 2) if warm else 0.0}
    return {
        "seconds": round(tally.seconds, 1),
        "requests": tally.requests,
        "errors": dict(tally.errors),
        "mismatches": tally.mismatches,
        "tokens": tally.tokens,
        "tokens_per_second": round(tally.tokens / tally.seconds, 2) if tally.seconds else 0.0,
        "latency_median_s": round(statistics.median(tally.latencies), 4) if tally.latencies else 0.0,
        "latency_p95_s": round(percentile(tally.latencies, 0.95), 4),
        "rss": rss,
        "exited": tally.exited,
    }


def failures(summary: dict) -> list[str]:
    """What makes the soak fail; empty when it passed."""
    found = [f"{count} {code} errors" for code, count in summary["errors"].items()]
    if summary["mismatches"]:
        found.append(f"{summary['mismatches']} outputs differ from their solo runs")
    found += [f"the {role} service exited" for role in summary["exited"]]
    found += [f"{role} RSS grew {rss['growth_pct']:.1f}% after warm-up" for role, rss in summary["rss"].items()
              if rss["growth_pct"] >= MAX_RSS_GROWTH_PCT]
    return found


def markdown(summary: dict) -> str:
    errors = ", ".join(f"{code} {n}" for code, n in summary["errors"].items()) or "0"
    rows = [("requests completed", summary["requests"]), ("errors", errors), ("mismatches", summary["mismatches"]),
            ("tokens/s", summary["tokens_per_second"]), ("latency median (s)", summary["latency_median_s"]),
            ("latency p95 (s)", summary["latency_p95_s"])]
    rows += [(f"{role} RSS MiB: warm → end (growth)", f"{r['warm_mib']} → {r['end_mib']} ({r['growth_pct']:+.1f}%)")
             for role, r in summary["rss"].items()]
    return "\n".join(["| measure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])


def main(args: argparse.Namespace) -> int:
    prompts = [record["messages"] for record in read_records(args.prompts, args.limit)]
    prepare_if_named(args.target_model, args.draft_model)
    spec = StackSpec(target_model=args.target_model, draft_model=args.draft_model,
                     ports={role: free_port() for role in ROLES}, model_flags=("--threads", str(args.threads)),
                     orchestrator_flags=())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    log_path = (args.out.with_suffix(".services.log") if args.out
                else Path(tempfile.mkstemp(prefix="specdec-soak-", suffix=".log")[1]))
    print(f"specdec soak: service logs in {log_path}", file=sys.stderr)
    with open(log_path, "w") as log, LocalStack(spec, output=log, log=lambda _: None) as stack:
        tally = asyncio.run(run_soak(args, stack, prompts))
    summary = summarize(tally, args.minutes * 60)
    summary["failures"] = failures(summary)
    print(markdown(summary))
    if args.out:
        settings = {k: str(v) for k, v in vars(args).items() if k != "func"}
        args.out.write_text(json.dumps({"settings": settings, **summary}, indent=2))
    for failure in summary["failures"]:
        print(f"specdec soak: FAIL: {failure}", file=sys.stderr)
    return 1 if summary["failures"] else 0

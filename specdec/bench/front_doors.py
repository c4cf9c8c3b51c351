"""What the HTTP API costs over gRPC: the same greedy requests through both front doors, interleaved.

Starts its own stack (the default pair unless told otherwise) with the OpenAI-compatible HTTP API
on, then sends every prompt once through each door, alternating which goes first, as streaming
requests: gRPC with grpc.aio, HTTP with the official `openai` client (what a user of it pays). For
each request it measures, at the client, the time to the first chunk and the time per output token
in all (request start to last chunk, over the tokens generated: an HTTP chunk does not say how many
tokens it holds, so a per-chunk measure would not compare); it reports the medians side by side,
the HTTP/gRPC ratio, and whether every pair of outputs was identical.

    .venv/bin/python -m specdec.bench.front_doors [--limit 24] [--max-new-tokens 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import grpc
import openai

from specdec.bench.command import DEFAULT_PROMPTS, read_records
from specdec.cli.launcher import ROLES, LocalStack, StackSpec, free_port
from specdec.default_models import DEFAULT_DRAFT, DEFAULT_MODEL, prepare_if_named
from specdec.v1 import generation_pb2, generation_pb2_grpc

DOORS = ("grpc", "http")


class Timed:
    """What the client saw of one streamed request."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first = self.last = 0.0
        self.text: list[str] = []
        self.tokens = 0

    def chunk(self, text: str) -> None:
        self.last = time.perf_counter()
        self.first = self.first or self.last
        self.text.append(text)

    def seconds(self) -> dict[str, float]:
        return {"first_chunk": self.first - self.started, "per_token": (self.last - self.started) / self.tokens}


async def through_grpc(stub, messages: list[dict], max_new_tokens: int) -> Timed:
    request = generation_pb2.GenerateRequest(
        messages=[generation_pb2.Message(**m) for m in messages], max_new_tokens=max_new_tokens, ignore_eos=True,
    )
    timed = Timed()
    async for chunk in stub.Generate(request, timeout=600):
        timed.chunk(chunk.text)
        timed.tokens += len(chunk.token_ids)
    return timed


async def through_http(client: openai.AsyncOpenAI, model: str, messages: list[dict], max_new_tokens: int) -> Timed:
    timed = Timed()
    stream = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_new_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )
    async for chunk in stream:
        if chunk.choices:
            timed.chunk(chunk.choices[0].delta.content or "")
        if chunk.usage:
            timed.tokens = chunk.usage.completion_tokens
    return timed


async def measure(args: argparse.Namespace, grpc_address: str, http_url: str, prompts: list[list[dict]]) -> dict:
    seconds: dict[str, dict[str, list[float]]] = {door: {"first_chunk": [], "per_token": []} for door in DOORS}
    same = 0
    async with grpc.aio.insecure_channel(grpc_address) as channel, \
            openai.AsyncOpenAI(base_url=http_url + "/v1", api_key="unused", max_retries=0) as client:
        stub = generation_pb2_grpc.GenerationStub(channel)
        model = (await client.models.list()).data[0].id
        for i, messages in enumerate(prompts):
            texts = {}
            for door in (DOORS if i % 2 == 0 else DOORS[::-1]):
                if door == "grpc":
                    timed = await through_grpc(stub, messages, args.max_new_tokens)
                else:
                    timed = await through_http(client, model, messages, args.max_new_tokens)
                texts[door] = "".join(timed.text)
                for kind, value in timed.seconds().items():
                    seconds[door][kind].append(value)
            same += texts["grpc"] == texts["http"]
            print(f"[{i + 1}/{len(prompts)}] per token: grpc {1000 * seconds['grpc']['per_token'][-1]:6.1f} ms, "
                  f"http {1000 * seconds['http']['per_token'][-1]:6.1f} ms", file=sys.stderr, flush=True)
    medians = {door: {k: statistics.median(v) for k, v in kinds.items()} for door, kinds in seconds.items()}
    return {
        "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "median_ms": {door: {k: 1000 * v for k, v in kinds.items()} for door, kinds in medians.items()},
        "http_over_grpc": {k: medians["http"][k] / medians["grpc"][k] for k in ("first_chunk", "per_token")},
        "identical_outputs": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N prompts (0 = all)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--target-model", default=DEFAULT_MODEL)
    parser.add_argument("--draft-model", default=DEFAULT_DRAFT)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per model service")
    parser.add_argument("--out", type=Path, default=None, help="also write the results here, as JSON")
    args = parser.parse_args()
    prompts = [record["messages"] for record in read_records(args.prompts, args.limit)]
    prepare_if_named(args.target_model, args.draft_model)
    http_port = free_port()
    spec = StackSpec(target_model=args.target_model, draft_model=args.draft_model,
                     ports={role: free_port() for role in ROLES}, model_flags=("--threads", str(args.threads)),
                     orchestrator_flags=("--http-port", str(http_port)))
    with LocalStack(spec, output=sys.stderr, log=lambda _: None) as stack:
        results = asyncio.run(measure(args, stack.address, f"http://127.0.0.1:{http_port}", prompts))
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

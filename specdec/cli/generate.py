"""`specdec generate PROMPT`: a thin client that streams one generation from the orchestrator."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import grpc
from google.protobuf import json_format

from specdec.cli.launcher import DEFAULT_PORTS
from specdec.runtime import tls
from specdec.v1 import generation_pb2, generation_pb2_grpc


def add_parser(commands) -> None:
    generate = commands.add_parser("generate", help="stream a generation from the orchestrator")
    generate.add_argument("prompt", help="sent as a user message (chat template) unless --raw")
    generate.add_argument("--address", default=f"localhost:{DEFAULT_PORTS['orchestrator']}")
    generate.add_argument("--raw", action="store_true", help="send the prompt as raw text, no chat template")
    generate.add_argument("--max-new-tokens", type=int, default=0)
    generate.add_argument("--temperature", type=float, default=None, help="0 = greedy (the default)")
    generate.add_argument("--top-p", type=float, default=None)
    generate.add_argument("--top-k", type=int, default=0)
    generate.add_argument("--seed", type=int, default=None)
    generate.add_argument("-k", "--num-speculative-tokens", type=int, default=0)
    generate.add_argument("--draft", choices=["model", "ngram", "none"], default="")
    generate.add_argument("--lenience", type=float, default=0.0)
    generate.add_argument("--stop", action="append", default=[])
    generate.add_argument("--ignore-eos", action="store_true")
    generate.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    generate.add_argument("--timeout-s", type=float, default=600.0)
    generate.add_argument("--api-token-file", default="", help="sends the file's first token as a bearer token")
    tls.add_arguments(generate, client=True)
    generate.set_defaults(func=_generate)


def build_request(args: argparse.Namespace) -> generation_pb2.GenerateRequest:
    request = generation_pb2.GenerateRequest(
        max_new_tokens=args.max_new_tokens, top_k=args.top_k, num_speculative_tokens=args.num_speculative_tokens,
        draft=args.draft, lenience=args.lenience, stop=args.stop, ignore_eos=args.ignore_eos,
    )
    if args.raw:
        request.prompt = args.prompt
    else:
        request.messages.add(role="user", content=args.prompt)
    for field, value in (("temperature", args.temperature), ("top_p", args.top_p), ("seed", args.seed)):
        if value is not None:
            setattr(request, field, value)
    return request


def _generate(args: argparse.Namespace) -> None:
    try:
        asyncio.run(_stream_generation(args))
    except grpc.aio.AioRpcError as error:
        sys.exit(f"specdec: {error.code().name}: {error.details()}")


async def _stream_generation(args: argparse.Namespace) -> None:
    text, token_ids, last = [], [], generation_pb2.GenerateResponse()
    certificates = tls.TlsFiles.from_paths(args.tls_cert, args.tls_key, args.tls_ca, server=False)
    async with tls.aio_channel(args.address, certificates) as channel:
        stub = generation_pb2_grpc.GenerationStub(channel)
        metadata = [("authorization", f"Bearer {_first_token(args.api_token_file)}")] if args.api_token_file else None
        async for chunk in stub.Generate(build_request(args), timeout=args.timeout_s, metadata=metadata):
            text.append(chunk.text)
            token_ids.extend(chunk.token_ids)
            last = chunk
            if not args.json:
                print(chunk.text, end="", flush=True)
    stats = json_format.MessageToDict(last.stats, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    if args.json:
        print(json.dumps({"text": "".join(text), "token_ids": token_ids, "finish_reason": last.finish_reason,
                          "stats": stats}, indent=2))
        return
    s = last.stats
    print(f"\n\n[{last.finish_reason}] {s.generated_tokens} tokens in {s.elapsed_seconds:.2f} s "
          f"({s.tokens_per_second:.1f} tokens/s) | draft={s.draft}{' (' + s.draft_model + ')' if s.draft_model else ''} "
          f"| drafted {s.drafted_tokens}, accepted {s.accepted_tokens} (acceptance {s.acceptance_rate:.2f}) "
          f"| {s.mean_accepted_tokens:.2f} tokens per target call ({s.target_calls} calls) "
          f"| {s.wire_bytes / max(s.generated_tokens, 1):.0f} wire bytes/token", file=sys.stderr)


def _first_token(path: str) -> str:
    with open(path) as tokens:
        return next((line.strip() for line in tokens if line.strip()), "")

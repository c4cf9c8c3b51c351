"""The `specdec` command line: serve, up, generate, health, prepare."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time

import grpc
from google.protobuf import json_format

from specdec import bench
from specdec import distill
from specdec.embedded import DEFAULT_DRAFT, DEFAULT_MODEL, ensure_embedded_model
from specdec.launcher import DEFAULT_PORTS, LocalStack, ServiceFailed, StackSpec
from specdec import telemetry
from specdec.serving import check_health, serve
from specdec.v1 import generation_pb2, generation_pb2_grpc

# torch and transformers load only in the commands that need them: `specdec health` runs as a
# container healthcheck every few seconds and `specdec generate` is a thin client.

PORTS = DEFAULT_PORTS
METRICS_PORT = 9464


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="specdec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve(commands)
    _add_up(commands)
    _add_generate(commands)
    bench.add_parser(commands)
    distill.add_parser(commands)
    health = commands.add_parser("health", help="exit 0 when the gRPC server at ADDRESS reports SERVING")
    health.add_argument("address")
    health.set_defaults(func=lambda args: sys.exit(0 if asyncio.run(check_health(args.address)) else 1))
    prepare = commands.add_parser("prepare", help="fetch and convert the embedded default model into the cache")
    prepare.set_defaults(func=_prepare)
    args = parser.parse_args(argv)
    args.func(args)


def _prepare(args: argparse.Namespace) -> None:
    ensure_embedded_model()


# --- serve -------------------------------------------------------------------------------------


def _add_serve(commands) -> None:
    serve = commands.add_parser("serve", help="run one service (what compose and Kubernetes run)")
    roles = serve.add_subparsers(dest="role", required=True)
    for role in ("draft", "target", "orchestrator"):
        parser = roles.add_parser(role)
        parser.add_argument("--host", default="0.0.0.0")
        parser.add_argument("--port", type=int, default=PORTS[role])
        parser.add_argument("--metrics-port", type=int, default=METRICS_PORT, help="Prometheus /metrics (0 = off)")
        parser.add_argument("--max-connection-age-s", type=float, default=0.0,
                            help="close client connections after this long so new replicas get traffic (0 = never)")
        if role == "orchestrator":
            parser.add_argument("--draft-address", default=f"localhost:{PORTS['draft']}")
            parser.add_argument("--target-address", default=f"localhost:{PORTS['target']}")
            parser.add_argument("--tokenizer", default=DEFAULT_MODEL, help="the target model's tokenizer")
            parser.add_argument("--default-draft", choices=["model", "ngram", "none"], default=None,
                                help="default: model when the draft service has one, else ngram")
            parser.add_argument("--default-k", type=int, default=0, help="k when a request leaves it 0 (0 = adaptive)")
            parser.add_argument("--max-adaptive-k", type=int, default=8, help="the largest k adaptive k picks")
            parser.add_argument("--default-max-new-tokens", type=int, default=256)
            parser.add_argument("--call-timeout-s", type=float, default=60.0, help="deadline for the reply to each draft or target step")
        else:
            parser.add_argument("--model", default=DEFAULT_MODEL if role == "target" else "",
                                help="HF id, directory, .gguf file, 'default' or 'default-draft'"
                                + (" ('' = n-gram only)" if role == "draft" else ""))
            parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
            parser.add_argument("--device", default="cpu")
            parser.add_argument("--max-k", type=int, default=16, help="largest k a call may ask for")
            parser.add_argument("--cache-mb", type=int, default=1024, help="KV cache budget (LRU over sessions)")
            parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
            parser.add_argument("--trust-remote-code", action="store_true")
        parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.role} %(levelname)s %(message)s")
    telemetry.setup_tracing(f"specdec-{args.role}")
    asyncio.run(_serve_role(args))


async def _serve_role(args: argparse.Namespace) -> None:
    # The spec is built inside the event loop: gRPC aio channels bind to the loop they are made in.
    if args.role == "orchestrator":
        from orchestrator.server import OrchestratorOptions, orchestrator_server

        spec = orchestrator_server(
            OrchestratorOptions(
                draft_address=args.draft_address,
                target_address=args.target_address,
                tokenizer=args.tokenizer,
                default_draft=args.default_draft or "",
                default_k=args.default_k,
                max_adaptive_k=args.max_adaptive_k,
                default_max_new_tokens=args.default_max_new_tokens,
                call_timeout_s=args.call_timeout_s,
            )
        )
    else:
        from specdec.hosted_model import ModelOptions, configure_torch_threads

        configure_torch_threads(args.threads)
        options = ModelOptions(args.dtype, args.device, args.cache_mb, args.max_k, args.trust_remote_code)
        if args.role == "draft":
            from draft_service.server import draft_server as build
        else:
            from target_service.server import target_server as build
        spec = build(args.model, options)
    from prometheus_client import start_http_server

    if args.metrics_port:
        start_http_server(args.metrics_port)
    await serve(spec, host=args.host, port=args.port, max_connection_age_s=args.max_connection_age_s)


# --- up ----------------------------------------------------------------------------------------


def _add_up(commands) -> None:
    up = commands.add_parser("up", help="start draft, target and orchestrator on this machine")
    up.add_argument("--target-model", default=DEFAULT_MODEL)
    up.add_argument("--draft-model", default=DEFAULT_DRAFT,
                    help="default-draft = the shipped distilled draft; '' = n-gram drafting only, no draft weights")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=PORTS["orchestrator"])
    up.add_argument("--draft-port", type=int, default=PORTS["draft"])
    up.add_argument("--target-port", type=int, default=PORTS["target"])
    up.add_argument("--metrics-port", type=int, default=METRICS_PORT,
                    help="orchestrator's /metrics; draft and target use the next two ports (0 = off)")
    up.add_argument("--default-k", type=int, default=0, help="0 = adaptive")
    up.add_argument("--dtype", default="float32")
    up.add_argument("--device", default="cpu")
    up.set_defaults(func=_up)


def _up(args: argparse.Namespace) -> None:
    if DEFAULT_MODEL in (args.target_model, args.draft_model):
        ensure_embedded_model()  # once, here, rather than raced by two services
    spec = StackSpec(
        target_model=args.target_model,
        draft_model=args.draft_model,
        host=args.host,
        ports={"orchestrator": args.port, "draft": args.draft_port, "target": args.target_port},
        # The orchestrator's metrics on --metrics-port, draft's and target's on the next two.
        metrics_ports={role: args.metrics_port + offset if args.metrics_port else 0
                       for offset, role in enumerate(("orchestrator", "draft", "target"))},
        model_flags=("--dtype", args.dtype, "--device", args.device),
        orchestrator_flags=("--default-k", str(args.default_k)),
    )
    stack = LocalStack(spec)
    # Explicit handlers: a shell starts background jobs with SIGINT ignored, and `kill -INT` must still stop us.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        stack.start()
        print(f"\nspecdec is up: the Generation API listens on {stack.address} "
              f"(target {args.target_model}, draft {args.draft_model or 'n-gram'}).\n"
              f"Try: specdec generate --address {stack.address} \"Why is the sky blue?\"\n"
              "Press Ctrl-C to stop.", flush=True)
        while not stack.exited():
            time.sleep(0.5)
        print(f"specdec: {', '.join(stack.exited())} exited; stopping the stack", file=sys.stderr)
        sys.exit(1)
    except ServiceFailed as error:
        sys.exit(f"specdec: {error}")
    except KeyboardInterrupt:
        print("\nspecdec: stopping ...", file=sys.stderr)
    finally:
        stack.stop()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


# --- generate ----------------------------------------------------------------------------------


def _add_generate(commands) -> None:
    generate = commands.add_parser("generate", help="stream a generation from the orchestrator")
    generate.add_argument("prompt", help="sent as a user message (chat template) unless --raw")
    generate.add_argument("--address", default=f"localhost:{PORTS['orchestrator']}")
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
    async with grpc.aio.insecure_channel(args.address) as channel:
        stub = generation_pb2_grpc.GenerationStub(channel)
        async for chunk in stub.Generate(build_request(args), timeout=args.timeout_s):
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

"""`specdec serve draft|target|orchestrator`: one service, what compose and Kubernetes run."""

from __future__ import annotations

import argparse
import asyncio
import logging

from orchestrator.admission import DEFAULT_MAX_RUNNING, DEFAULT_MAX_WAITING
from specdec.cli.launcher import DEFAULT_PORTS, METRICS_PORT, die_with_parent
from specdec.default_models import DEFAULT_MODEL
from specdec.runtime import precision_names, tls


def add_parser(commands) -> None:
    serve = commands.add_parser("serve", help="run one service (what compose and Kubernetes run)")
    roles = serve.add_subparsers(dest="role", required=True)
    for role in ("draft", "target", "orchestrator"):
        parser = roles.add_parser(role)
        parser.add_argument("--host", default="0.0.0.0")
        parser.add_argument("--port", type=int, default=DEFAULT_PORTS[role])
        parser.add_argument("--metrics-port", type=int, default=METRICS_PORT, help="Prometheus /metrics (0 = off)")
        parser.add_argument("--metrics-host", default="0.0.0.0", help="the address /metrics listens on")
        parser.add_argument("--reflection", action=argparse.BooleanOptionalAction, default=True,
                            help="gRPC server reflection (grpcurl and other tools discover the API with it)")
        tls.add_arguments(parser)
        parser.add_argument("--grace-s", type=float, default=25.0,
                            help="on SIGTERM: health turns NOT_SERVING, new calls are refused, and calls in flight "
                                 "get this long to finish (keep it below the orchestrator's and Kubernetes' limits)")
        parser.add_argument("--max-connection-age-s", type=float, default=0.0,
                            help="close client connections after this long so new replicas get traffic (0 = never)")
        if role == "orchestrator":
            parser.add_argument("--draft-address", default=f"localhost:{DEFAULT_PORTS['draft']}")
            parser.add_argument("--target-address", default=f"localhost:{DEFAULT_PORTS['target']}")
            parser.add_argument("--tokenizer", default=DEFAULT_MODEL, help="the target model's tokenizer")
            parser.add_argument("--default-draft", choices=["model", "ngram", "none"], default=None,
                                help="default: model when the draft service has one, else ngram")
            parser.add_argument("--default-k", type=int, default=0, help="k when a request leaves it 0 (0 = adaptive)")
            parser.add_argument("--max-adaptive-k", type=int, default=8, help="the largest k adaptive k picks")
            parser.add_argument("--default-max-new-tokens", type=int, default=256)
            parser.add_argument("--call-timeout-s", type=float, default=60.0, help="deadline for the reply to each draft or target step")
            parser.add_argument("--max-concurrent-streams", type=int, default=DEFAULT_MAX_RUNNING,
                                help="streams generating at once")
            parser.add_argument("--max-queued-streams", type=int, default=DEFAULT_MAX_WAITING,
                                help="streams waiting for a place; beyond both, RESOURCE_EXHAUSTED at once")
            parser.add_argument("--api-token-file", default="",
                                help="bearer tokens, one per line, that Generate and the HTTP API require ('' = open)")
            parser.add_argument("--http-port", type=int, default=0,
                                help="serve the OpenAI-compatible HTTP API on this port too, on --host (0 = off)")
        else:
            parser.add_argument("--model", default=DEFAULT_MODEL if role == "target" else "",
                                help="HF id, directory, .gguf file, 'default', 'default-draft' or 'default-eagle'"
                                + (" ('' = n-gram only)" if role == "draft" else ""))
            parser.add_argument("--dtype", default="float32", choices=precision_names.CHOICES,
                                help="float32 (greedy speculative output is exactly plain greedy's), bfloat16, "
                                     "float16, or int8/int4 weights with bfloat16 activations (CPU); auto picks the "
                                     "fastest for the device. Below float32 a verify pass can round a near-tie "
                                     "differently from one-token steps (README, \"Precision\")")
            parser.add_argument("--device", default="cpu")
            if role == "draft":
                parser.add_argument("--vocab-slice", default="",
                                    help="an LM draft scores only the FR-Spec slice of this EAGLE head (e.g. "
                                         "default-eagle: the target's 8,192 most frequent output tokens); exact")
            parser.add_argument("--max-k", type=int, default=16, help="largest k a call may ask for")
            parser.add_argument("--cache-mb", type=int, default=2048,
                                help="KV cache budget: slots of --max-context tokens, LRU over sessions")
            parser.add_argument("--max-context", type=int, default=2048,
                                help="tokens per session (prompt and output), at most the model's own context")
            parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
            parser.add_argument("--compile", action="store_true",
                                help="torch.compile the forward pass at load (minutes on a small CPU; README, "
                                     "\"Precision\", says what it gains)")
            parser.add_argument("--trust-remote-code", action="store_true")
        parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> None:
    die_with_parent()
    from specdec.runtime import telemetry

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.role} %(levelname)s %(message)s")
    telemetry.setup_tracing(f"specdec-{args.role}")
    asyncio.run(_serve_role(args))


async def _serve_role(args: argparse.Namespace) -> None:
    from prometheus_client import start_http_server

    from specdec.runtime.serving import serve

    try:
        certificates = tls.TlsFiles.from_paths(args.tls_cert, args.tls_key, args.tls_ca)
    except ValueError as error:
        raise SystemExit(f"specdec serve {args.role}: {error}") from None

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
                max_concurrent_streams=args.max_concurrent_streams,
                max_queued_streams=args.max_queued_streams,
                api_token_file=args.api_token_file,
                tls=certificates,
                http_host=args.host,
                http_port=args.http_port,
            )
        )
    else:
        import torch

        from specdec.runtime.hosted_model import ModelOptions

        threads = args.threads or torch.get_num_threads()
        torch.set_num_threads(1)  # this thread's small tensor work; the model thread takes `threads` (batching.py)
        options = ModelOptions(
            args.dtype, args.device, args.cache_mb, args.max_context, args.max_k, args.trust_remote_code, threads,
            args.compile, getattr(args, "vocab_slice", ""),
        )
        if args.role == "draft":
            from draft_service.server import draft_server as build
        else:
            from target_service.server import target_server as build
        spec = build(args.model, options)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_host)
    await serve(spec, host=args.host, port=args.port, max_connection_age_s=args.max_connection_age_s,
                grace_s=args.grace_s, tls=certificates, reflection=args.reflection)

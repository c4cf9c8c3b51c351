"""`specdec up`: draft, target and orchestrator as local processes, until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.admission import DEFAULT_MAX_RUNNING, DEFAULT_MAX_WAITING
from specdec.cli.launcher import DEFAULT_PORTS, METRICS_PORT, LocalStack, ServiceFailed, StackSpec
from specdec.default_models import DEFAULT_EAGLE, DEFAULT_MODEL, prepare_if_named
from specdec.runtime import precision_names
from specdec.runtime.tls import write_stack_certificates


def add_parser(commands) -> None:
    up = commands.add_parser("up", help="start draft, target and orchestrator on this machine")
    up.add_argument("--target-model", default=DEFAULT_MODEL)
    up.add_argument("--draft-model", default=DEFAULT_EAGLE,
                    help="default-eagle = the shipped EAGLE head (drafts from the target's features); default-draft = "
                         "the shipped distilled LM draft; '' = n-gram drafting only, no draft weights")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=DEFAULT_PORTS["orchestrator"])
    up.add_argument("--draft-port", type=int, default=DEFAULT_PORTS["draft"])
    up.add_argument("--target-port", type=int, default=DEFAULT_PORTS["target"])
    up.add_argument("--metrics-port", type=int, default=METRICS_PORT,
                    help="orchestrator's /metrics; draft and target use the next two ports (0 = off)")
    up.add_argument("--http-port", type=int, default=8000, help="the OpenAI-compatible HTTP API (0 = off)")
    up.add_argument("--max-concurrent-streams", type=int, default=DEFAULT_MAX_RUNNING,
                    help="streams generating at once")
    up.add_argument("--max-queued-streams", type=int, default=DEFAULT_MAX_WAITING, help="streams waiting for a place")
    up.add_argument("--api-token-file", default="", help="bearer tokens the public APIs require ('' = open)")
    up.add_argument("--tls", action="store_true",
                    help="TLS on every hop, mutual TLS between the services, with a throwaway CA made for this stack")
    up.add_argument("--target-replicas", type=int, default=1,
                    help="target processes; the first on --target-port, the others on free ports")
    up.add_argument("--draft-replicas", type=int, default=1,
                    help="draft processes; the first on --draft-port, the others on free ports")
    up.add_argument("--default-k", type=int, default=0, help="0 = adaptive")
    up.add_argument("--dtype", default="float32", choices=precision_names.CHOICES,
                    help="draft and target precision; auto picks for the device (README, \"Precision\")")
    up.add_argument("--device", default="cpu")
    up.add_argument("--compile", action="store_true", help="torch.compile draft and target at load (minutes)")
    up.set_defaults(func=_up)


def _up(args: argparse.Namespace) -> None:
    if min(args.target_replicas, args.draft_replicas) < 1:
        sys.exit("specdec: --target-replicas and --draft-replicas must be at least 1")
    prepare_if_named(args.target_model, args.draft_model)
    certificates = write_stack_certificates(Path(tempfile.mkdtemp(prefix="specdec-tls-"))) if args.tls else None
    spec = StackSpec(
        target_model=args.target_model,
        draft_model=args.draft_model,
        host=args.host,
        ports={"orchestrator": args.port, "draft": args.draft_port, "target": args.target_port},
        # The orchestrator's metrics on --metrics-port, draft's and target's on the next two.
        metrics_ports={role: args.metrics_port + offset if args.metrics_port else 0
                       for offset, role in enumerate(("orchestrator", "draft", "target"))},
        model_flags=("--dtype", args.dtype, "--device", args.device, *(("--compile",) if args.compile else ())),
        orchestrator_flags=("--default-k", str(args.default_k), "--http-port", str(args.http_port),
                            "--max-concurrent-streams", str(args.max_concurrent_streams),
                            "--max-queued-streams", str(args.max_queued_streams),
                            "--api-token-file", args.api_token_file),
        replicas={"target": args.target_replicas, "draft": args.draft_replicas},
        tls=certificates,
    )
    stack = LocalStack(spec)
    # Explicit handlers: a shell starts background jobs with SIGINT ignored, and `kill -INT` must still stop us.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        stack.start()
        print(f"\nspecdec is up: the Generation API listens on {stack.address} "
              f"(target {args.target_model} on {_replicas(spec, 'target')}, "
              f"draft {args.draft_model or 'n-gram'} on {_replicas(spec, 'draft')}).\n"
              f"Try: specdec generate --address {stack.address} \"Why is the sky blue?\""
              + (f" --tls-ca {certificates.ca}" if certificates else "") + "\n"
              + (f"The OpenAI-compatible API: http{'s' if args.tls else ''}://{args.host}:{args.http_port}/v1 "
                 "(POST /chat/completions, "
                 "/completions; GET /models)\n" if args.http_port else "")
              + "Press Ctrl-C to stop.", flush=True)
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


def _replicas(spec: StackSpec, role: str) -> str:
    return ", ".join(spec.address(name) for name in spec.names(role))


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt

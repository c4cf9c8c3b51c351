"""The `specdec` command line: serve, up, generate, health, prepare, bench, soak, distill."""

from __future__ import annotations

import argparse
import asyncio
import sys

from specdec.bench import command as bench_command
from specdec.cli import generate, serve, up
from specdec.cli.health import check_health
from specdec.distill import command as distill_command


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="specdec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(commands)
    up.add_parser(commands)
    generate.add_parser(commands)
    bench_command.add_parser(commands)
    bench_command.add_soak_parser(commands)
    distill_command.add_parser(commands)
    health = commands.add_parser("health", help="exit 0 when the gRPC server at ADDRESS reports SERVING")
    health.add_argument("address")
    health.set_defaults(func=lambda args: sys.exit(0 if asyncio.run(check_health(args.address)) else 1))
    prepare = commands.add_parser("prepare", help="fetch and convert the embedded default model into the cache")
    prepare.set_defaults(func=_prepare)
    args = parser.parse_args(argv)
    args.func(args)


def _prepare(args: argparse.Namespace) -> None:
    from specdec.default_models import ensure_embedded_model

    ensure_embedded_model()

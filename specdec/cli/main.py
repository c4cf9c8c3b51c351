"""The `specdec` command line: serve, up, generate, health, prepare, bench, soak, distill."""

from __future__ import annotations

import argparse

from specdec.bench import command as bench_command
from specdec.cli import generate, serve, up
from specdec.cli.health import run as health_command
from specdec.distill import command as distill_command
from specdec.runtime import tls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="specdec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(commands)
    up.add_parser(commands)
    generate.add_parser(commands)
    bench_command.add_parser(commands)
    bench_command.add_soak_parser(commands)
    distill_command.add_parser(commands)
    health = commands.add_parser("health", help="exit 0 when a gRPC server reports SERVING (ADDRESS, else "
                                 "$SPECDEC_HEALTH_ADDR, else the `specdec serve` process --pid runs)")
    health.add_argument("address", nargs="?", default=None, help="host:port (default: see above)")
    health.add_argument("--pid", type=int, default=1,
                        help="with no address: the process whose `specdec serve` command line names the server "
                             "(default 1, a container's main process, which may be an init such as tini)")
    tls.add_arguments(health, client=True)  # a TLS server's own files, as its probe finds them in the env
    health.set_defaults(func=health_command)
    prepare = commands.add_parser("prepare", help="fetch and convert the embedded default model into the cache")
    prepare.set_defaults(func=_prepare)
    args = parser.parse_args(argv)
    args.func(args)


def _prepare(args: argparse.Namespace) -> None:
    from specdec.default_models import ensure_embedded_model

    ensure_embedded_model()

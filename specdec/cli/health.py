"""`specdec health [ADDRESS]`: the container healthcheck. It runs every few seconds, so it imports
only grpc and the health stubs (tests/cli/test_light_imports.py keeps torch and transformers out).

Which server it asks: ADDRESS when given, else $SPECDEC_HEALTH_ADDR, else the `specdec serve ROLE`
that process `--pid` (1, the container's main process, possibly behind an init such as tini) runs,
on its own --port (the role's default port when it sets none). So one image HEALTHCHECK fits the
draft, the target and the orchestrator."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from specdec.runtime.tls import TlsFiles, aio_channel

ANY_HOST = ("", "0.0.0.0", "::", "[::]")


async def check_health(address: str, timeout_s: float = 2.0, tls: TlsFiles | None = None) -> bool:
    """True when the server at `address` reports SERVING. With `tls` (a service probing itself), its
    certificate is expected to be valid for the name ours is valid for."""
    async with aio_channel(address, tls, server_name=tls.own_name() if tls else None) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def serve_address(argv: list[str]) -> str | None:
    """The local address the `specdec serve ROLE ...` in `argv` listens on, or None if it runs none."""
    for i, arg in enumerate(argv[:-1]):
        if Path(arg).name == "specdec" and argv[i + 1] == "serve":
            from specdec.cli import serve

            parser = argparse.ArgumentParser(add_help=False)
            serve.add_parser(parser.add_subparsers(dest="command"))
            try:
                args, _ = parser.parse_known_args(argv[i + 1:])
            except SystemExit:
                return None
            host = "127.0.0.1" if args.host in ANY_HOST else args.host
            return f"[{host}]:{args.port}" if ":" in host and not host.startswith("[") else f"{host}:{args.port}"
    return None


def process_argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def resolve_address(address: str | None, pid: int) -> str | None:
    return address or os.environ.get("SPECDEC_HEALTH_ADDR") or serve_address(process_argv(pid))


def run(args: argparse.Namespace) -> None:
    """The `specdec health` command: exit 0 when SERVING; 1 when not, or (with a message) when there is no server to ask."""
    address = resolve_address(args.address, args.pid)
    if address is None:
        sys.exit(f"specdec health: no ADDRESS, SPECDEC_HEALTH_ADDR is unset, and process {args.pid} runs no "
                 "`specdec serve`; give the server's address")
    try:
        certificates = TlsFiles.from_paths(args.tls_cert, args.tls_key, args.tls_ca, server=False)
    except ValueError as error:
        sys.exit(f"specdec health: {error}")
    sys.exit(0 if asyncio.run(check_health(address, tls=certificates)) else 1)

"""gRPC plumbing shared by the three services: server start-up and shutdown, health checking,
reflection, message limits and channel options (model calls run on specdec.runtime.batching's thread).

Errors become statuses in one place, errors.ErrorInterceptor, installed on every server here."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection as grpc_reflection
from opentelemetry import trace

from specdec.runtime import telemetry
from specdec.runtime.errors import ErrorInterceptor
from specdec.runtime.tls import TlsFiles

log = logging.getLogger("specdec")
_tracer = trace.get_tracer("specdec.runtime.serving")

# One float32 vocabulary row is 0.2 MB for a 49k vocabulary and 0.5 MB for a 128k one; a call
# carries at most max_k + 1 rows (17 at the default max_k of 16), and the wire format sends greedy
# and truncated rows sparse. 32 MiB fits a 128k vocabulary at k = 16 with room to spare, and is
# a bound, not an invitation: bigger messages mean the payload should shrink, not the limit grow.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024

_MESSAGE_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
# round_robin spreads calls over every address a dns:/// target resolves to (a headless
# Kubernetes Service), instead of pinning one HTTP/2 connection to one replica.
CHANNEL_OPTIONS = _MESSAGE_OPTIONS + [
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
    ("grpc.enable_retries", 1),
    # A half-open connection (a replica's host gone, a NAT dropping state) is found within 15 s.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # A replica that restarts is reconnected to within 2 s (gRPC's default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]
# What servers accept from such clients: pings every 10 s, even between calls.
_KEEPALIVE_POLICY = [
    # C-core's GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS: the key has no "recv" in it.
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


T = TypeVar("T")


class Draining:
    """Whether the server has begun its graceful shutdown (RunningServer.stop sets it)."""

    def __init__(self) -> None:
        self.active = False


async def serve_session_stream(
    requests: AsyncIterator[Any],
    answer: Callable[[Any], Awaitable[T]],
    end_session: Callable[[str], Awaitable[None]],
    *,
    span_name: str,
    draining: Draining,
) -> AsyncIterator[T]:
    """A session stream's replies: answer(message.request) for each message, in order.

    When the stream ends, however it ends (the client closed it, cancelled it, or its connection
    broke), the sessions it carried are ended here: with several replicas, this is the one that
    holds their caches. Once the server drains, the stream ends after the step in flight, and the
    client sends its next step on a fresh stream, to another replica. gRPC traces the whole stream as
    one span; each step gets a span of its own inside it.
    """
    sessions: set[str] = set()
    try:
        async for message in requests:
            # Before the step: a step cancelled while its pass runs still leaves the session in the cache.
            sessions.add(message.request.session_id)
            with _tracer.start_as_current_span(span_name) as span:
                reply = await answer(message.request)
                span.set_attributes(
                    {"specdec.session_id": message.request.session_id, "specdec.compute_seconds": reply.compute_seconds}
                )
            yield reply
            if draining.active:
                return
    finally:
        for session_id in sessions:
            await end_session(session_id)


def timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """fn(*args), and the seconds it took."""
    started = time.perf_counter()
    return fn(*args), time.perf_counter() - started


class Companion(Protocol):
    async def start(self) -> None: ...

    async def stop(self, grace_s: float) -> None: ...


@dataclass(frozen=True)
class ServerSpec:
    """What a service contributes to a server: its servicers and when it is ready."""

    register: Callable[[grpc.aio.Server], None]
    service_names: list[str]
    readiness: Callable[[], Awaitable[None]] | None = None  # health is NOT_SERVING until it completes
    draining: Draining = field(default_factory=Draining)  # shared with servicers that serve session streams
    # Servers that live and drain with this one in its event loop (the orchestrator's HTTP API).
    companions: list[Companion] = field(default_factory=list)
    # With TLS and a CA: only clients showing a certificate the CA signed get in (draft, target).
    require_client_certificates: bool = False


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    ready: asyncio.Task
    draining: Draining
    companions: list[Companion]

    async def stop(self, grace_s: float) -> None:
        """Health says NOT_SERVING, new calls are refused, session streams end after the step in
        flight, and calls still running after `grace_s` are cancelled."""
        self.ready.cancel()
        self.draining.active = True
        await self.health.enter_graceful_shutdown()
        await asyncio.gather(self.server.stop(grace_s), *(companion.stop(grace_s) for companion in self.companions))


async def start_server(
    spec: ServerSpec, *, host: str, port: int, max_connection_age_s: float = 0.0, grace_s: float = 5.0,
    tls: TlsFiles | None = None, reflection: bool = True,
) -> RunningServer:
    """Starts serving `spec` with health checking and reflection (TLS with `tls`); port 0 picks a
    free port."""
    # No SO_REUSEPORT: a second server on a taken port must fail, not share it silently.
    options = [*_MESSAGE_OPTIONS, *_KEEPALIVE_POLICY, ("grpc.so_reuseport", 0)]
    if max_connection_age_s > 0:
        # Clients reconnect periodically, so replicas added by scaling receive traffic.
        options += [
            ("grpc.max_connection_age_ms", int(max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(grace_s * 1000)),
        ]
    server = grpc.aio.server(options=options, interceptors=[*telemetry.server_interceptors(), ErrorInterceptor()])
    spec.register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if reflection:
        grpc_reflection.enable_server_reflection(
            [*spec.service_names, health.SERVICE_NAME, grpc_reflection.SERVICE_NAME], server
        )
    address = f"{host}:{port}"
    bound = (server.add_secure_port(address, tls.server_credentials(spec.require_client_certificates)) if tls
             else server.add_insecure_port(address))
    if bound == 0:
        raise RuntimeError(f"could not listen on {host}:{port}")
    await server.start()
    names = ["", *spec.service_names]
    for name in names:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def become_ready() -> None:
        if spec.readiness is not None:
            await spec.readiness()
        for name in names:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s on %s:%d", ", ".join(spec.service_names), host, bound)

    for companion in spec.companions:
        await companion.start()
    return RunningServer(
        server, bound, health_servicer, asyncio.create_task(become_ready()), spec.draining, spec.companions
    )


async def serve(
    spec: ServerSpec, *, host: str, port: int, max_connection_age_s: float = 0.0, grace_s: float = 5.0,
    tls: TlsFiles | None = None, reflection: bool = True,
) -> None:
    """Serves until SIGINT/SIGTERM, then drains in-flight calls for `grace_s` seconds."""
    running = await start_server(
        spec, host=host, port=port, max_connection_age_s=max_connection_age_s, grace_s=grace_s, tls=tls,
        reflection=reflection,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running.ready.add_done_callback(lambda task: task.cancelled() or task.exception() is None or stop.set())
    await stop.wait()
    log.info("shutting down (grace %.0f s)", grace_s)
    await running.stop(grace_s)
    ready = running.ready
    if ready.done() and not ready.cancelled() and ready.exception() is not None:
        raise ready.exception()  # a failed readiness check (say, mismatched models) is fatal

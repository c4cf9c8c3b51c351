"""What the fuzz tests share: servers in one background event loop, raw-bytes calls, the verdicts.

The three services (and a second, model-less draft service) run in-process on loopback, in an event
loop on a thread of its own, so that hypothesis drives cases from the test's thread and every call
has a hard timeout: a case that hangs fails as a hang instead of stalling the suite.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, settings

from draft_service.server import draft_server
from orchestrator.server import OrchestratorOptions, orchestrator_server
from specdec.cli.launcher import free_port
from specdec.runtime.hosted_model import ModelOptions
from specdec.runtime.serving import RunningServer, start_server
from target_service.server import target_server

T = TypeVar("T")

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,  # the same cases on every run, so CI is reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
CALL_TIMEOUT_S = 10.0  # per call: a case that takes longer is a hang
# What a hostile request may get; UNKNOWN, INTERNAL, DEADLINE_EXCEEDED (a hang), UNAVAILABLE are bugs.
ALLOWED_CODES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
})


class LoopThread:
    """An event loop running on a daemon thread; `run` submits a coroutine and waits, with a timeout."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = CALL_TIMEOUT_S + 5) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise AssertionError(f"the call hung for over {timeout_s} s") from None

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class FuzzStack:
    """Target, draft (with a model), a model-less draft, and an orchestrator with its HTTP API."""

    loop: LoopThread
    servers: dict[str, RunningServer]
    http_port: int
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    @classmethod
    def start(cls, target_model: Path, draft_model: Path) -> FuzzStack:
        loop = LoopThread()
        http_port = free_port()
        stack = cls(loop, loop.run(_start(target_model, draft_model, http_port), timeout_s=120), http_port)
        stack.channels = loop.run(_channels(stack.servers))
        return stack

    def close(self) -> None:
        async def stop() -> None:
            for channel in self.channels.values():
                await channel.close()
            for server in reversed(self.servers.values()):
                await server.stop(0)

        self.loop.run(stop(), timeout_s=60)
        self.loop.close()

    def unary(self, service: str, method: str, payload: bytes) -> tuple[bytes | None, grpc.aio.AioRpcError | None]:
        """One raw-bytes unary call: (response, None) or (None, the error)."""
        call = self.channels[service].unary_unary(method)

        async def go() -> bytes:
            return await call(payload, timeout=CALL_TIMEOUT_S)

        return self._outcome(go())

    def server_streaming(
        self, service: str, method: str, payload: bytes, *, cancel_after: int | None = None
    ) -> tuple[list[bytes], grpc.aio.AioRpcError | None]:
        """A raw-bytes call with streamed replies: (the replies, None or the error); with
        `cancel_after`, the client cancels once it has read that many."""
        start = self.channels[service].unary_stream(method)
        replies: list[bytes] = []

        async def go() -> None:
            call = start(payload, timeout=CALL_TIMEOUT_S)
            async for reply in call:
                replies.append(reply)
                if cancel_after is not None and len(replies) >= cancel_after:
                    call.cancel()
                    return

        _, error = self._outcome(go())
        return replies, error

    def streaming(
        self, service: str, method: str, payloads: Sequence[bytes], *, cancel_after: int | None = None
    ) -> tuple[list[bytes], grpc.aio.AioRpcError | None]:
        """A raw-bytes session stream in lockstep, as the orchestrator drives one (write a step, read
        its reply): (the replies, None or the error). With `cancel_after`, the client cancels the call
        once it has read that many replies. Lockstep also keeps clear of grpc/grpc#36066: an aio
        client whose write races the server's status reports INTERNAL in place of that status."""
        start = self.channels[service].stream_stream(method)
        replies: list[bytes] = []

        async def go() -> None:
            call = start(timeout=CALL_TIMEOUT_S)
            for payload in payloads:
                await call.write(payload)
                reply = await call.read()
                if reply is grpc.aio.EOF:
                    break
                replies.append(reply)
                if cancel_after is not None and len(replies) >= cancel_after:
                    call.cancel()
                    return
            await call.done_writing()
            assert await call.read() is grpc.aio.EOF, "a reply no request asked for"
            code = await call.code()
            if code != grpc.StatusCode.OK:
                raise AssertionError(f"the stream ended with {code}: {await call.details()}")

        _, error = self._outcome(go())
        return replies, error

    def _outcome(self, coro: Coroutine[Any, Any, T]) -> tuple[T | None, grpc.aio.AioRpcError | None]:
        async def guarded() -> tuple[T | None, grpc.aio.AioRpcError | None]:
            try:
                return await coro, None
            except grpc.aio.AioRpcError as error:
                return None, error

        result, error = self.loop.run(guarded())
        if error is not None:
            assert_clean_status(error)
        return result, error

    def assert_serving(self) -> None:
        """Every service reports SERVING, overall and by name."""
        async def check() -> dict[str, int]:
            statuses = {}
            for name, channel in self.channels.items():
                stub = health_pb2_grpc.HealthStub(channel)
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S)
                statuses[name] = reply.status
            return statuses

        statuses = self.loop.run(check())
        assert all(s == health_pb2.HealthCheckResponse.SERVING for s in statuses.values()), statuses
        assert self.http("GET", "/health")[0] == 200

    def http(self, verb: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """One HTTP request to the orchestrator's API on a fresh connection: (status, body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=CALL_TIMEOUT_S)
        try:
            headers = {"content-type": "application/json"} if body is not None else {}
            connection.request(verb, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        except TimeoutError:
            raise AssertionError(f"{verb} {path} hung for over {CALL_TIMEOUT_S} s") from None
        finally:
            connection.close()


def assert_clean_status(error: grpc.aio.AioRpcError) -> None:
    assert error.code() in ALLOWED_CODES, f"{error.code()}: {error.details()}"
    assert error.details(), f"{error.code()} without a message"


def assert_clean_http(status: int, body: bytes) -> None:
    """Never a 5xx, and never an error event with one in a streamed body; errors say what was wrong."""
    assert status < 500, f"HTTP {status}: {body[:500]!r}"
    if status != 200:
        error = json.loads(body)["error"]
        assert error["message"] and error["code"] == status, error
        return
    if not body.startswith(b"data: "):
        assert json.loads(body)["choices"][0]["finish_reason"] in ("stop", "length")
        return
    assert body.endswith(b"data: [DONE]\n\n"), body[-200:]
    for line in body.decode().splitlines():
        if line.startswith("data: {"):
            event = json.loads(line.removeprefix("data: "))
            assert "error" not in event or event["error"]["code"] < 500, event


async def _start(target_model: Path, draft_model: Path, http_port: int) -> dict[str, RunningServer]:
    options = ModelOptions(cache_mb=16)
    servers: dict[str, RunningServer] = {}
    servers["target"] = await start_server(target_server(str(target_model), options), host="127.0.0.1", port=0)
    servers["draft"] = await start_server(draft_server(str(draft_model), options), host="127.0.0.1", port=0)
    servers["ngram_draft"] = await start_server(draft_server("", options), host="127.0.0.1", port=0)
    servers["orchestrator"] = await start_server(
        orchestrator_server(OrchestratorOptions(
            draft_address=f"127.0.0.1:{servers['draft'].port}", target_address=f"127.0.0.1:{servers['target'].port}",
            tokenizer=str(target_model), default_draft="", default_k=0, max_adaptive_k=4, default_max_new_tokens=4,
            call_timeout_s=CALL_TIMEOUT_S, http_host="127.0.0.1", http_port=http_port,
        )),
        host="127.0.0.1", port=0,
    )
    for server in servers.values():
        await asyncio.wait_for(server.ready, 60)
    return servers


async def _channels(servers: dict[str, RunningServer]) -> dict[str, grpc.aio.Channel]:
    return {name: grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") for name, server in servers.items()}

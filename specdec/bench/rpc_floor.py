"""What one gRPC call costs beyond the server's work: the floor under `specdec bench`'s
"orchestration + RPC" column.

A stand-in Target service runs in its own process on loopback, served exactly like the real one
(specdec.runtime.serving.start_server, a BatchScheduler's model thread, the same channel options), but
its "model" only sleeps. An asyncio client calls Score back to back and reports, per call, the wall
time minus the compute_seconds the server reports, for a few amounts of server-side work, as unary
calls and as messages on a session's open ScoreStream, the way the orchestrator sends them
(orchestrator.clients.SessionStreams). A call that follows tens of milliseconds of idling pays for
waking the threads on both ends.

    .venv/bin/python -m specdec.bench.rpc_floor [--calls 60]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

import grpc

from orchestrator.clients import SessionStreams
from specdec.cli.launcher import free_port, wait_healthy
from specdec.runtime.batching import BatchScheduler
from specdec.runtime.serving import CHANNEL_OPTIONS, Draining, ServerSpec, serve, serve_session_stream
from specdec.v1 import target_pb2, target_pb2_grpc

WORK_MS = (0.0, 6.0, 60.0)  # nothing, about a draft step, about a target step on a CPU


class SleepingTarget(target_pb2_grpc.TargetServicer):
    def __init__(self) -> None:
        self._scheduler = BatchScheduler(lambda: None)  # no model: call() runs on its thread, no passes

    async def Score(self, request: target_pb2.ScoreRequest, context: grpc.aio.ServicerContext):
        return await self._score(request)

    async def ScoreStream(self, requests, context: grpc.aio.ServicerContext):
        async for reply in serve_session_stream(
            requests, self._score, _no_cache_to_free, span_name="floor.score", draining=Draining()
        ):
            yield target_pb2.ScoreStreamResponse(response=reply)

    async def _score(self, request: target_pb2.ScoreRequest) -> target_pb2.ScoreResponse:
        started = time.perf_counter()
        await self._scheduler.call(time.sleep, request.uniforms[0])
        seconds = time.perf_counter() - started
        return target_pb2.ScoreResponse(num_accepted=0, next_token=0, compute_seconds=seconds)


async def _no_cache_to_free(session_id: str) -> None:
    pass


def score_request(work_s: float) -> target_pb2.ScoreRequest:
    # The work rides in `uniforms`, so one server serves every case.
    return target_pb2.ScoreRequest(session_id="floor", token_ids=list(range(200)), uniforms=[work_s])


async def overheads_ms(address: str, work_s: float, calls: int, streaming: bool) -> list[float]:
    request = score_request(work_s)
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = target_pb2_grpc.TargetStub(channel)
        streams = SessionStreams(stub.ScoreStream, "target")
        message = target_pb2.ScoreStreamRequest(request=request)
        result = []
        for i in range(calls + 5):  # the first few warm the connection up
            started = time.perf_counter()
            if streaming:
                reply = (await streams.call(request.session_id, message, time.monotonic() + 30)).response
            else:
                reply = await stub.Score(request, timeout=30)
            if i >= 5:
                result.append(1000 * (time.perf_counter() - started - reply.compute_seconds))
        await streams.close(request.session_id)
        return result


def table(address: str, calls: int) -> None:
    """One row per amount of work, a column for unary calls and one for the session stream."""
    print("            | a unary call each time | a message on the session stream")
    for work_ms in WORK_MS:
        cells = []
        for streaming in (False, True):
            ms = sorted(asyncio.run(overheads_ms(address, work_ms / 1000, calls, streaming)))
            cells.append(f"{statistics.median(ms):.2f} ({ms[len(ms) // 10]:.2f}–{ms[len(ms) * 9 // 10]:.2f})")
        print(f"{work_ms:5.0f} ms    | " + " | ".join(f"{cell:22}" for cell in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--serve-port", type=int, help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args()
    if args.serve_port:
        servicer = SleepingTarget()
        spec = ServerSpec(
            lambda server: target_pb2_grpc.add_TargetServicer_to_server(servicer, server),
            [target_pb2.DESCRIPTOR.services_by_name["Target"].full_name],
        )
        asyncio.run(serve(spec, host="127.0.0.1", port=args.serve_port))
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", __spec__.name, "--serve-port", str(port)])
    try:
        wait_healthy("stand-in target", f"127.0.0.1:{port}", server, timeout_s=60)
        address = f"127.0.0.1:{port}"
        print("server work | per-call overhead, ms: median (p10–p90)")
        table(address, args.calls)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()

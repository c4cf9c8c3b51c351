"""Tracing across the three servers (in-memory exporter) and Prometheus metrics (scraped)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from draft_service.server import draft_server
from orchestrator.server import OrchestratorOptions, orchestrator_server
from specdec.runtime import telemetry
from specdec.runtime.hosted_model import ModelOptions
from specdec.runtime.serving import start_server
from specdec.v1 import generation_pb2, generation_pb2_grpc
from target_service.server import target_server
from tests.stack import Stack, scrape

REQUEST = generation_pb2.GenerateRequest(
    prompt="abcab", max_new_tokens=6, num_speculative_tokens=2, draft="model", ignore_eos=True
)


@pytest.fixture(scope="module")
def exporter():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process: the first test module to ask wins
    assert telemetry.tracing_enabled()
    return exporter


async def generate_in_process(tiny_target, tiny_draft) -> list[generation_pb2.GenerateResponse]:
    """Three real gRPC servers on loopback, in this process so the in-memory exporter sees all spans."""
    options = ModelOptions()
    target = await start_server(target_server(str(tiny_target), options), host="127.0.0.1", port=0)
    draft = await start_server(draft_server(str(tiny_draft), options), host="127.0.0.1", port=0)
    orchestrator = await start_server(
        orchestrator_server(OrchestratorOptions(
            draft_address=f"127.0.0.1:{draft.port}", target_address=f"127.0.0.1:{target.port}",
            tokenizer=str(tiny_target), default_draft="", default_k=2, max_adaptive_k=8, default_max_new_tokens=16, call_timeout_s=30,
        )),
        host="127.0.0.1", port=0,
    )
    try:
        await orchestrator.ready
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = generation_pb2_grpc.GenerationStub(channel)
            return [chunk async for chunk in stub.Generate(REQUEST, timeout=60)]
    finally:
        for server in (orchestrator, draft, target):
            await server.stop(0)


def test_one_trace_spans_the_three_servers(exporter, tiny_target, tiny_draft):
    chunks = asyncio.run(generate_in_process(tiny_target, tiny_draft))
    spans = [s for s in exporter.get_finished_spans() if s.name != "/specdec.v1.Target/GetModelInfo"
             and s.name != "/specdec.v1.Draft/GetModelInfo"]
    by_id = {s.context.span_id: s for s in spans}

    def parent(span):
        return by_id.get(span.parent.span_id) if span.parent else None

    generate = [s for s in spans if s.name == "/specdec.v1.Generation/Generate" and s.kind == trace.SpanKind.SERVER]
    assert len(generate) == 1
    trace_id = generate[0].context.trace_id
    request_spans = [s for s in spans if s.context.trace_id == trace_id]

    completion = next(s for s in request_spans if s.name.startswith("text_completion"))
    assert parent(completion) is generate[0]
    assert completion.attributes["gen_ai.usage.input_tokens"] == 5
    assert completion.attributes["gen_ai.usage.output_tokens"] == chunks[-1].stats.generated_tokens == 6
    assert completion.attributes["gen_ai.request.model"] == str(tiny_target)

    iterations = [s for s in request_spans if s.name == "specdec.iteration"]
    assert len(iterations) == chunks[-1].stats.target_calls
    assert all(parent(s) is completion for s in iterations)
    assert sum(s.attributes["specdec.accepted_tokens"] for s in iterations) == chunks[-1].stats.accepted_tokens

    # Each upstream stream is one call in the request's span; each step is a span within its server span.
    steps = {}
    for method, step in (("/specdec.v1.Draft/ProposeStream", "specdec.propose"),
                         ("/specdec.v1.Target/ScoreStream", "specdec.score")):
        [client] = [s for s in request_spans if s.name == method and s.kind == trace.SpanKind.CLIENT]
        [server] = [s for s in request_spans if s.name == method and s.kind == trace.SpanKind.SERVER]
        assert parent(client) is completion and parent(server) is client
        steps[step] = [s for s in request_spans if s.name == step]
        assert steps[step] and all(parent(s) is server for s in steps[step])
        assert all(s.attributes["specdec.compute_seconds"] > 0 for s in steps[step])
    assert len(steps["specdec.score"]) == chunks[-1].stats.target_calls
    assert len(steps["specdec.propose"]) <= len(iterations)


def test_tracing_is_requested_only_by_the_environment(monkeypatch):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    assert not telemetry.tracing_requested()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    assert telemetry.tracing_requested()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not telemetry.tracing_requested()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert telemetry.tracing_requested()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not telemetry.tracing_requested()


def test_prometheus_metrics_on_every_service(tiny_target, tiny_draft):
    stack = Stack(str(tiny_target), str(tiny_draft), metrics=True, threads=1)
    try:
        async def run():
            async with grpc.aio.insecure_channel(stack.address) as channel:
                stub = generation_pb2_grpc.GenerationStub(channel)
                return [c async for c in stub.Generate(REQUEST, timeout=60)][-1].stats

        stats = asyncio.run(run())
        orchestrator = scrape(stack.metrics_ports["orchestrator"])
        target = scrape(stack.metrics_ports["target"])
        draft = scrape(stack.metrics_ports["draft"])
    finally:
        stack.close()
    assert orchestrator[("specdec_requests_total", (("draft", "model"), ("finish_reason", "length")))] == 1
    assert orchestrator[("specdec_spec_decode_num_draft_tokens_total", ())] == stats.drafted_tokens > 0
    assert orchestrator[("specdec_spec_decode_num_accepted_tokens_total", ())] == stats.accepted_tokens
    assert orchestrator[("specdec_generation_tokens_total", ())] == 6
    assert orchestrator[("specdec_time_to_first_token_seconds_count", ())] == 1
    assert orchestrator[("specdec_time_per_output_token_seconds_count", ())] == 1
    assert orchestrator[("specdec_request_latency_seconds_count", ())] == 1
    assert orchestrator[("specdec_active_requests", ())] == 0
    assert target[("specdec_model_call_seconds_count", (("method", "Score"),))] == stats.target_calls
    assert draft[("specdec_model_call_seconds_count", (("method", "Propose"),))] >= 1
    assert ("specdec_kv_cache_bytes", ()) in target and ("specdec_active_sessions", ()) in target

"""OpenTelemetry tracing, configured by the standard OTEL_* environment variables.

Tracing is on when OTEL_TRACES_EXPORTER names an exporter (`otlp`, `console`) or an OTLP endpoint
is set, and off otherwise (or with OTEL_SDK_DISABLED=true). Off, no SDK is installed, no gRPC
interceptor is added and every span is the API's no-op: it costs nothing measurable.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter


def tracing_requested() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = os.environ.get("OTEL_TRACES_EXPORTER")
    if exporters is not None:
        return exporters.strip().lower() not in ("", "none")
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup_tracing(default_service_name: str) -> None:
    """Installs the global tracer provider when the environment asks for tracing."""
    if not tracing_requested():
        return
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": default_service_name}
    provider = TracerProvider(resource=Resource.create(attributes))  # also reads OTEL_RESOURCE_ATTRIBUTES
    for name in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(","):
        provider.add_span_processor(BatchSpanProcessor(_exporter(name.strip().lower())))
    trace.set_tracer_provider(provider)


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        if protocol != "grpc":
            raise ValueError(f"OTLP protocol {protocol!r} is not supported; use grpc")
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # endpoint, headers, TLS from OTEL_EXPORTER_OTLP_* variables
    raise ValueError(f"unknown OTEL_TRACES_EXPORTER {name!r}; use otlp, console or none")


def tracing_enabled() -> bool:
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def server_interceptors() -> list:
    """Server spans, continuing the caller's trace from gRPC metadata (none when tracing is off)."""
    if not tracing_enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]


def client_interceptors() -> list:
    """Client spans, propagating the trace context in gRPC metadata (none when tracing is off)."""
    if not tracing_enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())

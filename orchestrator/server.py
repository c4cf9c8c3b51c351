"""`specdec serve orchestrator`: connect to draft and target, serve specdec.v1.Generation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.admission import DEFAULT_MAX_RUNNING, DEFAULT_MAX_WAITING, Admission
from orchestrator.auth import ApiTokens
from orchestrator.clients import DraftClient, TargetClient, open_channel
from orchestrator.http_api import HttpServer, build_app
from orchestrator.servicer import GenerationServicer
from specdec.runtime.models import load_tokenizer
from specdec.runtime.serving import ServerSpec
from specdec.runtime.tls import TlsFiles
from specdec.v1 import generation_pb2, generation_pb2_grpc


@dataclass(frozen=True)
class OrchestratorOptions:
    draft_address: str
    target_address: str
    tokenizer: str
    default_draft: str  # "" = model when the draft service has one, else ngram
    default_k: int  # 0 = adaptive
    max_adaptive_k: int
    default_max_new_tokens: int
    call_timeout_s: float
    max_concurrent_streams: int = DEFAULT_MAX_RUNNING
    max_queued_streams: int = DEFAULT_MAX_WAITING
    http_host: str = "0.0.0.0"
    http_port: int = 0  # the OpenAI-compatible HTTP API; 0 = off
    api_token_file: str = ""  # bearer tokens, one per line; "" = the API is open
    tls: TlsFiles | None = None  # this server's certificate, shown to upstreams too; None = plaintext


def orchestrator_server(options: OrchestratorOptions) -> ServerSpec:
    """Ready (health SERVING) once both upstreams answer and agree with our tokenizer."""
    servicer = GenerationServicer(
        tokenizer=load_tokenizer(options.tokenizer),
        draft=DraftClient(open_channel(options.draft_address, options.tls), options.call_timeout_s),
        target=TargetClient(open_channel(options.target_address, options.tls), options.call_timeout_s),
        default_draft=options.default_draft,
        default_k=options.default_k,
        max_adaptive_k=options.max_adaptive_k,
        default_max_new_tokens=options.default_max_new_tokens,
        admission=Admission(options.max_concurrent_streams, options.max_queued_streams),
        tokens=ApiTokens.load(Path(options.api_token_file)) if options.api_token_file else None,
    )
    companions = ([HttpServer(build_app(servicer), options.http_host, options.http_port, options.tls)]
                  if options.http_port else [])
    return ServerSpec(
        register=lambda server: generation_pb2_grpc.add_GenerationServicer_to_server(servicer, server),
        service_names=[generation_pb2.DESCRIPTOR.services_by_name["Generation"].full_name],
        readiness=servicer.connect,
        companions=companions,
    )

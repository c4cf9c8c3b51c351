"""`specdec serve draft`: load the draft model (if any) and serve specdec.v1.Draft."""

from __future__ import annotations

from draft_service.servicer import DraftServicer
from specdec.runtime.hosted_model import HostedModel, ModelOptions
from specdec.runtime.serving import Draining, ServerSpec
from specdec.v1 import draft_pb2, draft_pb2_grpc


def draft_server(model: str, options: ModelOptions) -> ServerSpec:
    """`model` "" serves only the n-gram drafter."""
    draining = Draining()
    servicer = DraftServicer(HostedModel.load(model, options) if model else None, draining)
    return ServerSpec(
        register=lambda server: draft_pb2_grpc.add_DraftServicer_to_server(servicer, server),
        service_names=[draft_pb2.DESCRIPTOR.services_by_name["Draft"].full_name],
        draining=draining,
        require_client_certificates=True,  # with TLS and a CA: the orchestrator only
    )

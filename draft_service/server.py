"""`specdec serve draft`: load the draft model (if any) and serve specdec.v1.Draft."""

from __future__ import annotations

from draft_service.servicer import DraftServicer
from specdec.hosted_model import HostedModel, ModelOptions
from specdec.serving import serve
from specdec.v1 import draft_pb2, draft_pb2_grpc


async def run(host: str, port: int, model: str, options: ModelOptions, max_connection_age_s: float) -> None:
    hosted = HostedModel.load(model, options) if model else None
    servicer = DraftServicer(hosted, options.max_k)
    await serve(
        host=host,
        port=port,
        register=lambda server: draft_pb2_grpc.add_DraftServicer_to_server(servicer, server),
        service_names=[draft_pb2.DESCRIPTOR.services_by_name["Draft"].full_name],
        max_connection_age_s=max_connection_age_s,
    )

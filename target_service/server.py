"""`specdec serve target`: load the target model and serve specdec.v1.Target."""

from __future__ import annotations

from specdec.hosted_model import HostedModel, ModelOptions
from specdec.serving import serve
from specdec.v1 import target_pb2, target_pb2_grpc
from target_service.servicer import TargetServicer


async def run(host: str, port: int, model: str, options: ModelOptions, max_connection_age_s: float) -> None:
    servicer = TargetServicer(HostedModel.load(model, options))
    await serve(
        host=host,
        port=port,
        register=lambda server: target_pb2_grpc.add_TargetServicer_to_server(servicer, server),
        service_names=[target_pb2.DESCRIPTOR.services_by_name["Target"].full_name],
        max_connection_age_s=max_connection_age_s,
    )

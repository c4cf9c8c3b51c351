"""`specdec serve target`: load the target model and serve specdec.v1.Target."""

from __future__ import annotations

from specdec.runtime.hosted_model import HostedModel, ModelOptions
from specdec.runtime.serving import Draining, ServerSpec
from specdec.v1 import target_pb2, target_pb2_grpc
from target_service.servicer import TargetServicer


def target_server(model: str, options: ModelOptions) -> ServerSpec:
    draining = Draining()
    servicer = TargetServicer(HostedModel.load(model, options, returns_features=True), draining)
    return ServerSpec(
        register=lambda server: target_pb2_grpc.add_TargetServicer_to_server(servicer, server),
        service_names=[target_pb2.DESCRIPTOR.services_by_name["Target"].full_name],
        draining=draining,
        require_client_certificates=True,  # with TLS and a CA: the orchestrator only
    )

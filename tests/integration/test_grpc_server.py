"""The gRPC server factory: health, reflection (private pool included), errors, tritonclient."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from inference import _pool, grpc_service_pb2, grpc_service_pb2_grpc
from shared.errors import NotFound
from shared.grpc.channel import insecure_channel
from shared.grpc.probe import check
from shared.grpc.server import ServiceBinding, build_server, mark_serving
from shared.grpc.status import abort_with

SERVICE = "inference.GRPCInferenceService"


class LiveOnly(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    """Answers liveness and knows no models: enough to exercise the plumbing."""

    def ServerLive(self, request, context):
        return grpc_service_pb2.ServerLiveResponse(live=True)

    def ModelReady(self, request, context):
        abort_with(context, NotFound(f"unknown model {request.name!r}"))


@pytest.fixture
def server() -> Iterator[tuple[str, object]]:
    binding = ServiceBinding(
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
        LiveOnly(),
        SERVICE,
        _pool.POOL,
    )
    srv, health, port = build_server("127.0.0.1:0", [binding], max_workers=4)
    srv.start()
    try:
        yield f"127.0.0.1:{port}", health
    finally:
        srv.stop(grace=1).wait()


def test_services_start_not_serving_until_marked(server: tuple[str, object]) -> None:
    address, health = server
    stub = health_pb2_grpc.HealthStub(insecure_channel(address))
    status = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE)).status
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert check(address)  # the server as a whole is live
    assert not check(address, SERVICE)
    mark_serving(health, [SERVICE])  # type: ignore[arg-type]
    assert check(address, SERVICE)


def test_reflection_describes_standard_and_private_pool_services(
    server: tuple[str, object],
) -> None:
    database = ProtoReflectionDescriptorDatabase(insecure_channel(server[0]))
    names = set(database.get_services())
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    file = database.FindFileContainingSymbol("inference.ModelInferRequest")
    assert file.name == "inference/grpc_service.proto"


def test_unmodified_tritonclient_talks_to_it_and_sees_domain_errors_as_status(
    server: tuple[str, object],
) -> None:
    client = triton.InferenceServerClient(url=server[0])
    assert client.is_server_live()
    with pytest.raises(triton.InferenceServerException) as raised:
        client.is_model_ready("nope")
    assert raised.value.status() == "StatusCode.NOT_FOUND"
    assert "unknown model 'nope'" in raised.value.message()


def test_message_limits_apply_to_both_sides(server: tuple[str, object]) -> None:
    channel = insecure_channel(server[0], max_message_bytes=1024)
    stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    big = grpc_service_pb2.ServerLiveRequest()
    assert stub.ServerLive(big).live
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelReady(grpc_service_pb2.ModelReadyRequest(name="x" * 4096))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

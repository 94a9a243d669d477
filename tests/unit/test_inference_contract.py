"""Our `inference` protos must match Triton's field for field, so tritonclient works unmodified."""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor
from tritonclient.grpc import model_config_pb2 as triton_config
from tritonclient.grpc import service_pb2 as triton_service

from inference import grpc_service_pb2, model_config_pb2


def _messages(file: FileDescriptor) -> dict[str, Descriptor]:
    found: dict[str, Descriptor] = {}

    def walk(descriptor: Descriptor) -> None:
        found[descriptor.full_name] = descriptor
        for nested in descriptor.nested_types:
            walk(nested)

    for descriptor in file.message_types_by_name.values():
        walk(descriptor)
    return found


def _enums(file: FileDescriptor) -> dict[str, EnumDescriptor]:
    enums = dict((e.full_name, e) for e in file.enum_types_by_name.values())
    for message in _messages(file).values():
        enums.update((e.full_name, e) for e in message.enum_types)
    return enums


OURS = _messages(grpc_service_pb2.DESCRIPTOR) | _messages(model_config_pb2.DESCRIPTOR)
THEIRS = _messages(triton_service.DESCRIPTOR) | _messages(triton_config.DESCRIPTOR)


def _signature(field: object) -> tuple[object, ...]:
    type_name = field.message_type or field.enum_type  # type: ignore[attr-defined]
    return (
        field.number,
        field.type,
        field.is_repeated,  # type: ignore[attr-defined]
        type_name.full_name if type_name else None,
    )


def test_every_message_field_has_tritons_number_and_type() -> None:
    assert len(OURS) > 40
    mismatches = []
    for name, ours in OURS.items():
        theirs = THEIRS.get(name)
        assert theirs is not None, f"{name} is not a Triton message"
        for field in ours.fields:
            other = theirs.fields_by_name.get(field.name)
            if other is None or _signature(field) != _signature(other):
                mismatches.append(f"{name}.{field.name}")
    assert mismatches == []


def test_enums_match_tritons_values() -> None:
    theirs = _enums(triton_service.DESCRIPTOR) | _enums(triton_config.DESCRIPTOR)
    for name, ours in (
        _enums(grpc_service_pb2.DESCRIPTOR) | _enums(model_config_pb2.DESCRIPTOR)
    ).items():
        assert {v.name: v.number for v in ours.values} == {
            v.name: v.number for v in theirs[name].values if v.name in ours.values_by_name
        }


def test_rpcs_match_tritons_signatures() -> None:
    ours = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton_service.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == "inference.GRPCInferenceService"
    for method in ours.methods:
        other = theirs.methods_by_name[method.name]
        assert (
            method.input_type.full_name,
            method.output_type.full_name,
            method.client_streaming,
            method.server_streaming,
        ) == (
            other.input_type.full_name,
            other.output_type.full_name,
            other.client_streaming,
            other.server_streaming,
        )


def test_bytes_roundtrip_between_our_classes_and_tritons() -> None:
    request = grpc_service_pb2.ModelInferRequest(
        model_name="demo", id="r1", raw_input_contents=[b"\x00\x00\x80?"]
    )
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 1])
    tensor.parameters["priority"].uint64_param = 3
    theirs = triton_service.ModelInferRequest.FromString(request.SerializeToString())
    assert theirs.inputs[0].parameters["priority"].uint64_param == 3
    back = grpc_service_pb2.ModelInferRequest.FromString(theirs.SerializeToString())
    assert back == request


def test_private_pool_keeps_tritonclient_importable_beside_ours() -> None:
    # Both are imported in this module; the default pool holds Triton's, ours is private.
    assert grpc_service_pb2.DESCRIPTOR.pool is not triton_service.DESCRIPTOR.pool

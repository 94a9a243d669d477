"""A thin client for the common case: numpy in, numpy out, over the KServe V2 gRPC protocol.

Any KServe V2 / Triton client works against the inference service; this one has no
dependency beyond streamlearn's own contracts and keeps one channel per client.

A target that names a resolver (`dns:///inference-headless:8001`, `ipv4:10.0.0.1:8001,...`)
is balanced round-robin over every address it resolves to: with a headless Kubernetes
Service, one client spreads its calls over all inference pods instead of pinning one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc
from shared.errors import InvalidArgument
from shared.grpc.client import GrpcClient
from shared.grpc.server import DEFAULT_MAX_MESSAGE_BYTES, message_size_options
from shared.serving import CURRENT_REASON

if TYPE_CHECKING:
    from shared.settings import GrpcSecurity

# Targets whose resolver may return several addresses: those are balanced.
BALANCED_SCHEMES = ("dns:", "ipv4:", "ipv6:")
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
RECORDS = "records"  # the named-records input of a version with a feature schema

_V2: dict[np.dtype[Any], str] = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "UINT8",
}
_NP: dict[str, np.dtype[Any]] = {name: dtype for dtype, name in _V2.items()}


class InferenceClient(GrpcClient):
    """Predictions from a streamlearn inference server.

    Example:
        with InferenceClient("127.0.0.1:8001") as client:
            scores, version = client.predict("demo", features)

    """

    def __init__(
        self, address: str, timeout: float = 10.0, security: GrpcSecurity | None = None
    ) -> None:
        """Open a (lazy) channel; `security`: TLS and credentials (None: plaintext)."""
        super().__init__(address, timeout, security, options=channel_options(address))
        self._stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._inputs: dict[str, str] = {}

    def ready(self, model: str = "") -> bool:
        """The server (or one model) is ready to answer."""
        try:
            if model:
                return bool(
                    self._call(self._stub.ModelReady, pb.ModelReadyRequest(name=model)).ready
                )
            return bool(self._call(self._stub.ServerReady, pb.ServerReadyRequest()).ready)
        except Exception:
            return False

    def served(self) -> dict[str, int]:
        """The version each model serves to requests naming none (0: nothing loaded yet)."""
        reply = self._call(self._stub.RepositoryIndex, pb.RepositoryIndexRequest())
        current = {m.name: 0 for m in reply.models}
        for model in reply.models:
            if model.reason == CURRENT_REASON:
                current[model.name] = int(model.version)
        return current

    def predict(
        self,
        model: str,
        features: np.ndarray | None = None,
        version: int = 0,
        output: str = "",
        *,
        records: Sequence[Mapping[str, Any]] | None = None,
        request_id: str = "",
    ) -> tuple[np.ndarray, int]:
        """Run `features` (rows x columns) through the model's single input, or named records.

        Args:
            model: The served model.
            features: Numeric rows for the model's first input.
            version: A loaded version (0: the one served).
            output: The output to return (empty: the first).
            records: Instead of `features`, one mapping of field name -> value per row, for
                a version trained on a stream with a feature schema; None or NaN: missing.
            request_id: The request's `id`: with the prediction log on, the event id of its
                row (`<id>/<i>` for row i of several) that feedback names later.

        Returns:
            The first (or named) output and the version that computed it.

        Raises:
            InvalidArgument: Neither or both of `features` and `records`, a record that is
                not JSON-able, or one the server refuses.

        """
        request = pb.ModelInferRequest(
            model_name=model, model_version=str(version or ""), id=request_id
        )
        if (features is None) == (records is None):
            raise InvalidArgument("predict takes either features or records")
        if records is not None:
            encoded = [_record_json(r) for r in records]
            request.inputs.add(name=RECORDS, datatype="BYTES", shape=[len(encoded)])
            request.raw_input_contents.append(b"".join(_length_prefixed(e) for e in encoded))
        else:
            array = np.ascontiguousarray(features)
            name = self._input_name(model)
            request.inputs.add(name=name, datatype=_V2[array.dtype], shape=list(array.shape))
            request.raw_input_contents.append(array.tobytes())
        if output:
            request.outputs.add(name=output)
        reply = self._call(self._stub.ModelInfer, request)
        tensor = reply.outputs[0]
        values = np.frombuffer(reply.raw_output_contents[0], _NP[tensor.datatype])
        return values.reshape(tuple(tensor.shape)), int(reply.model_version)

    def _input_name(self, model: str) -> str:
        if model not in self._inputs:
            metadata = self._call(self._stub.ModelMetadata, pb.ModelMetadataRequest(name=model))
            self._inputs[model] = metadata.inputs[0].name
        return self._inputs[model]

    _call = GrpcClient._invoke


def balanced(address: str) -> bool:
    """Whether calls to `address` are spread round-robin (its scheme may resolve to many)."""
    return address.startswith(BALANCED_SCHEMES)


def channel_options(address: str) -> list[tuple[str, Any]]:
    """Channel options for `address`: message limits, and round-robin for resolver targets."""
    options: list[tuple[str, Any]] = list(message_size_options(DEFAULT_MAX_MESSAGE_BYTES))
    if balanced(address):
        options.append(("grpc.service_config", ROUND_ROBIN))
    return options


def _record_json(record: Mapping[str, Any]) -> bytes:
    """One record as a JSON object; NaN (missing) as null, numpy scalars as numbers."""
    plain = {str(k): _plain(v) for k, v in record.items()}
    try:
        return json.dumps(plain, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"record {record!r:.80} is not JSON-able: {exc}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _length_prefixed(element: bytes) -> bytes:
    """A KServe BYTES element: its length as 4 little-endian bytes, then the bytes."""
    return len(element).to_bytes(4, "little") + element

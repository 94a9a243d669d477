"""A thin client for the common case: numpy in, numpy out, over the KServe V2 gRPC protocol.

Any KServe V2 / Triton client works against the inference service; this one has no
dependency beyond streamlearn's own contracts and keeps one channel per client.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc
from shared.grpc.client import GrpcClient
from shared.serving import CURRENT_REASON

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

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        super().__init__(address, timeout)
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
        self, model: str, features: np.ndarray, version: int = 0, output: str = ""
    ) -> tuple[np.ndarray, int]:
        """Run `features` (rows x columns) through the model's single input.

        Returns:
            The first (or named) output and the version that computed it.

        """
        name = self._input_name(model)
        array = np.ascontiguousarray(features)
        request = pb.ModelInferRequest(
            model_name=model, model_version=str(version or ""), raw_input_contents=[array.tobytes()]
        )
        request.inputs.add(name=name, datatype=_V2[array.dtype], shape=list(array.shape))
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

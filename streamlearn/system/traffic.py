"""Requests whose predictions are logged for the joiner: each with its own id, its ids back.

`InferenceClient.predict` sends no request id and drops the response's `event_id`
parameter, which feedback needs; `TrafficClient` adds both for the demo and the tests
(the SDK itself is left as it is).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inference import grpc_service_pb2 as pb
from shared.errors import InvalidArgument
from streamlearn.client.inference import InferenceClient

# The response parameter inference answers a logged request's event id with (the KServe
# request `id`, or one it assigned).
EVENT_ID = "event_id"
_SCORES = {"FP32": np.float32, "FP64": np.float64}


@dataclass(frozen=True)
class Answer:
    """What inference answered a logged request: scores, version, and each row's event id."""

    scores: np.ndarray
    version: int
    event_ids: tuple[str, ...]


def row_ids(event_id: str, rows: int) -> tuple[str, ...]:
    """The event ids of a request's rows: its own for one row, `<id>/<i>` for several."""
    return (event_id,) if rows == 1 else tuple(f"{event_id}/{i}" for i in range(rows))


class TrafficClient(InferenceClient):
    """An `InferenceClient` whose requests carry an id (see the module docstring)."""

    def predict_logged(self, model: str, features: np.ndarray, request_id: str = "") -> Answer:
        """Score `features` (rows x columns, float32) as a request named `request_id`.

        Args:
            model: The served model.
            features: The rows.
            request_id: The request's id (empty: inference assigns one).

        Returns:
            The first output, the version that computed it and the rows' event ids (empty
            when the server logs no predictions and so names no id).

        Raises:
            InvalidArgument: `features` is not a 2-D array of rows, or the server refuses it.
            StreamlearnError: as `predict` (e.g. Unavailable before a version is served).

        """
        array = np.ascontiguousarray(features, dtype=np.float32)
        if array.ndim != 2 or not len(array):
            raise InvalidArgument(f"features must be rows x columns, got shape {array.shape}")
        request = pb.ModelInferRequest(model_name=model, id=request_id)
        request.inputs.add(name=self._input_name(model), datatype="FP32", shape=list(array.shape))
        request.raw_input_contents.append(array.tobytes())
        reply = self._call(self._stub.ModelInfer, request)
        tensor = reply.outputs[0]
        dtype = _SCORES.get(tensor.datatype)
        if dtype is None or not reply.raw_output_contents:
            raise InvalidArgument(f"unexpected output {tensor.name!r} of type {tensor.datatype}")
        scores = np.frombuffer(reply.raw_output_contents[0], dtype).reshape(tuple(tensor.shape))
        logged = reply.parameters[EVENT_ID].string_param if EVENT_ID in reply.parameters else ""
        ids = row_ids(logged, len(array)) if logged else ()
        return Answer(scores, int(reply.model_version), ids)

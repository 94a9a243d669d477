"""A thin client for the common case: numpy in, numpy out, over the KServe V2 gRPC protocol.

Any KServe V2 / Triton client works against the inference service; this one has no
dependency beyond streamlearn's own contracts and keeps one channel per client. Besides
tabular predictions it scores texts with, and continues prompts of, a served byte-level
language model (`score_text`, `generate`, `generate_stream`).

A target that names a resolver (`dns:///inference-headless:8001`, `ipv4:10.0.0.1:8001,...`)
is balanced round-robin over every address it resolves to: with a headless Kubernetes
Service, one client spreads its calls over all inference pods instead of pinning one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc
from shared.errors import InvalidArgument, StreamlearnError
from shared.grpc.client import GrpcClient
from shared.grpc.server import DEFAULT_MAX_MESSAGE_BYTES, message_size_options
from shared.grpc.status import error_from_rpc
from shared.serving import CURRENT_REASON, LOGPROBS_OUTPUT, TEXT_INPUT

if TYPE_CHECKING:
    from shared.settings import GrpcSecurity

# Targets whose resolver may return several addresses: those are balanced.
BALANCED_SCHEMES = ("dns:", "ipv4:", "ipv6:")
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
RECORDS = "records"  # the named-records input of a version with a feature schema
# A language model's tensors and request parameters (services.inference.text_requests).
TEXT = TEXT_INPUT
LOGPROBS = LOGPROBS_OUTPUT
CLASSES = "classes"
LENGTHS = "lengths"
GENERATED = "generated"
FINAL = "final"
SAMPLINGS = ("greedy", "sample")

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

    def score_text(
        self, model: str, texts: Sequence[bytes | str], version: int = 0
    ) -> list[np.ndarray]:
        """Per text, (len, 256) float32 natural-log probabilities of the byte after each byte.

        Row t predicts byte t + 1 of the text (the last row: the byte after it). Strings are
        sent as UTF-8.

        Raises:
            InvalidArgument: No texts, a bare string or bytes instead of a list of them, or
                a text the server refuses (empty, too long).

        """
        if isinstance(texts, (str, bytes, bytearray)):  # each character would be a text
            raise InvalidArgument("score_text takes a list of texts, not one text")
        encoded = [_utf8(t) for t in texts]
        if not encoded:
            raise InvalidArgument("score_text takes at least one text")
        request = self._text_request(model, encoded, version)
        for name in (LOGPROBS, LENGTHS):
            request.outputs.add(name=name)
        reply = self._call(self._stub.ModelInfer, request)
        arrays = _numeric_outputs(reply)
        logprobs, lengths = arrays[LOGPROBS], arrays[LENGTHS]
        return [logprobs[i, : int(n)] for i, n in enumerate(lengths)]

    def classify_text(
        self, model: str, texts: Sequence[bytes | str], version: int = 0
    ) -> np.ndarray:
        """Class log-probabilities (texts, classes) of a multi-task language model.

        Each text's class is read at its last byte, as the trainer learns it.

        Raises:
            InvalidArgument: No texts, a bare string, a text the server refuses, or a model
                without a class head.

        """
        if isinstance(texts, (str, bytes, bytearray)):
            raise InvalidArgument("classify_text takes a list of texts, not one text")
        encoded = [_utf8(t) for t in texts]
        if not encoded:
            raise InvalidArgument("classify_text takes at least one text")
        request = self._text_request(model, encoded, version)
        request.outputs.add(name=CLASSES)
        reply = self._call(self._stub.ModelInfer, request)
        return _numeric_outputs(reply)[CLASSES]

    def generate(
        self,
        model: str,
        prompt: bytes | str,
        max_new_bytes: int,
        *,
        sampling: str = "greedy",
        temperature: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        version: int = 0,
    ) -> bytes:
        """The `max_new_bytes` bytes a served language model writes after `prompt`.

        Args:
            model: The served language model.
            prompt: At least one byte (a string is sent as UTF-8).
            max_new_bytes: How many bytes to generate (the server refuses more than its
                INFERENCE_MAX_NEW_BYTES).
            sampling: "greedy" (the most probable byte each time) or "sample".
            temperature: > 0; sampling draws from softmax(logprobs / temperature).
            top_k: Sample among the top_k most probable bytes only (0: all 256).
            seed: The sampler's seed: a seed gives the same bytes every time.
            version: A loaded version (0: the one served).

        Raises:
            InvalidArgument: Settings no decoding can follow, or a prompt the server refuses.

        """
        request = self._generation_request(
            model, prompt, max_new_bytes, version, sampling, temperature, top_k, seed
        )
        reply = self._call(self._stub.ModelInfer, request)
        return b"".join(_generated(reply))

    def generate_stream(
        self,
        model: str,
        prompt: bytes | str,
        max_new_bytes: int,
        *,
        sampling: str = "greedy",
        temperature: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        chunk_bytes: int = 16,
        version: int = 0,
    ) -> Iterator[bytes]:
        """`generate`, as pieces of `chunk_bytes` bytes as soon as each is written.

        The whole stream must end within the client's timeout. An error part-way through
        (the stream's `error_message`, whose status code the protocol does not carry) is
        raised as a `StreamlearnError` after the pieces that came before it.
        """
        if chunk_bytes < 1:
            raise InvalidArgument(f"chunk_bytes must be >= 1, not {chunk_bytes}")
        request = self._generation_request(
            model, prompt, max_new_bytes, version, sampling, temperature, top_k, seed
        )
        request.parameters["chunk_bytes"].int64_param = chunk_bytes
        try:
            call = self._stub.ModelStreamInfer(iter([request]), timeout=self._timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        try:
            yield from _stream_pieces(call)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()  # a caller that stops early frees the stream at once

    def _text_request(self, model: str, texts: list[bytes], version: int) -> pb.ModelInferRequest:
        request = pb.ModelInferRequest(model_name=model, model_version=str(version or ""))
        request.inputs.add(name=TEXT, datatype="BYTES", shape=[len(texts)])
        request.raw_input_contents.append(b"".join(_length_prefixed(t) for t in texts))
        return request

    def _generation_request(
        self,
        model: str,
        prompt: bytes | str,
        max_new_bytes: int,
        version: int,
        sampling: str,
        temperature: float,
        top_k: int,
        seed: int,
    ) -> pb.ModelInferRequest:
        """A generation request, checked here first so that mistakes fail before a call."""
        data = _utf8(prompt)
        if not data:
            raise InvalidArgument("the prompt must hold at least one byte")
        if max_new_bytes < 1:
            raise InvalidArgument(f"max_new_bytes must be >= 1, not {max_new_bytes}")
        if sampling not in SAMPLINGS:
            raise InvalidArgument(f"sampling must be greedy or sample, not {sampling!r}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise InvalidArgument(f"temperature must be finite and > 0, not {temperature}")
        request = self._text_request(model, [data], version)
        parameters = request.parameters
        parameters["max_new_bytes"].int64_param = max_new_bytes
        parameters["sampling"].string_param = sampling
        parameters["temperature"].double_param = temperature
        parameters["top_k"].int64_param = top_k
        parameters["seed"].int64_param = seed
        return request

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


def _utf8(text: bytes | str) -> bytes:
    """A text as bytes: strings as UTF-8."""
    if isinstance(text, str):
        return text.encode()
    if isinstance(text, bytes | bytearray | memoryview):
        return bytes(text)
    raise InvalidArgument(f"a text must be bytes or str, not {type(text).__name__}")


def _numeric_outputs(reply: Any) -> dict[str, np.ndarray]:
    """Every output of a reply by name, from raw little-endian bytes."""
    if len(reply.raw_output_contents) != len(reply.outputs):
        raise StreamlearnError("the reply's outputs do not come with raw contents")
    return {
        t.name: _array(t, raw)
        for t, raw in zip(reply.outputs, reply.raw_output_contents, strict=True)
    }


def _array(tensor: Any, raw: bytes) -> np.ndarray:
    """A numeric output tensor from its raw little-endian bytes."""
    if tensor.datatype not in _NP:
        raise StreamlearnError(f"output {tensor.name!r} has unexpected datatype {tensor.datatype}")
    values = np.frombuffer(raw, _NP[tensor.datatype].newbyteorder("<"))
    return values.reshape(tuple(tensor.shape))


def _generated(reply: Any) -> list[bytes]:
    """The elements of a reply's `generated` BYTES output (raw length-prefixed, or typed)."""
    for i, tensor in enumerate(reply.outputs):
        if tensor.name != GENERATED:
            continue
        if i >= len(reply.raw_output_contents):
            return list(tensor.contents.bytes_contents)
        return _elements(reply.raw_output_contents[i])
    raise StreamlearnError(f"the reply has no {GENERATED!r} output")


def _elements(raw: bytes) -> list[bytes]:
    """Length-prefixed BYTES elements (4-byte little-endian lengths)."""
    elements, offset = [], 0
    while offset < len(raw):
        length = int.from_bytes(raw[offset : offset + 4], "little")
        start, offset = offset + 4, offset + 4 + length
        if offset > len(raw):
            raise StreamlearnError("a BYTES output is cut short")
        elements.append(raw[start:offset])
    return elements


def _stream_pieces(call: Any) -> Iterator[bytes]:
    """The `generated` bytes of each stream response until the one marked `final`."""
    for response in call:
        if response.error_message:
            raise StreamlearnError(response.error_message)
        reply = response.infer_response
        yield b"".join(_generated(reply))
        if FINAL in reply.parameters and reply.parameters[FINAL].bool_param:
            return
    raise StreamlearnError("the generation stream ended before its final piece")


def _length_prefixed(element: bytes) -> bytes:
    """A KServe BYTES element: its length as 4 little-endian bytes, then the bytes."""
    return len(element).to_bytes(4, "little") + element

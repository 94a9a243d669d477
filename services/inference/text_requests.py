"""KServe V2 requests to language models <-> `text`: protobuf only at this edge.

A request sends one BYTES input `text` of shape [batch], each element one text (any bytes;
Triton's BYTES wire format: raw length-prefixed elements or `contents.bytes_contents`).
Without parameters it is scored: outputs `logprobs` FP32 [batch, longest, 256] and
`lengths` INT64 [batch]. With the request parameter `max_new_bytes` it is a prompt
(batch 1) to continue: output `generated` BYTES [1], decoded as the parameters `sampling`
("greedy" or "sample"), `temperature`, `top_k` and `seed` say; on ModelStreamInfer the
continuation comes in pieces of `chunk_bytes`, the last response with parameter `final`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference import grpc_service_pb2 as pb
from services.inference.model import LoadedModel
from services.inference.tensors import bytes_elements, paired, requested_outputs
from services.inference.text import (
    CLASSES,
    GENERATE_OUTPUTS,
    GENERATED,
    LENGTHS,
    LOGPROBS,
    graph,
)
from shared.errors import InvalidArgument, ResourceExhausted
from shared.serving import TEXT_INPUT
from shared.text_generation import VOCAB, Decoding

MAX_NEW_BYTES = "max_new_bytes"
SAMPLING = "sampling"
TEMPERATURE = "temperature"
TOP_K = "top_k"
SEED = "seed"
CHUNK_BYTES = "chunk_bytes"
FINAL = "final"  # response parameter: the last response of a generation
DEFAULT_CHUNK_BYTES = 16
# What only a generation takes; `max_new_bytes` asks for one.
DECODING_PARAMETERS = (SAMPLING, TEMPERATURE, TOP_K, SEED, CHUNK_BYTES)
TEXT_PARAMETERS = (MAX_NEW_BYTES, *DECODING_PARAMETERS)
# Triton's own request parameters (tritonclient sends some): not ours to refuse.
TRITON_PARAMETERS = frozenset(
    {"sequence_id", "sequence_start", "sequence_end", "priority", "timeout", "headers"}
    | {"binary_data_output"}
)
TRITON_PREFIX = "triton_"


@dataclass(frozen=True)
class TextLimits:
    """Bounds on what one request may ask of a language model (`InferenceSettings`)."""

    max_text_bytes: int = 8192  # bytes of one text or prompt
    max_new_bytes: int = 1024  # bytes one generation may ask for
    max_response_bytes: int = 16 * 1024 * 1024  # `logprobs` of one response


@dataclass(frozen=True)
class Generation:
    """A checked generation request: how many bytes, how chosen, in which pieces."""

    max_new: int
    decoding: Decoding
    chunk_bytes: int


@dataclass(frozen=True)
class TextRequest:
    """A checked request to a language model: texts and what to do with them."""

    texts: list[bytes]
    outputs: tuple[str, ...]
    generation: Generation | None


def decode(request: Any, model: LoadedModel, limits: TextLimits, max_rows: int) -> TextRequest:
    """The request's texts, outputs and generation parameters, each checked.

    Raises:
        InvalidArgument: Anything malformed: inputs other than one BYTES `text` [batch],
            empty or over-long texts, a prompt batch above 1, unknown outputs or
            parameters, parameters of the wrong type or out of range.
        ResourceExhausted: More texts than `max_rows`, or `logprobs` larger than
            `max_response_bytes`.

    """
    generation = _generation(request.parameters, limits)
    texts = _texts(request, limits, max_rows)
    if generation is not None and len(texts) != 1:
        raise InvalidArgument(f"generation takes one prompt: {TEXT_INPUT!r} of shape [1]")
    scores = graph(model).score_outputs
    outputs = _outputs(request, GENERATE_OUTPUTS if generation else scores)
    if generation is None and LOGPROBS in outputs:
        _check_response_size(texts, limits)
    return TextRequest(texts, outputs, generation)


def refuse_text_parameters(request: Any, model: LoadedModel) -> None:
    """InvalidArgument when a request to a tabular model asks for generation."""
    if not request.parameters:  # most requests: no set built per request
        return
    given = sorted(set(request.parameters) & set(TEXT_PARAMETERS))
    if given:
        raise InvalidArgument(
            f"{model.name} is not a language model: parameters {given} apply to text only"
        )


def _texts(request: Any, limits: TextLimits, max_rows: int) -> list[bytes]:
    """The one `text` input's elements; its shape is checked before anything is decoded."""
    tensors = paired(request)
    names = [t.name for t, _ in tensors]
    if names != [TEXT_INPUT]:
        raise InvalidArgument(
            f"a language model takes one input {TEXT_INPUT!r} BYTES [batch]; got {names}"
        )
    tensor, raw = tensors[0]
    if tensor.datatype != "BYTES":
        raise InvalidArgument(
            f"input {TEXT_INPUT!r} has datatype {tensor.datatype}; expected BYTES "
            "(one element per text)"
        )
    shape = [int(d) for d in tensor.shape]
    if len(shape) != 1 or shape[0] < 1:
        raise InvalidArgument(
            f"input {TEXT_INPUT!r} has shape {shape}; expected [batch], batch >= 1"
        )
    if shape[0] > max_rows:
        raise ResourceExhausted(f"batch of {shape[0]} texts exceeds max_batch_size {max_rows}")
    texts = bytes_elements(tensor, shape[0], raw)
    for i, text in enumerate(texts):
        if not text:
            raise InvalidArgument(f"text {i} is empty: there is nothing to score or continue")
        if len(text) > limits.max_text_bytes:
            raise InvalidArgument(
                f"text {i} has {len(text)} bytes, more than the {limits.max_text_bytes} "
                "allowed per text"
            )
    return texts


def _outputs(request: Any, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The requested outputs in order (all of `allowed` when none are named)."""
    names = requested_outputs(request)
    unknown = [n for n in names if n not in allowed]
    if unknown or len(set(names)) != len(names):
        raise InvalidArgument(
            f"unknown or repeated output(s) {names}; this request gives {list(allowed)}"
        )
    return tuple(names) or allowed


def _check_response_size(texts: list[bytes], limits: TextLimits) -> None:
    """ResourceExhausted before any work when the padded `logprobs` would be too large."""
    size = len(texts) * max(len(t) for t in texts) * VOCAB * 4
    if size > limits.max_response_bytes:
        raise ResourceExhausted(
            f"logprobs of {len(texts)} texts of up to {max(len(t) for t in texts)} bytes take "
            f"{size} bytes, over the {limits.max_response_bytes}-byte limit: send fewer or "
            "shorter texts per request"
        )


# -- parameters -----------------------------------------------------------------------------


def _generation(parameters: Any, limits: TextLimits) -> Generation | None:
    """The generation the parameters ask for, or None to score."""
    unknown = sorted(k for k in parameters if not _known(k))
    if unknown:
        raise InvalidArgument(
            f"unknown parameter(s) {unknown}; a language model takes {list(TEXT_PARAMETERS)}"
        )
    if MAX_NEW_BYTES not in parameters:
        given = [k for k in DECODING_PARAMETERS if k in parameters]
        if given:
            raise InvalidArgument(f"parameters {given} apply to generation: set {MAX_NEW_BYTES}")
        return None
    max_new = _integer(parameters, MAX_NEW_BYTES, 1, limits.max_new_bytes)
    decoding = Decoding(
        sampling=_string(parameters, SAMPLING, "greedy"),
        temperature=_number(parameters, TEMPERATURE, 1.0),
        top_k=_integer(parameters, TOP_K, 0, VOCAB, default=0),
        seed=_integer(parameters, SEED, 0, 2**63 - 1, default=0),
    )
    decoding.check()
    chunk = _integer(parameters, CHUNK_BYTES, 1, limits.max_new_bytes, DEFAULT_CHUNK_BYTES)
    return Generation(max_new, decoding, chunk)


def _known(name: str) -> bool:
    """A parameter of ours, or one of Triton's that tritonclient may send on its own."""
    return name in TEXT_PARAMETERS or name in TRITON_PARAMETERS or name.startswith(TRITON_PREFIX)


def _value(parameters: Any, name: str) -> tuple[str | None, Any]:
    """(which oneof field is set, its value) of a parameter."""
    parameter = parameters[name]
    kind = parameter.WhichOneof("parameter_choice")
    return kind, getattr(parameter, kind) if kind else None


def _integer(parameters: Any, name: str, low: int, high: int, default: int | None = None) -> int:
    if name not in parameters and default is not None:
        return default
    kind, value = _value(parameters, name)
    if kind not in ("int64_param", "uint64_param"):
        raise InvalidArgument(f"parameter {name!r} must be an integer, not {kind or 'unset'}")
    if not low <= value <= high:
        raise InvalidArgument(f"parameter {name!r} must be in [{low}, {high}], not {value}")
    return int(value)


def _number(parameters: Any, name: str, default: float) -> float:
    if name not in parameters:
        return default
    kind, value = _value(parameters, name)
    if kind not in ("double_param", "int64_param", "uint64_param"):
        raise InvalidArgument(f"parameter {name!r} must be a number, not {kind or 'unset'}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidArgument(f"parameter {name!r} must be finite, not {value}")
    return number


def _string(parameters: Any, name: str, default: str) -> str:
    if name not in parameters:
        return default
    kind, value = _value(parameters, name)
    if kind != "string_param":
        raise InvalidArgument(f"parameter {name!r} must be a string, not {kind or 'unset'}")
    return str(value)


# -- responses ------------------------------------------------------------------------------


def _response(request: Any, model: LoadedModel) -> pb.ModelInferResponse:
    return pb.ModelInferResponse(
        model_name=model.name, model_version=str(model.version), id=request.id
    )


def score_response(
    request: Any, model: LoadedModel, outputs: tuple[str, ...], arrays: dict[str, np.ndarray]
) -> pb.ModelInferResponse:
    """`logprobs` and/or `lengths`, in the requested order, raw little-endian."""
    response = _response(request, model)
    datatypes = {LOGPROBS: ("FP32", "<f4"), LENGTHS: ("INT64", "<i8"), CLASSES: ("FP32", "<f4")}
    for name in outputs:
        datatype, wire = datatypes[name]
        array = np.ascontiguousarray(arrays[name], dtype=wire)
        response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        response.raw_output_contents.append(array.tobytes())
    return response


def generated_response(
    request: Any, model: LoadedModel, data: bytes, final: bool
) -> pb.ModelInferResponse:
    """One piece (or all) of a continuation: `generated` BYTES [1], `final` when the last."""
    response = _response(request, model)
    response.outputs.add(name=GENERATED, datatype="BYTES", shape=[1])
    response.raw_output_contents.append(len(data).to_bytes(4, "little") + data)
    response.parameters[FINAL].bool_param = final
    return response

"""KServe V2 tensors <-> numpy, at the edge: raw_input_contents or typed contents in, raw out.

BYTES tensors are taken as named inputs (`named`) and as texts (`text_requests`), as lists
of their elements.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from inference import grpc_service_pb2 as pb
from services.inference.datatypes import V2_TYPES, numpy_dtype, v2_of_array
from services.inference.model import LoadedModel
from services.inference.named import NUMBER_TYPES, RECORDS, TEXT_TYPE, Column, NamedInputs
from shared.errors import InvalidArgument

# Above numpy's addressable size, whatever the dimensions: such a shape is refused outright.
MAX_TENSOR_BYTES = 2**62
# Shapes of rank <= 2 with dimensions <= 2**28 cannot pass the bound (2**56 elements of at
# most 8 bytes): the common request skips the product.
_SMALL_RANK, _SMALL_DIM = 2, 2**28


def decode_inputs(request: Any, model: LoadedModel, max_rows: int) -> dict[str, np.ndarray]:
    """The request's input tensors as arrays, checked against the model's inputs.

    A version with named inputs (`model.named`) also takes its fields or `records`, which
    become its numeric inputs here; `max_rows` bounds such a request before it is decoded.
    """
    tensors = paired(request)
    named = model.named
    if named is not None and any(not model.has_input(t.name) for t, _ in tensors):
        return named.feeds(_named_columns(tensors, named, max_rows, model))
    feeds = {}
    for tensor, data in tensors:
        name, datatype = tensor.name, tensor.datatype
        spec = model.input_spec(name)
        if datatype != spec.datatype:
            raise InvalidArgument(
                f"input {name!r} has datatype {datatype}; expected {spec.datatype}"
            )
        feeds[name] = _array(tensor, _shape(tensor), data)
    return feeds


def paired(request: Any) -> list[tuple[Any, bytes | None]]:
    """Each input tensor with its raw contents (None: typed contents), names unique."""
    inputs = request.inputs
    raw = request.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise InvalidArgument(f"{len(raw)} raw_input_contents for {len(inputs)} inputs")
    if len(inputs) > 1:
        seen: set[str] = set()
        for tensor in inputs:
            if tensor.name in seen:
                raise InvalidArgument(f"input {tensor.name!r} is given more than once")
            seen.add(tensor.name)
    return list(zip(inputs, raw, strict=True)) if raw else [(t, None) for t in inputs]


def _named_columns(
    tensors: list[tuple[Any, bytes | None]], named: NamedInputs, max_rows: int, model: LoadedModel
) -> dict[str, Column]:
    """Field (or `records`) tensors as columns; the shape is checked before any decoding."""
    columns: dict[str, Column] = {}
    for tensor, data in tensors:
        if model.has_input(tensor.name):
            raise InvalidArgument(
                f"input {tensor.name!r} comes with named inputs: send the model's inputs "
                "or named fields (or records), not both"
            )
        if not named.knows(tensor.name):
            raise named.unknown(tensor.name)
        rows = named.rows(tensor.name, [int(d) for d in tensor.shape], max_rows)
        if tensor.datatype == TEXT_TYPE:
            columns[tensor.name] = bytes_elements(tensor, rows, data)
        elif tensor.datatype in NUMBER_TYPES and tensor.name != RECORDS:
            columns[tensor.name] = _array(tensor, (rows,), data)
        else:
            allowed = TEXT_TYPE if tensor.name == RECORDS else f"{', '.join(NUMBER_TYPES)} or BYTES"
            raise InvalidArgument(
                f"input {tensor.name!r} has datatype {tensor.datatype!r}; expected {allowed}"
            )
    return columns


def bytes_elements(tensor: Any, count: int, raw: bytes | None) -> list[bytes]:
    """A BYTES tensor's `count` elements: typed `bytes_contents`, or raw length-prefixed.

    Raw BYTES are, per element, a 4-byte little-endian length and then that many bytes.
    """
    if raw is None:
        values = list(tensor.contents.bytes_contents)
        if len(values) != count:
            raise InvalidArgument(f"input {tensor.name!r}: {len(values)} values for {count} rows")
        return values
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw) and len(elements) < count:
        if offset + 4 > len(raw):
            break
        length = int.from_bytes(raw[offset : offset + 4], "little")
        start, offset = offset + 4, offset + 4 + length
        if offset > len(raw):
            break
        elements.append(raw[start:offset])
    if len(elements) != count or offset != len(raw):
        raise InvalidArgument(
            f"input {tensor.name!r}: {len(raw)} bytes are not {count} length-prefixed BYTES "
            "elements"
        )
    return elements


def _shape(tensor: Any) -> tuple[int, ...]:
    """The declared shape, refused if no array could have it.

    Nothing is ever allocated from the declared shape alone: the byte or value count sent
    must match it first. This only stops shapes numpy cannot represent at all, such as
    [0, 2**62, 2**62], which hold no elements yet overflow numpy's size arithmetic.
    """
    shape = tuple(tensor.shape)  # int64 values: Python ints already
    if not shape:
        return shape
    if min(shape) < 0:
        raise InvalidArgument(f"input {tensor.name!r} has a negative dimension {list(shape)}")
    if len(shape) <= _SMALL_RANK and max(shape) <= _SMALL_DIM:
        return shape  # at most 2**56 elements of at most 8 bytes: the bound below holds
    itemsize = numpy_dtype(tensor.datatype).itemsize
    if math.prod(max(d, 1) for d in shape) * itemsize > MAX_TENSOR_BYTES:
        raise InvalidArgument(f"input {tensor.name!r}: shape {list(shape)} is too large")
    return shape


def _array(tensor: Any, shape: tuple[int, ...], raw: bytes | None) -> np.ndarray:
    dtype = numpy_dtype(tensor.datatype)
    count = math.prod(shape)
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise InvalidArgument(
                f"input {tensor.name!r}: {len(raw)} bytes for shape "
                f"{list(shape)} of {tensor.datatype} (needs "
                f"{count * dtype.itemsize})"
            )
        return np.frombuffer(raw, dtype).reshape(shape)
    values = getattr(tensor.contents, V2_TYPES[tensor.datatype][1])
    if len(values) != count:
        raise InvalidArgument(
            f"input {tensor.name!r}: {len(values)} values for shape {list(shape)}"
        )
    return _narrow(tensor.name, np.asarray(values), dtype).reshape(shape)


def _narrow(name: str, wide: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Typed contents in their datatype; they travel wider (INT8 in int32 fields, ...)."""
    if dtype.kind in "iu" and wide.size:
        limits = np.iinfo(dtype)
        low, high = wide.min(), wide.max()
        if low < limits.min or high > limits.max:
            raise InvalidArgument(
                f"input {name!r}: values from {low} to {high} do not fit {dtype.name} "
                f"[{limits.min}, {limits.max}]"
            )
    return wide.astype(dtype)


def requested_outputs(request: Any) -> list[str]:
    """Output names the client asked for, in its order (empty: all)."""
    return [o.name for o in request.outputs]


def encode_response(
    request: Any, model: LoadedModel, results: dict[str, np.ndarray]
) -> pb.ModelInferResponse:
    """Outputs in the requested order (or the model's), as raw little-endian bytes."""
    names = requested_outputs(request) or model.output_names
    response = pb.ModelInferResponse(
        model_name=model.name, model_version=model.version_text, id=request.id
    )
    outputs, contents = response.outputs, response.raw_output_contents
    for name in names:
        array = results[name]
        # A scalar goes out as shape [1], as it always has (numpy views it so too).
        outputs.add(name=name, datatype=v2_of_array(array), shape=array.shape or (1,))
        contents.append(_little_endian_bytes(array))
    return response


def _little_endian_bytes(array: np.ndarray) -> bytes:
    """The array's elements in C order as little-endian bytes (no copy beyond `tobytes`)."""
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()

"""KServe V2 datatypes, numpy dtypes and ONNX tensor types, and the typed-contents fields."""

from __future__ import annotations

import numpy as np

from shared.errors import InvalidArgument

# V2 name -> (numpy dtype, InferTensorContents field for typed (non-raw) inputs)
V2_TYPES: dict[str, tuple[np.dtype, str]] = {
    "BOOL": (np.dtype(np.bool_), "bool_contents"),
    "UINT8": (np.dtype(np.uint8), "uint_contents"),
    "UINT16": (np.dtype(np.uint16), "uint_contents"),
    "UINT32": (np.dtype(np.uint32), "uint_contents"),
    "UINT64": (np.dtype(np.uint64), "uint64_contents"),
    "INT8": (np.dtype(np.int8), "int_contents"),
    "INT16": (np.dtype(np.int16), "int_contents"),
    "INT32": (np.dtype(np.int32), "int_contents"),
    "INT64": (np.dtype(np.int64), "int64_contents"),
    "FP16": (np.dtype(np.float16), "fp32_contents"),
    "FP32": (np.dtype(np.float32), "fp32_contents"),
    "FP64": (np.dtype(np.float64), "fp64_contents"),
}

ONNX_TO_V2 = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
}

# V2 name -> Triton model-config DataType enum name
V2_TO_CONFIG = {name: f"TYPE_{name}" for name in V2_TYPES} | {"BYTES": "TYPE_STRING"}


def numpy_dtype(v2: str) -> np.dtype:
    """The numpy dtype of a V2 datatype name."""
    try:
        return V2_TYPES[v2][0]
    except KeyError:
        raise InvalidArgument(
            f"unsupported datatype {v2!r}; supported: {sorted(V2_TYPES)}"
        ) from None


def v2_name(onnx_type: str) -> str:
    """The V2 datatype of an ONNX tensor type string such as 'tensor(float)'."""
    try:
        return ONNX_TO_V2[onnx_type]
    except KeyError:
        raise InvalidArgument(f"model uses unsupported tensor type {onnx_type}") from None


_V2_OF_DTYPE = {dtype: name for name, (dtype, _) in V2_TYPES.items()}


def v2_of_array(array: np.ndarray) -> str:
    """The V2 datatype of a numpy array."""
    name = _V2_OF_DTYPE.get(array.dtype)
    if name is not None:
        return name
    raise InvalidArgument(f"unsupported output dtype {array.dtype}")

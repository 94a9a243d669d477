"""Property-based fuzzing of what clients send: inference tensors, named inputs, uploads.

Each input either gives a result or its documented domain error, never another exception,
and never an allocation sized by a declared (rather than sent) shape.
"""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference import grpc_service_pb2 as pb
from services.inference.datatypes import V2_TYPES
from services.inference.engine import Engine
from services.inference.model import LoadedModel
from services.inference.named import NUMBER_TYPES
from services.inference.repository import Repository
from services.inference.servicer import InferenceServicer
from services.inference.tensors import decode_inputs
from services.registry.artifacts import LocalArtifactStore
from services.registry.model import VersionRef
from services.registry.registry import Registry
from services.registry.servicer import RegistryServicer
from services.registry.store import Store
from shared.errors import (
    Conflict,
    IntegrityError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from shared.onnx_models import linear_model
from streamlearn.v1 import registry_pb2
from tests.unit.test_named_inference import named_model

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
INT64 = st.integers(-(2**63), 2**63 - 1)
DIMS = st.one_of(
    st.integers(0, 6),
    st.integers(-3, -1),
    st.sampled_from([2**31, 2**40, 2**62, 2**63 - 1]),
    INT64,
)
DATATYPES = st.sampled_from([*V2_TYPES, "BYTES", "", "fp32", "STRING"])
MODEL = LoadedModel("m", 1, linear_model(np.linspace(-1, 1, 4)), device="cpu")


class AbortingContext:
    """A servicer context that records the status an RPC ends with."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        raise grpc.RpcError(details)

    def is_active(self) -> bool:
        return True

    def peer(self) -> str:
        return "fuzz"


def bytes_prefixed(strings: list[bytes], lie: int) -> bytes:
    """KServe BYTES: each element a 4-byte little-endian length, then its bytes (`lie` skews)."""
    return b"".join(
        (len(s) + lie).to_bytes(4, "little", signed=False) + s if len(s) + lie >= 0 else s
        for s in strings
    )


@st.composite
def infer_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", id="fuzz")
    count = draw(st.integers(0, 3))
    raw_mode = draw(st.sampled_from(["raw", "typed", "mismatched"]))
    for _ in range(count):
        datatype = draw(st.one_of(st.just("FP32"), DATATYPES))
        shape = draw(st.lists(DIMS, max_size=4))
        name = draw(st.sampled_from(["features", "features", "x", ""]))
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if raw_mode != "typed":
            if datatype == "BYTES":
                strings = draw(st.lists(st.binary(max_size=8), max_size=4))
                payload = bytes_prefixed(strings, draw(st.integers(-2, 2)))
            else:
                payload = draw(st.binary(max_size=96))
            request.raw_input_contents.append(payload)
        else:
            field = V2_TYPES.get(datatype, (None, "fp32_contents"))[1]
            values = draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=24))
            contents = getattr(tensor.contents, field)
            if field in ("fp32_contents", "fp64_contents"):
                contents.extend(float(v) for v in values)
            elif field == "bool_contents":
                contents.extend(bool(v) for v in values)
            elif field in ("uint_contents", "uint64_contents"):
                contents.extend(abs(v) for v in values)
            else:
                contents.extend(values)
    if raw_mode == "mismatched":
        request.raw_input_contents.append(b"\0" * 16)
    return request


@FUZZ
@given(infer_requests())
def test_tensor_decoding_gives_arrays_or_invalid_argument(request: pb.ModelInferRequest) -> None:
    try:
        feeds = decode_inputs(request, MODEL, 64)
    except InvalidArgument:
        return
    raw = list(request.raw_input_contents)
    assert len(feeds) == len(request.inputs)
    for index, tensor in enumerate(request.inputs):
        array = feeds[tensor.name]
        assert list(array.shape) == list(tensor.shape)
        if raw:
            assert array.nbytes == len(raw[index])


@FUZZ
@given(infer_requests())
def test_a_whole_request_ends_in_a_result_or_a_mapped_status(
    request: pb.ModelInferRequest,
) -> None:
    context = AbortingContext()
    try:
        response = SERVICER.ModelInfer(request, context)
    except grpc.RpcError:
        assert context.code in {
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.INTERNAL,
        }
        return
    assert response.model_version == "1" and len(response.raw_output_contents) == 1


def _named_repository(model: LoadedModel) -> Repository:
    repository = Repository([model.name])
    repository.model(model.name).swap(model)
    return repository


def _servicer() -> InferenceServicer:
    repository = Repository(["m"])
    repository.model("m").swap(MODEL)
    return InferenceServicer(Engine(repository, max_batch=64, max_delay_s=0), 1 << 20)


SERVICER = _servicer()


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
@pytest.mark.parametrize("shape", [[2**20, 2**20], [1, 2**40], [0, 2**62, 2**62], [2**40, 4]])
def test_a_huge_declared_shape_is_refused_before_allocating(raw: bool, shape: list[int]) -> None:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=shape)
    if raw:
        request.raw_input_contents.append(b"\0" * 16)
    else:
        tensor.contents.fp32_contents.extend([0.0] * 4)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidArgument):
            decode_inputs(request, MODEL, 64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # nothing sized by the declared shape was allocated


@FUZZ
@given(
    st.sampled_from(["INT8", "INT16", "UINT8", "UINT16", "UINT32", "BOOL", "FP16"]),
    st.lists(st.integers(-(2**31), 2**32 - 1), min_size=1, max_size=8),
)
def test_typed_values_out_of_range_are_invalid_arguments(datatype: str, values: list[int]) -> None:
    """Typed contents are wider than the datatype they fill: out-of-range values are refused."""
    graph_model = _typed_model(datatype)
    request = pb.ModelInferRequest(model_name="t")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[1, len(values)])
    field = V2_TYPES[datatype][1]
    contents = getattr(tensor.contents, field)
    if field == "uint_contents":
        contents.extend(abs(v) % 2**32 for v in values)
    elif field == "bool_contents":
        contents.extend(bool(v) for v in values)
    elif field == "fp32_contents":
        contents.extend(float(v) for v in values)
    else:
        contents.extend(max(-(2**31), min(v, 2**31 - 1)) for v in values)
    sent = np.asarray(list(contents))
    dtype = np.dtype(V2_TYPES[datatype][0])
    fits = dtype.kind not in "iu" or bool(
        (sent >= np.iinfo(dtype).min).all() and (sent <= np.iinfo(dtype).max).all()
    )
    try:
        feeds = decode_inputs(request, graph_model, 64)
    except InvalidArgument:
        assert not fits, f"{datatype} values {sent.tolist()} fit and were refused"
        return
    assert fits, f"{datatype} values {sent.tolist()} do not fit and were accepted"
    assert feeds["x"].dtype == dtype
    # Accepted values are the values sent (no silent wrap); FP16 rounds as IEEE does.
    assert np.array_equal(feeds["x"].reshape(-1), sent.astype(dtype))
    if dtype.kind in "iu":
        assert feeds["x"].reshape(-1).astype(np.int64).tolist() == sent.astype(np.int64).tolist()


_TYPED: dict[str, LoadedModel] = {}


def _typed_model(datatype: str) -> LoadedModel:
    """An identity model over one input of `datatype` (cached: sessions are slow to build)."""
    if datatype not in _TYPED:
        from onnx import TensorProto, helper

        onnx_type = {
            "INT8": TensorProto.INT8,
            "INT16": TensorProto.INT16,
            "UINT8": TensorProto.UINT8,
            "UINT16": TensorProto.UINT16,
            "UINT32": TensorProto.UINT32,
            "BOOL": TensorProto.BOOL,
            "FP16": TensorProto.FLOAT16,
        }[datatype]
        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "identity",
            [helper.make_tensor_value_info("x", onnx_type, ["batch", None])],
            [helper.make_tensor_value_info("y", onnx_type, ["batch", None])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        _TYPED[datatype] = LoadedModel("t", 1, model.SerializeToString(), device="cpu")
    return _TYPED[datatype]


# --- named inputs ---------------------------------------------------------------------------

NAMED = named_model()
NAMED_SERVICER = InferenceServicer(
    Engine(_named_repository(NAMED), max_batch=8, max_delay_s=0), 1 << 20
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELD_NAMES = st.sampled_from(["age", "income", "city", "device"] * 3 + ["colour", ""])
PLAIN_VALUES = st.none() | st.floats(-1e6, 1e6) | st.text(max_size=6) | st.integers(-9, 9)
RECORD_TEXT = st.one_of(
    st.dictionaries(FIELD_NAMES, PLAIN_VALUES, max_size=4).map(lambda d: json.dumps(d).encode()),
    st.dictionaries(FIELD_NAMES, PLAIN_VALUES, max_size=4).map(lambda d: json.dumps(d).encode()),
    st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=5).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=12),
    st.sampled_from([b"{", b"[" * 5000, b'{"age": NaN}', b'{"age": 1e999}', b"null", b"{}"]),
)
NAMED_FIELDS = ["age", "income", "city", "device"]
NUMBERS = st.floats(width=32) | st.integers(-3, 3).map(float)
ELEMENT_TEXT = st.one_of(
    st.binary(max_size=6), st.sampled_from([b"1.5", b"nan", b"inf", b"-0", b"7", b"\xff"])
)


def _add_bytes(
    request: pb.ModelInferRequest, tensor: Any, elements: list[bytes], raw: bool, lie: int = 0
) -> None:
    if raw:
        request.raw_input_contents.append(bytes_prefixed(elements, lie))
    else:
        tensor.contents.bytes_contents.extend(elements)


def _add_numbers(
    request: pb.ModelInferRequest, tensor: Any, values: list[float], raw: bool
) -> None:
    dtype, field = V2_TYPES.get(tensor.datatype, (np.dtype(np.float32), "fp32_contents"))
    with np.errstate(invalid="ignore", over="ignore"):
        array = np.array(values, np.float64).astype(dtype)
    if raw:
        request.raw_input_contents.append(array.tobytes())
    else:
        getattr(tensor.contents, field).extend(array.tolist())


@st.composite
def named_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    """Records, field columns, or a chaos of both with the model's tensors and strangers.

    The first two are well-formed in their framing (so that featurizing is reached and the
    values are what gets fuzzed); the chaos breaks names, shapes, datatypes and framing.
    """
    request = pb.ModelInferRequest(model_name="m", id="fuzz")
    raw = draw(st.booleans())
    mode = draw(st.sampled_from(["records", "columns", "chaos"]))
    rows = draw(st.integers(0, 4))
    if mode == "records":
        tensor = request.inputs.add(name="records", datatype="BYTES", shape=[rows])
        _add_bytes(request, tensor, draw(st.lists(RECORD_TEXT, min_size=rows, max_size=rows)), raw)
        return request
    if mode == "columns":
        for name in draw(st.lists(st.sampled_from(NAMED_FIELDS), min_size=1, unique=True)):
            datatype = draw(st.sampled_from([*NUMBER_TYPES, "BYTES"]))
            tensor = request.inputs.add(name=name, datatype=datatype, shape=[rows, 1][: 1 + raw])
            if datatype == "BYTES":
                _add_bytes(request, tensor, draw(_exactly(ELEMENT_TEXT, rows)), raw)
            else:
                _add_numbers(request, tensor, draw(_exactly(NUMBERS, rows)), raw)
        return request
    names = ["age", "income", "city", "device", "records", "features", "x"]
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=4)):
        datatype = draw(st.sampled_from([*NUMBER_TYPES, "BYTES", "FP16", ""]))
        n = draw(st.sampled_from([rows, rows, rows + 1, 9, 2**40, -1]))
        shape = draw(st.sampled_from([[n], [n, 1], [n, 2], [], [n, 1, 1]]))
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        count = draw(st.integers(0, 4))
        if datatype == "BYTES":
            source = RECORD_TEXT if name == "records" else ELEMENT_TEXT
            lie = draw(st.integers(-1, 1))
            _add_bytes(request, tensor, draw(_exactly(source, count)), raw, lie)
        else:
            _add_numbers(request, tensor, draw(_exactly(NUMBERS, count)), raw)
    return request


def _exactly(elements: st.SearchStrategy[Any], count: int) -> st.SearchStrategy[list[Any]]:
    return st.lists(elements, min_size=count, max_size=count)


@FUZZ
@given(named_requests())
def test_named_inputs_decode_to_featurized_rows_or_invalid_argument(
    request: pb.ModelInferRequest,
) -> None:
    try:
        feeds = decode_inputs(request, NAMED, 8)
        NAMED.check(feeds, [])  # what the engine asks next (the model's own tensors' shapes)
    except InvalidArgument:
        return
    dense = feeds["features"]
    assert dense.dtype == np.float32 and dense.ndim == 2 and dense.shape[1] == 2
    assert not np.isinf(dense).any()  # finite, or NaN for missing
    if "sparse" in feeds:
        ids = feeds["sparse"]
        assert ids.dtype == np.int64 and ids.shape == (dense.shape[0], 3)
        assert ((ids >= 0) & (ids < 64)).all()


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), 0.5])
def test_a_categorical_float_column_that_is_not_whole_is_invalid(value: float) -> None:
    """Found by the fuzz test above: infinity crashed the whole-number check (int(inf))."""
    request = pb.ModelInferRequest(model_name="m")
    for name, values in (("age", [0.0, 0.0]), ("city", [0.0, value])):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=[2])
        tensor.contents.fp32_contents.extend(values)
    with pytest.raises(InvalidArgument, match="categorical"):
        decode_inputs(request, NAMED, 8)


@FUZZ
@given(named_requests())
def test_a_whole_named_request_ends_in_scores_or_invalid_argument(
    request: pb.ModelInferRequest,
) -> None:
    context = AbortingContext()
    try:
        response = NAMED_SERVICER.ModelInfer(request, context)
    except grpc.RpcError:
        assert context.code == grpc.StatusCode.INVALID_ARGUMENT
        return
    assert response.model_version == "1" and len(response.raw_output_contents) == 1


# --- registry uploads -------------------------------------------------------------------------

GOOD_ONNX = linear_model(np.ones(3))
UPLOAD_ERRORS = (InvalidArgument, IntegrityError, ResourceExhausted, NotFound, Conflict)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("fuzz-registry")
    reg = Registry(
        Store(root / "db"), LocalArtifactStore(root / "artifacts"), max_artifact_bytes=64
    )
    reg.create_model("m")
    return reg


payloads = st.one_of(
    st.binary(max_size=100),
    st.integers(0, len(GOOD_ONNX)).map(lambda n: GOOD_ONNX[:n]),  # truncated ONNX
)


@st.composite
def uploads(draw: st.DrawFn) -> tuple[str, list[bytes], str, int]:
    data = draw(payloads)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=5)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    honest = hashlib.sha256(data).hexdigest()
    sha = draw(
        st.one_of(
            st.just(honest),
            st.text("0123456789abcdef", min_size=64, max_size=64),
            st.text(max_size=70),
        )
    )
    size = draw(st.one_of(st.just(len(data)), st.integers(-5, 200), INT64))
    model = draw(st.sampled_from(["m", "m", "ghost"]))
    return model, chunks, sha, size


@FUZZ
@given(uploads())
def test_uploads_store_exactly_what_was_sent_or_give_a_domain_error(
    registry: Registry, upload: tuple[str, list[bytes], str, int]
) -> None:
    model, chunks, sha, size = upload
    try:
        version = registry.register_version(model, iter(chunks), sha, size)
    except UPLOAD_ERRORS:
        return
    data = b"".join(chunks)
    assert len(data) <= 64 and (version.sha256, version.size_bytes) == (sha, len(data))
    _, handle = registry.open_artifact(VersionRef("m", version.version))
    with handle:
        assert handle.read() == data


@st.composite
def upload_streams(draw: st.DrawFn) -> list[registry_pb2.RegisterVersionRequest]:
    model, chunks, sha, size = draw(uploads())
    header = registry_pb2.RegisterVersionHeader(
        model=model, sha256=sha[:64] if sha.isascii() else "", size_bytes=max(size, 0)
    )
    parts = [registry_pb2.RegisterVersionRequest(chunk=c) for c in chunks]
    for _ in range(draw(st.integers(0, 2))):
        parts.insert(
            draw(st.integers(0, len(parts))), registry_pb2.RegisterVersionRequest(header=header)
        )
    return parts


@FUZZ
@given(upload_streams())
def test_register_version_streams_end_in_a_version_or_a_mapped_status(
    registry: Registry, parts: list[registry_pb2.RegisterVersionRequest]
) -> None:
    context = AbortingContext()
    try:
        reply = RegistryServicer(registry).RegisterVersion(iter(parts), context)
    except grpc.RpcError:
        assert context.code in {
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.DATA_LOSS,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.FAILED_PRECONDITION,
        }
        return
    assert reply.version > 0


@settings(max_examples=60, deadline=None)
@given(payloads)
def test_bad_onnx_bytes_are_refused_as_invalid_not_crashed_on(data: bytes) -> None:
    try:
        model = LoadedModel("m", 1, data, device="cpu")
    except InvalidArgument:
        return
    assert model.inputs and model.outputs

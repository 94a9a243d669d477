"""Named inputs without a network: columns and records become exactly the featurizer's rows."""

from __future__ import annotations

import json
import math
from typing import Any

import grpc
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference import grpc_service_pb2 as pb
from services.inference.engine import Engine
from services.inference.model import LoadedModel
from services.inference.named import RECORDS
from services.inference.repository import Repository
from services.inference.servicer import FEATURE_SCHEMA, InferenceServicer
from services.inference.tensors import decode_inputs
from shared.errors import InvalidArgument
from shared.features import FeatureSpace, Featurizer
from shared.onnx_models import INPUT, OUTPUT, linear_model
from streamlearn.v1 import stream_pb2

NUMERIC = ("age", "income")
CATEGORICAL = ("city", "device")
BUCKETS = 64
MAX_ROWS = 8
W = np.array([0.5, -0.25], np.float32)
V = np.array([0.01, -0.02, 0.03], np.float32)


def definition(revision: int = 3) -> stream_pb2.StreamDefinition:
    d = stream_pb2.StreamDefinition(
        name="clicks", dense_dim=len(NUMERIC), sparse_buckets=BUCKETS, revision=revision
    )
    d.features.numeric.extend(NUMERIC)
    d.features.categorical.extend(CATEGORICAL)
    d.features.crosses.add(left="city", right="device")
    return d


def named_graph(dense: int = 2, slots: int = 3) -> bytes:
    """score = clean(features) @ W + float(sparse) @ V, NaN imputed as 0 as trained graphs do."""
    nodes = [
        helper.make_node("IsNaN", [INPUT], ["nan"]),
        helper.make_node("Where", ["nan", "zero", INPUT], ["clean"]),
        helper.make_node("MatMul", ["clean", "w"], ["dense_score"]),
        helper.make_node("Cast", ["sparse"], ["ids"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["ids", "v"], ["sparse_score"]),
        helper.make_node("Add", ["dense_score", "sparse_score"], [OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        "named",
        [
            helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", dense]),
            helper.make_tensor_value_info("sparse", TensorProto.INT64, ["batch", slots]),
        ],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
            numpy_helper.from_array(W[:dense].reshape(-1, 1), "w"),
            numpy_helper.from_array(V[:slots].reshape(-1, 1), "v"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def named_model(version: int = 1) -> LoadedModel:
    return LoadedModel("m", version, named_graph(), device="cpu", definition=definition())


MODEL = named_model()
FEATURIZER = Featurizer(FeatureSpace.from_definition(definition()))  # type: ignore[arg-type]


def expected_scores(records: list[dict[str, Any]]) -> np.ndarray:
    dense, ids = FEATURIZER.rows(records)
    clean = np.where(np.isnan(dense), 0, dense)
    return clean @ W.reshape(-1, 1) + ids.astype(np.float32) @ V.reshape(-1, 1)


def length_prefixed(elements: list[bytes]) -> bytes:
    return b"".join(len(e).to_bytes(4, "little") + e for e in elements)


def add_column(
    request: pb.ModelInferRequest, name: str, values: Any, datatype: str, shape: list[int]
) -> None:
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    if datatype == "BYTES":
        request.raw_input_contents.append(length_prefixed(list(values)))
    else:
        request.raw_input_contents.append(np.ascontiguousarray(values).tobytes())


def records_request(records: list[Any], raw: bool = True) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    encoded = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in records]
    tensor = request.inputs.add(name=RECORDS, datatype="BYTES", shape=[len(encoded)])
    if raw:
        request.raw_input_contents.append(length_prefixed(encoded))
    else:
        tensor.contents.bytes_contents.extend(encoded)
    return request


ROWS: list[dict[str, Any]] = [
    {"age": 31.0, "income": 1200.5, "city": "paris", "device": "ios"},
    {"age": 45.0, "city": "oslo", "device": "7"},  # income missing
    {"income": -3.0, "device": "web"},  # age and city missing: the cross too
]
# What `columns_request` sends: ROWS without the city column.
WITHOUT_CITY = [{k: v for k, v in r.items() if k != "city"} for r in ROWS]


def columns_request() -> pb.ModelInferRequest:
    """WITHOUT_CITY as one column per field: FP64, FP32 with NaN, BYTES, BYTES with numbers."""
    request = pb.ModelInferRequest(model_name="m")
    add_column(request, "age", np.array([31, 45, math.nan]), "FP64", [3])
    add_column(
        request, "income", np.array([[1200.5], [math.nan], [-3]], np.float32), "FP32", [3, 1]
    )
    add_column(request, "device", [b"ios", b"7", b"web"], "BYTES", [3])
    return request


def test_columns_and_records_feed_exactly_what_the_featurizer_makes() -> None:
    with_city = [dict(r) for r in ROWS]
    request = columns_request()
    add_column(request, "city", [b"paris", b"oslo", b"lyon"], "BYTES", [3])
    with_city[2]["city"] = "lyon"
    dense, ids = FEATURIZER.rows(with_city)
    for sent in (request, records_request(with_city), records_request(with_city, raw=False)):
        feeds = decode_inputs(sent, MODEL, MAX_ROWS)
        assert sorted(feeds) == [INPUT, "sparse"]
        np.testing.assert_array_equal(feeds[INPUT], dense)  # NaN where missing
        np.testing.assert_array_equal(feeds["sparse"], ids)
    assert np.isnan(dense[1, 1]) and ids[2].tolist()[0] != 0


def test_an_omitted_field_is_missing_in_every_row() -> None:
    feeds = decode_inputs(columns_request(), MODEL, MAX_ROWS)
    assert (feeds["sparse"][:, 0] == 0).all() and (feeds["sparse"][:, 2] == 0).all()
    np.testing.assert_array_equal(feeds["sparse"], FEATURIZER.rows(WITHOUT_CITY)[1])


def test_numbers_and_their_text_are_one_category_and_text_parses_for_numeric_fields() -> None:
    request = pb.ModelInferRequest(model_name="m")
    add_column(request, "device", np.array([7, 8], np.int64), "INT64", [2])
    add_column(request, "age", [b"31.5", b"nan"], "BYTES", [2])
    add_column(request, "city", np.array([True, False]), "BOOL", [2])
    feeds = decode_inputs(request, MODEL, MAX_ROWS)
    dense, ids = FEATURIZER.rows(
        [{"device": "7", "age": 31.5, "city": "true"}, {"device": 8.0, "city": False}]
    )
    np.testing.assert_array_equal(feeds[INPUT], dense)
    np.testing.assert_array_equal(feeds["sparse"], ids)


def test_the_numeric_inputs_still_serve_a_named_version() -> None:
    request = pb.ModelInferRequest(model_name="m")
    add_column(request, INPUT, np.ones((2, 2), np.float32), "FP32", [2, 2])
    add_column(request, "sparse", np.array([[1, 2, 3], [0, 0, 0]], np.int64), "INT64", [2, 3])
    feeds = decode_inputs(request, MODEL, MAX_ROWS)
    assert feeds[INPUT].shape == (2, 2) and feeds["sparse"].tolist()[0] == [1, 2, 3]


def too_many_rows() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    add_column(request, "age", np.zeros(MAX_ROWS + 1), "FP64", [MAX_ROWS + 1])
    return request


def mixed_lengths() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    add_column(request, "age", np.zeros(2), "FP64", [2])
    add_column(request, "city", [b"a", b"b", b"c"], "BYTES", [3])
    return request


def column(name: str, values: Any, datatype: str, shape: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    add_column(request, name, values, datatype, shape)
    return request


def with_features(request: pb.ModelInferRequest) -> pb.ModelInferRequest:
    add_column(request, INPUT, np.ones((1, 2), np.float32), "FP32", [1, 2])
    return request


def bad_framing() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="city", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(length_prefixed([b"a"]) + b"\x09\0\0\0ab")
    return request


BAD: list[tuple[str, pb.ModelInferRequest, str]] = [
    ("unknown field", column("colour", [b"red"], "BYTES", [1]), "unknown input 'colour'"),
    ("unknown in a record", records_request([{"colour": "red"}]), "unknown feature 'colour'"),
    ("text for a number", column("age", [b"old"], "BYTES", [1]), "'old' is not a number"),
    ("infinity", column("age", np.array([math.inf]), "FP64", [1]), "not a finite"),
    ("object for a number", records_request([{"age": {"x": 1}}]), "numeric, got"),
    ("list for a category", records_request([{"city": ["a"]}]), "not text or a number"),
    ("unparsable JSON", records_request([b"{'age': 1"]), "records[0] is not valid JSON"),
    ("JSON NaN", records_request([b'{"age": NaN}']), "not JSON (send null"),
    ("not an object", records_request([[1, 2]]), "records[0] is a JSON list"),
    ("deep nesting", records_request([b"[" * 100_000]), "not valid JSON"),
    ("huge integer", records_request([b'{"age": 1' + b"0" * 400 + b"}"]), "not a finite float32"),
    ("not UTF-8", column("city", [b"\xff"], "BYTES", [1]), "not UTF-8"),
    ("mismatched rows", mixed_lengths(), "different row counts"),
    ("too many rows", too_many_rows(), f"at most {MAX_ROWS} per request"),
    ("matrix column", column("age", np.zeros((2, 2)), "FP64", [2, 2]), "expected [N] or [N, 1]"),
    ("records as numbers", column(RECORDS, np.zeros(1), "FP64", [1]), "expected BYTES"),
    ("FP16 column", column("age", np.zeros(1, np.float16), "FP16", [1]), "expected FP32"),
    ("mixed with the tensor", with_features(columns_request()), "not both"),
    ("records with columns", with_features(records_request([{}])), "not both"),
    ("bad BYTES framing", bad_framing(), "length-prefixed"),
    ("short raw", column("age", np.zeros(1), "FP64", [2]), "bytes for shape"),
    (
        "fractional category",
        column("city", np.array([0.1], np.float32), "FP32", [1]),
        "is categorical",
    ),
]


@pytest.mark.parametrize(("request_", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_named_inputs_are_invalid_arguments_that_say_why(
    request_: pb.ModelInferRequest, message: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        decode_inputs(request_, MODEL, MAX_ROWS)
    assert message in str(raised.value)


def test_records_beside_fields_are_refused() -> None:
    request = records_request([{"age": 1}])
    add_column(request, "age", np.zeros(1), "FP64", [1])
    with pytest.raises(InvalidArgument, match="'records' comes alone"):
        decode_inputs(request, MODEL, MAX_ROWS)


def test_a_version_without_a_schema_takes_no_named_inputs() -> None:
    plain = LoadedModel("m", 1, linear_model(W), device="cpu")
    assert plain.named is None
    with pytest.raises(InvalidArgument, match="no input 'age'"):
        decode_inputs(column("age", np.zeros(1), "FP64", [1]), plain, MAX_ROWS)


@pytest.mark.parametrize(
    ("graph", "revision"),
    [(named_graph(dense=2, slots=2), 1), (linear_model(W), 2)],
    ids=["fewer sparse slots", "no sparse input"],
)
def test_a_graph_that_does_not_fit_its_definition_serves_without_named_inputs(
    graph: bytes, revision: int
) -> None:
    model = LoadedModel("m", 1, graph, device="cpu", definition=definition(revision))
    assert model.named is None


def test_a_positional_definition_gives_no_named_inputs() -> None:
    positional = stream_pb2.StreamDefinition(name="p", dense_dim=2)
    assert LoadedModel("m", 1, linear_model(W), device="cpu", definition=positional).named is None


class AbortingContext:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise grpc.RpcError(details)


def servicer(max_batch: int = MAX_ROWS, delay_s: float = 0.0) -> InferenceServicer:
    repository = Repository(["m"])
    repository.model("m").swap(MODEL)
    return InferenceServicer(Engine(repository, max_batch, delay_s), 1 << 20)


@pytest.mark.parametrize("delay_s", [0.0, 0.001], ids=["inline", "batched"])
def test_model_infer_scores_named_rows_as_the_featurized_rows(delay_s: float) -> None:
    records = [dict(r) for r in ROWS]
    reply = servicer(delay_s=delay_s).ModelInfer(records_request(records), AbortingContext())
    scores = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(3, 1)
    np.testing.assert_allclose(scores, expected_scores(records), rtol=1e-6)
    reply = servicer(delay_s=delay_s).ModelInfer(columns_request(), AbortingContext())
    scores = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(3, 1)
    np.testing.assert_allclose(scores, expected_scores(WITHOUT_CITY), rtol=1e-6)


def test_model_infer_refuses_bad_named_inputs_as_invalid_argument() -> None:
    context = AbortingContext()
    with pytest.raises(grpc.RpcError):
        servicer().ModelInfer(records_request([{"colour": "red"}]), context)
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "record 0: unknown feature 'colour'" in context.details


def test_metadata_lists_named_inputs_after_the_models_and_config_marks_them_optional() -> None:
    served = servicer()
    metadata = served.ModelMetadata(pb.ModelMetadataRequest(name="m"), AbortingContext())
    inputs = [(i.name, i.datatype, list(i.shape)) for i in metadata.inputs]
    assert inputs == [
        (INPUT, "FP32", [-1, 2]),
        ("sparse", "INT64", [-1, 3]),
        ("age", "FP32", [-1, 1]),
        ("income", "FP32", [-1, 1]),
        ("city", "BYTES", [-1, 1]),
        ("device", "BYTES", [-1, 1]),
        (RECORDS, "BYTES", [-1, 1]),
    ]
    config = served.ModelConfig(pb.ModelConfigRequest(name="m"), AbortingContext()).config
    assert [(i.name, list(i.dims), i.optional) for i in config.input][:3] == [
        (INPUT, [2], True),
        ("sparse", [3], True),
        ("age", [1], True),
    ]
    assert config.input[-1].name == RECORDS and config.input[-1].data_type == 13  # TYPE_STRING
    schema = json.loads(config.parameters[FEATURE_SCHEMA].string_value)
    assert schema["numeric"] == list(NUMERIC) and schema["revision"] == 3


def test_a_field_named_like_a_model_input_is_reachable_only_as_a_record() -> None:
    d = definition()
    d.features.numeric[1] = "sparse"
    model = LoadedModel("m", 1, named_graph(), device="cpu", definition=d)
    assert model.named is not None
    assert "sparse" not in [n.name for n in model.named.tensors()]
    feeds = decode_inputs(records_request([{"sparse": 2.5, "age": 1}]), model, MAX_ROWS)
    assert feeds[INPUT].tolist() == [[1.0, 2.5]]

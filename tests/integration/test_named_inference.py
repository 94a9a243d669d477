"""Named inputs end to end: a version the trainer's own classes learned on named rows, served
from the registry and scored by the unmodified tritonclient as torch scores the same events.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as triton

from services.inference import app as inference_app
from services.inference.settings import InferenceSettings
from services.registry.settings import RegistrySettings
from services.trainer.config import TrainerConfig
from services.trainer.export import OnnxExporter
from services.trainer.learner import Batch, Learner
from shared.clients.registry import RegistryClient
from shared.errors import InvalidArgument
from shared.features import FeatureSpace, Featurizer
from shared.onnx_models import INPUT, OUTPUT
from streamlearn.client import InferenceClient
from streamlearn.v1 import registry_pb2, stream_pb2
from tests.helpers import wait_until
from tests.integration.conftest import Running

MODEL = "clicks"
CITIES = ["paris", "oslo", "lyon", "rome"]
DEVICES = ["ios", "android", "web", 7]  # 7: a number as a category, "7" on the wire


def definition() -> stream_pb2.StreamDefinition:
    d = stream_pb2.StreamDefinition(name=MODEL, dense_dim=2, sparse_buckets=64, revision=2)
    d.label_kind = stream_pb2.LABEL_KIND_BINARY
    d.features.numeric.extend(["age", "income"])
    d.features.categorical.extend(["city", "device"])
    d.features.crosses.add(left="city", right="device")
    return d


FEATURIZER = Featurizer(FeatureSpace.from_definition(definition()))  # type: ignore[arg-type]


def events(count: int, seed: int) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Named rows with values missing now and then, and labels that depend on them."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for i in range(count):
        city, device = CITIES[rng.integers(4)], DEVICES[rng.integers(4)]
        age, income = float(rng.normal(40, 10)), float(rng.normal(0, 1))
        row: dict[str, Any] = {"age": age, "income": income, "city": city, "device": device}
        if i % 5 == 1:
            row["income"] = None
        if i % 7 == 2:
            del row["city"]
        if i % 11 == 3:
            row["age"] = None
        rows.append(row)
        labels.append(float(city == "paris" or (income > 0.5 and device == "web")))
    return rows, np.array(labels, np.float32)


def batch(rows: list[dict[str, Any]], labels: np.ndarray) -> Batch:
    dense, ids = FEATURIZER.rows(rows)
    return Batch(
        torch.from_numpy(dense), torch.from_numpy(labels), sparse=torch.from_numpy(ids), named=True
    )


@pytest.fixture(scope="module")
def learner() -> Learner:
    config = TrainerConfig.model_validate(
        {"model": {"kind": "embedding_bag", "features": 2, "sparse_buckets": 64}}
    )
    learned = Learner(config, device="cpu")
    learned.learn(batch(*events(400, seed=1)))
    return learned


@pytest.fixture
def served(
    learner: Learner,
    registry_service: Running,
    registry_client: RegistryClient,
    registry_settings: RegistrySettings,
) -> Iterator[Running]:
    probe = batch(*events(32, seed=2)).finite_rows(16)
    artifact = OnnxExporter(learner, probe).export()
    registry_client.create_model(MODEL)
    lineage = registry_pb2.Lineage(stream=MODEL, stream_definition=definition())
    version = registry_client.register(MODEL, artifact, lineage=lineage).version
    registry_client.set_alias(MODEL, "production", version)
    assert registry_client.get_version(MODEL, version).lineage.stream_definition == definition()
    service = Running(
        InferenceSettings(
            grpc_port=0,
            metrics_port=0,
            registry_address=registry_service.address,
            kafka=registry_settings.kafka,
            topics=registry_settings.topics,
            model_names=[MODEL],
            resync_s=60.0,
            drain_delay_s=0.05,
        ),
        inference_app.build,
        inference_app.run,
    )
    client = triton.InferenceServerClient(url=service.address)
    wait_until(lambda: client.is_server_ready())
    yield service
    service.close()


def columns(rows: list[dict[str, Any]]) -> list[triton.InferInput]:
    """Age FP64 [N], income FP32 [N, 1] (NaN: missing), city and device BYTES [N].

    A categorical column is sent when the rows carry that field, left out when none does.
    """
    n = len(rows)

    def number(name: str) -> np.ndarray:
        return np.array([math.nan if r.get(name) is None else r[name] for r in rows])

    age = triton.InferInput("age", [n], "FP64")
    age.set_data_from_numpy(number("age"))
    income = triton.InferInput("income", [n, 1], "FP32")
    income.set_data_from_numpy(number("income").astype(np.float32).reshape(n, 1))
    tensors = [age, income]
    for name in ("city", "device"):
        if any(name in r for r in rows):
            assert all(name in r for r in rows), "columns carry a value in every row"
            tensor = triton.InferInput(name, [n], "BYTES")
            tensor.set_data_from_numpy(np.array([str(r[name]).encode() for r in rows], object))
            tensors.append(tensor)
    return tensors


def records(rows: list[dict[str, Any]]) -> triton.InferInput:
    tensor = triton.InferInput("records", [len(rows)], "BYTES")
    tensor.set_data_from_numpy(np.array([json.dumps(r).encode() for r in rows], object))
    return tensor


def torch_scores(learner: Learner, rows: list[dict[str, Any]]) -> np.ndarray:
    return learner.predict(batch(rows, np.zeros(len(rows), np.float32)))


def test_tritonclient_named_columns_and_records_score_as_torch(
    served: Running, learner: Learner
) -> None:
    client = triton.InferenceServerClient(url=served.address)
    rows, _ = events(40, seed=3)
    for start in range(0, len(rows), 8):  # max_batch_size 64; several requests, as clients do
        chunk = rows[start : start + 8]
        expected = torch_scores(learner, chunk)
        answer = client.infer(MODEL, [records(chunk)]).as_numpy(OUTPUT)
        np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)
    with_city = [r for r in rows if "city" in r][:10]
    assert any(r["income"] is None for r in with_city) and any(r["age"] is None for r in with_city)
    answer = client.infer(MODEL, columns(with_city)).as_numpy(OUTPUT)
    np.testing.assert_allclose(answer, torch_scores(learner, with_city), rtol=1e-5, atol=1e-6)
    no_city = [{k: v for k, v in r.items() if k != "city"} for r in with_city]
    answer = client.infer(MODEL, columns(no_city)).as_numpy(OUTPUT)
    np.testing.assert_allclose(answer, torch_scores(learner, no_city), rtol=1e-5, atol=1e-6)
    # The numeric inputs still serve the same version, with the same scores.
    dense, ids = FEATURIZER.rows(with_city)
    numeric = [triton.InferInput(INPUT, list(dense.shape), "FP32")]
    numeric[0].set_data_from_numpy(dense)
    numeric.append(triton.InferInput("sparse", list(ids.shape), "INT64"))
    numeric[1].set_data_from_numpy(ids)
    answer = client.infer(MODEL, numeric).as_numpy(OUTPUT)
    np.testing.assert_allclose(answer, torch_scores(learner, with_city), rtol=1e-5, atol=1e-6)


def test_tritonclient_discovers_the_named_inputs(served: Running) -> None:
    client = triton.InferenceServerClient(url=served.address)
    metadata = client.get_model_metadata(MODEL)
    listed = [(i.name, i.datatype) for i in metadata.inputs]
    assert listed[:2] == [(INPUT, "FP32"), ("sparse", "INT64")]
    assert listed[2:] == [
        ("age", "FP32"),
        ("income", "FP32"),
        ("city", "BYTES"),
        ("device", "BYTES"),
        ("records", "BYTES"),
    ]
    config = client.get_model_config(MODEL).config
    assert all(i.optional for i in config.input)
    schema = json.loads(config.parameters["feature_schema"].string_value)
    assert (schema["categorical"], schema["revision"]) == (["city", "device"], 2)


def test_bad_named_requests_are_invalid_arguments(served: Running) -> None:
    client = triton.InferenceServerClient(url=served.address)
    unknown = triton.InferInput("colour", [1], "BYTES")
    unknown.set_data_from_numpy(np.array([b"red"], object))
    text_age = triton.InferInput("age", [1], "BYTES")
    text_age.set_data_from_numpy(np.array([b"old"], object))
    short = triton.InferInput("income", [2], "FP32")
    short.set_data_from_numpy(np.zeros(2, np.float32))
    one_age = triton.InferInput("age", [1], "FP64")
    one_age.set_data_from_numpy(np.zeros(1))
    broken = triton.InferInput("records", [1], "BYTES")
    broken.set_data_from_numpy(np.array([b'{"age": '], object))
    cases = [
        ([unknown], "unknown input 'colour'"),
        ([text_age], "'old' is not a number"),
        ([short, one_age], "different row counts"),
        ([broken], "records[0] is not valid JSON"),
        ([records([{"age": 1, "colour": "red"}])], "unknown feature 'colour'"),
        ([records([{"age": 1}] * 65)], "at most 64 per request"),
    ]
    for tensors, text in cases:
        with pytest.raises(triton.InferenceServerException) as raised:
            client.infer(MODEL, tensors)
        assert raised.value.status() == "StatusCode.INVALID_ARGUMENT", text
        assert text in raised.value.message()
    assert client.is_server_ready()


def test_the_sdk_client_predicts_named_records(served: Running, learner: Learner) -> None:
    rows, _ = events(6, seed=4)
    with InferenceClient(served.address) as client:
        scores, version = client.predict(MODEL, records=rows)
        assert version == 1
        np.testing.assert_allclose(scores, torch_scores(learner, rows), rtol=1e-5, atol=1e-6)
        nan_income = [dict(rows[0], income=math.nan)]  # NaN travels as null: missing
        missing = [{k: v for k, v in rows[0].items() if k != "income"}]
        np.testing.assert_allclose(
            client.predict(MODEL, records=nan_income)[0],
            torch_scores(learner, missing),
            rtol=1e-5,
            atol=1e-6,
        )
        with pytest.raises(InvalidArgument, match="unknown feature 'colour'"):
            client.predict(MODEL, records=[{"colour": "red"}])
        with pytest.raises(InvalidArgument, match="either features or records"):
            client.predict(MODEL)

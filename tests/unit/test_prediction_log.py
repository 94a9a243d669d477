"""The prediction log: rows as served reach the sink; it never blocks or fails a request."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import REGISTRY

from inference import grpc_service_pb2 as pb
from services.inference.engine import Engine
from services.inference.model import LoadedModel
from services.inference.prediction_log import EVENT_ID, PredictionLog, kafka_sink
from services.inference.repository import Repository
from services.inference.servicer import InferenceServicer
from shared.fakes import FakeBroker, FakeProducer
from shared.feedback import PredictionRecord, decode_prediction
from shared.onnx_models import linear_model
from tests.unit.test_named_inference import FEATURIZER, ROWS, named_model, records_request

W = np.linspace(-1, 1, 4).astype(np.float32)
X = np.array([[0.5, -1.0, 2.0, 0.0], [1.5, 0.25, -0.5, 3.0]], np.float32)


class ListSink:
    """Collects what the writer hands over; optionally waits on a gate or fails first."""

    def __init__(self, gate: threading.Event | None = None, failures: int = 0) -> None:
        self.records: list[PredictionRecord] = []
        self.gate = gate
        self.failures = failures
        self.calls = 0
        self.entered = threading.Event()

    def __call__(self, records: Sequence[PredictionRecord]) -> None:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise RuntimeError("sink down")
        self.records += records


def positional(version: int = 4) -> LoadedModel:
    return LoadedModel("m", version, linear_model(W, 0.1), device="cpu")


def servicer(model: LoadedModel, plog: PredictionLog | None) -> InferenceServicer:
    repository = Repository(["m"])
    repository.model("m").swap(model)
    return InferenceServicer(Engine(repository, 64, 0.0), 1 << 20, plog)


def request(x: np.ndarray = X, request_id: str = "r-1") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m", id=request_id)
    req.inputs.add(name="features", datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    return req


def dropped(cause: str) -> float:
    labels = {"model": "m", "cause": cause}
    return (
        REGISTRY.get_sample_value("streamlearn_inference_prediction_log_dropped_total", labels)
        or 0.0
    )


def test_each_row_is_logged_with_its_features_outputs_and_version() -> None:
    sink = ListSink()
    plog = PredictionLog(sink, streams={"m": "clicks"})
    reply = servicer(positional(), plog).ModelInfer(request(), None)
    assert reply.parameters[EVENT_ID].string_param == "r-1" and reply.id == "r-1"
    assert plog.drain() == 2
    scores = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(2, -1)
    first, second = sink.records
    assert (first.event_id, second.event_id) == ("r-1/0", "r-1/1")
    for record, row, score in zip(sink.records, X, scores, strict=True):
        assert (record.stream, record.model, record.version) == ("clicks", "m", 4)
        assert record.dense == tuple(row.tolist()) and record.sparse_ids == ()
        assert record.outputs == ((reply.outputs[0].name, tuple(score.tolist())),)
        assert record.timestamp_ms > 0


def test_a_request_without_an_id_gets_one_and_its_one_row_keeps_it() -> None:
    sink = ListSink()
    plog = PredictionLog(sink)
    reply = servicer(positional(), plog).ModelInfer(request(X[:1], request_id=""), None)
    event_id = reply.parameters[EVENT_ID].string_param
    assert len(event_id) == 32 and reply.id == ""
    plog.drain()
    [record] = sink.records
    assert record.event_id == event_id and record.stream == "m"  # stream: the model's name


def test_named_requests_log_the_featurized_rows() -> None:
    sink = ListSink()
    plog = PredictionLog(sink)
    served = servicer(named_model(version=2), plog)
    served.ModelInfer(records_request([dict(r) for r in ROWS]), None)
    plog.drain()
    dense, ids = FEATURIZER.rows([dict(r) for r in ROWS])
    assert len(sink.records) == len(ROWS)
    for record, want_dense, want_ids in zip(sink.records, dense, ids, strict=True):
        assert record.version == 2 and record.sparse_ids == tuple(want_ids.tolist())
        for got, want in zip(record.dense, want_dense.tolist(), strict=True):
            assert got == want or (math.isnan(got) and math.isnan(want))  # missing stays NaN


def test_logging_off_changes_nothing() -> None:
    plain = servicer(positional(), None).ModelInfer(request(), None)
    sink = ListSink()
    elsewhere = PredictionLog(sink, models=["other"])
    reply = servicer(positional(), elsewhere).ModelInfer(request(), None)
    assert EVENT_ID not in reply.parameters and not plain.parameters
    assert reply.SerializeToString() == plain.SerializeToString()
    assert elsewhere.drain() == 0 and sink.records == []


def test_a_slow_sink_costs_drops_counted_never_a_blocked_request() -> None:
    gate = threading.Event()
    sink = ListSink(gate)
    plog = PredictionLog(sink, max_queue=2, max_batch=1)
    served = servicer(positional(), plog)
    before = dropped("queue_full")
    plog.start()
    try:
        served.ModelInfer(request(X[:1], "first"), None)
        assert sink.entered.wait(10)  # the writer holds "first" and waits on the gate
        answered: list[Any] = []

        def send() -> None:
            answered.extend(served.ModelInfer(request(X[:1], f"r{i}"), None) for i in range(10))

        sender = threading.Thread(target=send)
        sender.start()
        sender.join(30)  # a liveness bound, not a speed figure: a blocked put never returns
        assert not sender.is_alive() and len(answered) == 10
        assert dropped("queue_full") - before == 8  # two fit the queue, eight were dropped
    finally:
        gate.set()
        plog.close()
    assert [r.event_id for r in sink.records] == ["first", "r0", "r1"]


def test_a_failing_sink_drops_counts_and_the_writer_carries_on() -> None:
    sink = ListSink(failures=1)
    plog = PredictionLog(sink, max_batch=1)
    served = servicer(positional(), plog)
    before = dropped("sink_failed")
    served.ModelInfer(request(X[:1], "lost"), None)
    served.ModelInfer(request(X[:1], "kept"), None)
    assert plog.drain() == 1
    assert [r.event_id for r in sink.records] == ["kept"]
    assert dropped("sink_failed") - before == 1


def test_an_unloggable_request_is_still_answered_and_counted() -> None:
    sink = ListSink()
    plog = PredictionLog(sink)
    before = dropped("unloggable")
    reply = servicer(positional(), plog).ModelInfer(request(X[:1], "x" * 300), None)
    assert reply.outputs and reply.parameters[EVENT_ID].string_param == "x" * 300
    assert plog.drain() == 0 and dropped("unloggable") - before == 1


def test_the_kafka_sink_writes_one_record_per_row_keyed_by_event_id() -> None:
    broker = FakeBroker()
    broker.create_topic("predictions", partitions=3)
    plog = PredictionLog(kafka_sink(FakeProducer(broker), "predictions"))  # type: ignore[arg-type]
    servicer(positional(), plog).ModelInfer(request(), None)
    plog.drain()
    messages = broker.records("predictions")
    assert sorted(m.key() for m in messages) == [b"r-1/0", b"r-1/1"]  # type: ignore[type-var]
    for message in messages:
        record = decode_prediction(message.value() or b"")
        assert record.event_id.encode() == message.key() and record.model == "m"

"""The prediction log's Kafka sink counts what the broker never acknowledged."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.inference.prediction_log import kafka_sink
from services.inference.settings import InferenceSettings
from shared.fakes import FakeBroker, FakeProducer
from shared.feedback import PredictionRecord, decode_prediction
from shared.settings import TopicSettings


def record(event_id: str, model: str = "sink-m") -> PredictionRecord:
    return PredictionRecord(
        event_id=event_id,
        stream="clicks",
        model=model,
        version=3,
        dense=(0.5, -1.0),
        sparse_ids=(7,),
        outputs=(("probability", (0.25,)),),
        timestamp_ms=1_700_000_000_000,
    )


def dropped(cause: str, model: str = "sink-m") -> float:
    labels = {"model": model, "cause": cause}
    value = REGISTRY.get_sample_value("streamlearn_inference_prediction_log_dropped_total", labels)
    return value or 0.0


class FullProducer:
    """A producer whose local queue is always full."""

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        raise BufferError("queue full")

    def poll(self, timeout: float = -1) -> int:
        return 0


def test_acknowledged_records_are_written_and_not_counted_as_dropped() -> None:
    broker = FakeBroker()
    broker.create_topic("predictions", partitions=3)
    before = dropped("delivery_failed")
    sink = kafka_sink(FakeProducer(broker), "predictions")  # type: ignore[arg-type]
    sink([record("a"), record("b")])
    messages = broker.records("predictions")
    assert sorted(m.key() or b"" for m in messages) == [b"a", b"b"]
    assert decode_prediction(messages[0].value() or b"") in (record("a"), record("b"))
    assert dropped("delivery_failed") == before


def test_a_failed_delivery_is_counted_with_its_own_cause_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = FakeProducer(FakeBroker())  # no such topic: every delivery report fails
    failed, full = dropped("delivery_failed"), dropped("producer_full")
    other = dropped("delivery_failed", "sink-other")
    sink = kafka_sink(producer, "missing")  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, "services.inference.prediction_log"):
        sink([record("a"), record("b"), record("c", model="sink-other")])
        sink([record("d")])
    assert dropped("delivery_failed") - failed == 3
    assert dropped("delivery_failed", "sink-other") - other == 1
    assert dropped("producer_full") == full  # a cause of its own
    warnings = [r for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(warnings) == 1  # one line per run of failures, not one per record


def test_a_full_local_queue_is_counted_apart_from_failed_deliveries() -> None:
    failed, full = dropped("delivery_failed"), dropped("producer_full")
    sink = kafka_sink(FullProducer(), "predictions")  # type: ignore[arg-type]
    sink([record("a"), record("b")])
    assert dropped("producer_full") - full == 2
    assert dropped("delivery_failed") == failed


def test_the_prediction_log_topic_is_the_topic_setting() -> None:
    settings = InferenceSettings(topics=TopicSettings(predictions="acme.predictions"))
    assert settings.topics.predictions == "acme.predictions"
    assert "prediction_log_topic" not in InferenceSettings.model_fields

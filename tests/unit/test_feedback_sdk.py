"""`SampleProducer.feedback`: labels of every kind, and refusals before anything is queued."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from shared.errors import InvalidArgument
from shared.feedback import Feedback, FeedbackProblem, Label, decode_feedback
from streamlearn.client import producer as sdk_module
from streamlearn.client.producer import SampleProducer, feedback_label

Sent = list[tuple[str, bytes, bytes | None]]  # topic, value, key


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """What the SDK hands to its Kafka producer (the broker's side is the integration test)."""
    records: Sent = []

    def record(_producer: object, topic: str, value: bytes, key: bytes | None, **_: Any) -> None:
        records.append((topic, value, key))

    monkeypatch.setattr(sdk_module, "produce", record)
    return records


@pytest.fixture
def producer(sent: Sent) -> Iterator[SampleProducer]:
    yield SampleProducer("127.0.0.1:1", stream="clicks", feedback_topic="fb")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (1, Label.class_index(1)),
        (True, Label.class_index(1)),
        (np.int64(3), Label.class_index(3)),
        (2.5, Label.regression(2.5)),
        (np.float32(0.5), Label.regression(0.5)),
        ([0, 3], Label.multi_label([0, 3])),
        ((), Label.multi_label([])),
        (np.array([1, 2]), Label.multi_label([1, 2])),
        (Label.regression(-1.0), Label.regression(-1.0)),
    ],
)
def test_labels_of_each_kind(given: Any, expected: Label) -> None:
    assert feedback_label(given) == expected


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        (-1, "not in [0, 2**31)"),
        (2**31, "not in [0, 2**31)"),
        (math.nan, "not finite"),
        (math.inf, "not finite"),
        ([1, 1], "repeat"),
        ([1, -2], "not in [0, 2**31)"),
        ([1.5], "must be ints"),
        ([True], "must be ints"),
        ("1", "not str"),
        (None, "not NoneType"),
        ({"class": 1}, "not dict"),
    ],
)
def test_bad_labels_are_refused_with_a_clear_error(label: Any, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(reason)):
        feedback_label(label)


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"event_id": ""}, "missing_event_id"),
        ({"event_id": "e" * 257}, "oversized_name"),
        ({"stream": "s" * 257}, "oversized_name"),
        ({"weight": 0.0}, "invalid_weight"),
        ({"weight": -1.0}, "invalid_weight"),
        ({"weight": math.nan}, "invalid_weight"),
        ({"event_time": -5.0}, "invalid_time"),
        ({"event_time": 1e300}, "invalid_time"),
        ({"event_time": 0}, "missing_time"),
        ({"label": -3}, "label_out_of_range"),
        ({"label": math.nan}, "non_finite"),
    ],
)
def test_invalid_feedback_raises_its_reason_and_sends_nothing(
    producer: SampleProducer, sent: Sent, arguments: dict[str, Any], reason: str
) -> None:
    call: dict[str, Any] = {"event_id": "e-1", "label": 1} | arguments
    with pytest.raises(FeedbackProblem) as raised:
        producer.feedback(**call)
    assert raised.value.reason == reason
    assert sent == []


@pytest.mark.parametrize(
    "arguments",
    [
        {"event_id": 7},
        {"stream": b"clicks"},
        {"weight": "2"},
        {"weight": True},
        {"event_time": "yesterday"},
        {"event_time": math.nan},
        {"event_time": datetime(2024, 5, 1, 12, 0)},  # naive: which zone?
        {"label": "yes"},
    ],
)
def test_arguments_of_the_wrong_type_are_refused(
    producer: SampleProducer, sent: Sent, arguments: dict[str, Any]
) -> None:
    call: dict[str, Any] = {"event_id": "e-1", "label": 1} | arguments
    with pytest.raises(InvalidArgument):
        producer.feedback(**call)
    assert sent == []


def test_a_stream_is_needed_when_the_producer_has_no_default(sent: Sent) -> None:
    sdk = SampleProducer("127.0.0.1:1")
    with pytest.raises(FeedbackProblem) as raised:
        sdk.feedback("e-1", label=1)
    assert raised.value.reason == "missing_stream"
    assert sent == []


def test_valid_feedback_is_one_record_keyed_by_event_id(
    producer: SampleProducer, sent: Sent
) -> None:
    producer.feedback("e-1", label=1)  # the producer's stream, now, weight 1
    producer.feedback("e-2", "other", label=[0, 2], weight=2.0, event_time=1_700_000_000.5)
    aware = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    producer.feedback("e-3", label=0.25, event_time=aware)
    before = int(datetime.now(UTC).timestamp() * 1000)
    producer.feedback("e-4", label=0, event_time=datetime.now(UTC))
    assert [(topic, key) for topic, _, key in sent] == [
        ("fb", b"e-1"), ("fb", b"e-2"), ("fb", b"e-3"), ("fb", b"e-4")
    ]  # fmt: skip
    first, second, third, fourth = (decode_feedback(value) for _, value, _ in sent)
    assert (first.stream, first.label, first.weight) == ("clicks", Label.class_index(1), 1.0)
    assert second == Feedback("e-2", "other", Label.multi_label([0, 2]), 1_700_000_000_500, 2.0)
    assert third.label == Label.regression(0.25)
    assert third.event_time_ms == int(datetime(2024, 5, 1, 10, 0, tzinfo=UTC).timestamp() * 1000)
    assert before <= fourth.event_time_ms <= datetime.now(UTC).timestamp() * 1000 + 1

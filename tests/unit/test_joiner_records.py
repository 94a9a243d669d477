"""What the joiner writes: per-stream policies, label checks, and the records of its outputs."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from services.joiner.definitions import check_label, negative_label, policy_of
from services.joiner.exposition import JoinCollector
from services.joiner.metrics import JoinMetrics
from services.joiner.outputs import Duplicate, Expired, Joined, Late, Negative, Output, Unknown
from services.joiner.policy import StreamPolicy
from services.joiner.records import (
    FEEDBACK_TYPE,
    OVERSIZED,
    PREDICTION_TYPE,
    Source,
    Topics,
    records_of,
    undecodable,
    within,
)
from services.joiner.settings import JoinerSettings
from shared import samples
from shared.dead_letters import MIN_FIT_BYTES, record_size
from shared.errors import ConfigError, InvalidArgument
from shared.feedback import FeedbackProblem, Label, decode_feedback, decode_prediction
from shared.streams import check_definition
from streamlearn.v1 import sample_pb2, stream_pb2
from tests.unit.test_joiner_core import T0, fb, pred

KIND = stream_pb2.LabelKind
TOPICS = Topics("train", "dlq")
SOURCE = Source("predictions", 2, 17)
DEFAULT = StreamPolicy(window_s=60, retention_s=600, max_pending=10, max_closed=20)


def definition(
    kind: stream_pb2.LabelKind = KIND.LABEL_KIND_BINARY,
    classes: int = 0,
    window_s: float = 0.0,
    negative_after_s: float = 0.0,
    negative_value: float = 0.0,
    name: str = "clicks",
) -> stream_pb2.StreamDefinition:
    d = stream_pb2.StreamDefinition(name=name, dense_dim=2, label_kind=kind, num_classes=classes)
    d.join.window_s, d.join.negative_after_s = window_s, negative_after_s
    d.join.negative_value = negative_value
    return d


def test_a_stream_that_sets_nothing_gets_the_default_policy_without_negatives() -> None:
    assert policy_of(definition(), DEFAULT) == DEFAULT


def test_join_fields_shape_the_policy_and_the_negative_label_follows_the_label_kind() -> None:
    clicks = policy_of(definition(window_s=10, negative_after_s=2, negative_value=1), DEFAULT)
    assert (clicks.window_s, clicks.negative_after_s) == (10, 2)
    assert clicks.negative_label == Label.class_index(1) and clicks.max_pending == 10
    rating = definition(KIND.LABEL_KIND_REGRESSION, negative_after_s=5, negative_value=-0.5)
    assert policy_of(rating, DEFAULT).negative_label == Label.regression(-0.5)
    tags = definition(KIND.LABEL_KIND_MULTILABEL, 4, negative_after_s=5)
    assert policy_of(tags, DEFAULT).negative_label == Label.multi_label(())


@pytest.mark.parametrize(
    "broken",
    [
        definition(window_s=5, negative_after_s=6),  # a negative after the window closes
        definition(negative_after_s=1, negative_value=1.5),  # no class index
        definition(negative_after_s=1, negative_value=-1),
        definition(negative_after_s=1, negative_value=float("nan")),
        definition(KIND.LABEL_KIND_REGRESSION, negative_after_s=1, negative_value=float("inf")),
        definition(window_s=-3),
    ],
)
def test_impossible_join_policies_are_refused(broken: stream_pb2.StreamDefinition) -> None:
    with pytest.raises(ConfigError):
        policy_of(broken, DEFAULT)


def test_negative_label_of_a_multiclass_stream_is_its_value() -> None:
    assert negative_label(definition(KIND.LABEL_KIND_MULTICLASS, 5, negative_value=3)) == (
        Label.class_index(3)
    )


def _labelled(label: Label, stream: str) -> sample_pb2.Sample:
    s = sample_pb2.Sample(event_id="a", key="a", stream=stream)
    label.apply(s)
    return s


@pytest.mark.parametrize(
    ("stream", "label", "reason"),
    [
        (definition(), Label.class_index(1), None),
        (definition(), Label.class_index(2), "label_out_of_range"),
        (definition(), Label.regression(1.0), "label_kind_mismatch"),
        (definition(KIND.LABEL_KIND_MULTICLASS, 3), Label.class_index(2), None),
        (definition(KIND.LABEL_KIND_MULTICLASS, 3), Label.class_index(3), "label_out_of_range"),
        (definition(KIND.LABEL_KIND_MULTILABEL, 3), Label.multi_label((0, 2)), None),
        (definition(KIND.LABEL_KIND_MULTILABEL, 3), Label.multi_label((3,)), "label_out_of_range"),
        (definition(KIND.LABEL_KIND_REGRESSION), Label.regression(2.5), None),
        (None, Label.class_index(1), "unknown_stream"),
    ],
)
def test_labels_are_checked_against_their_stream(
    stream: stream_pb2.StreamDefinition | None, label: Label, reason: str | None
) -> None:
    refused = check_label(_labelled(label, "clicks"), stream)
    assert (refused[0] if refused else None) == reason
    if refused:
        assert refused[1]


def lookup(name: str) -> stream_pb2.StreamDefinition | None:
    return {
        "clicks": definition(),
        "tags": definition(KIND.LABEL_KIND_MULTILABEL, 3, name="tags"),
    }.get(name)


def test_samples_are_written_as_ingestion_writes_them() -> None:
    joined = Joined(pred("a"), fb("a", T0 + 5), 5)
    [record] = records_of([joined], TOPICS, lookup, SOURCE)
    assert (record.topic, record.key, record.reason) == ("train", b"a", None)
    assert record.headers == [
        (samples.CONTENT_TYPE, samples.SAMPLE_TYPE),
        (samples.SOURCE, b"predictions:2:17"),
        (samples.EVENT_ID, b"a"),
    ]
    assert sample_pb2.Sample.FromString(record.value) == joined.sample()
    [clocked] = records_of([joined], TOPICS, lookup, None)  # closed by the clock: no source
    assert samples.header(clocked.headers, samples.SOURCE) is None


def _size(record: object) -> int:
    return record_size(record.key, record.value, record.headers)  # type: ignore[attr-defined]


def test_no_output_is_larger_than_the_limit_so_none_can_stop_a_partition() -> None:
    wide = pred("w", dense=tuple(float(i) for i in range(3000)))  # ~15 kB served features
    joined, expired = Joined(wide, fb("w", T0 + 5), 5), Expired(wide)
    sample, dead = records_of([joined, expired], TOPICS, lookup, SOURCE)
    assert within(sample, TOPICS, _size(sample)) == sample  # what fits is left as it is
    limit = MIN_FIT_BYTES
    cut = within(dead, TOPICS, limit)
    assert _size(cut) <= limit < _size(dead)
    assert (cut.topic, cut.reason, cut.key) == ("dlq", dead.reason, dead.key)
    assert samples.header(cut.headers, samples.TRUNCATED) == str(len(dead.value)).encode()
    assert dead.value.startswith(cut.value)
    # A joined sample over the limit is never written to the training topic: its dead letter.
    refused = within(sample, TOPICS, limit)
    assert (refused.topic, refused.reason) == ("dlq", OVERSIZED)
    assert _size(refused) <= limit
    assert samples.header(refused.headers, samples.REASON) == OVERSIZED.encode()
    assert samples.header(refused.headers, samples.SOURCE) == b"predictions:2:17"


def test_an_empty_multilabel_negative_still_says_its_label_kind() -> None:
    negative = Negative(pred("n", stream="tags"), Label.multi_label(()), T0 + 5)
    [record] = records_of([negative], TOPICS, lookup, None)
    assert record.topic == "train"
    assert sample_pb2.Sample.FromString(record.value).WhichOneof("label") == "multi_label"


def test_refused_samples_and_dead_letters_carry_the_record_and_why() -> None:
    outputs: list[Output] = [
        Joined(pred("bad"), fb("bad", T0, label=7), 0),
        Joined(pred("x", stream="nostream"), fb("x", T0, stream="nostream"), 0),
        Expired(pred("e")),
        Late(fb("l", T0), T0 - 1),
        Unknown(fb("u", T0)),
        Duplicate(pred("d")),
        Duplicate(fb("d", T0)),
    ]
    records = records_of(outputs, TOPICS, lookup, SOURCE)
    assert all(r.topic == "dlq" for r in records)
    reasons = [r.reason for r in records]
    assert reasons == [
        "label_out_of_range",
        "unknown_stream",
        "expired",
        "late",
        "unknown",
        "duplicate_prediction",
        "duplicate_feedback",
    ]
    types = [samples.header(r.headers, samples.CONTENT_TYPE) for r in records]
    assert types == [samples.SAMPLE_TYPE] * 2 + [PREDICTION_TYPE] + [FEEDBACK_TYPE] * 2 + [
        PREDICTION_TYPE,
        FEEDBACK_TYPE,
    ]
    for r in records:
        assert samples.header(r.headers, samples.REASON) == (r.reason or "").encode()
        assert samples.header(r.headers, samples.DETAIL)
        assert samples.header(r.headers, samples.SOURCE) == b"predictions:2:17"
        assert r.key == samples.header(r.headers, samples.EVENT_ID)
    assert decode_prediction(records[2].value) == pred("e")
    assert decode_feedback(records[3].value) == fb("l", T0)


def test_an_undecodable_input_keeps_its_bytes_and_its_senders_headers() -> None:
    problem = FeedbackProblem("undecodable", "not a feedback: " + "x" * 5000)
    headers = [("trace", b"t1"), (samples.REASON, b"forged")]
    record = undecodable(b"\xff", b"k", headers, problem, TOPICS, SOURCE)
    assert (record.topic, record.key, record.value, record.reason) == (
        "dlq",
        b"k",
        b"\xff",
        "undecodable",
    )
    assert record.headers[0] == ("trace", b"t1")
    assert samples.header(record.headers, samples.REASON) == b"undecodable"
    assert len(samples.header(record.headers, samples.DETAIL) or b"") <= 1024
    empty = undecodable(None, None, [], None, TOPICS, SOURCE)
    assert (empty.reason, empty.value) == ("empty", b"")


def test_settings_come_from_the_joiner_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOINER_WINDOW_S", "12")
    monkeypatch.setenv("JOINER_TRANSACTIONAL_ID", "joiner-7")
    monkeypatch.setenv("JOINER_TOPICS__JOINER_STATE", "state")
    settings = JoinerSettings()
    assert settings.transactional_id == "joiner-7" and settings.topics.joiner_state == "state"
    assert settings.default_policy().window_s == 12
    assert settings.default_policy().negative_after_s is None
    assert (settings.commit_interval_ms, settings.clock_tick_ms) == (100, 200)
    assert settings.consumer_group == "streamlearn-joiner"


def test_prometheus_sees_each_partitions_counters_and_label_delays() -> None:
    metrics = JoinMetrics(joined=2, negatives=1, late=4)
    metrics.observe_delay(500)
    metrics.observe_delay(7000)
    registry = CollectorRegistry()
    registry.register(JoinCollector(lambda: {1: metrics}))
    text = generate_latest(registry).decode()
    assert 'streamlearn_joiner_outputs_total{outcome="joined",partition="1"} 2.0' in text
    assert 'streamlearn_joiner_outputs_total{outcome="late",partition="1"} 4.0' in text
    assert 'streamlearn_joiner_label_delay_seconds_bucket{le="1.0",partition="1"} 1.0' in text
    assert 'streamlearn_joiner_label_delay_seconds_bucket{le="15.0",partition="1"} 2.0' in text
    assert 'streamlearn_joiner_label_delay_seconds_count{partition="1"} 2.0' in text
    assert 'streamlearn_joiner_label_delay_seconds_sum{partition="1"} 7.5' in text


@pytest.mark.parametrize(
    ("join", "problem"),
    [
        ({"window_s": 10.0, "negative_after_s": 20.0}, "after the window closes"),
        ({"window_s": -1.0}, "must not be negative"),
        ({"negative_after_s": float("nan")}, "must be finite"),
        ({"negative_value": 2.0}, "not a class index below 2"),
        ({"negative_value": 0.5}, "not a class index below 2"),
    ],
)
def test_the_catalog_refuses_a_join_policy_no_joiner_could_follow(
    join: dict[str, float], problem: str
) -> None:
    good = stream_pb2.StreamDefinition(
        name="clicks", dense_dim=2, label_kind=KIND.LABEL_KIND_BINARY
    )
    good.join.window_s, good.join.negative_after_s = 30.0, 10.0
    check_definition(good)  # a window with negatives after 10 s, class 0: fine
    bad = stream_pb2.StreamDefinition()
    bad.CopyFrom(good)
    bad.join.Clear()
    for name, value in join.items():
        setattr(bad.join, name, value)
    with pytest.raises(InvalidArgument, match=problem):
        check_definition(bad)

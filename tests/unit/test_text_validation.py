"""Text streams in ingestion: each rule, with the router and the compiled fast path agreeing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingestion.dedup import PartitionMemory
from services.ingestion.fastpath import BatchRouter, Routed
from services.ingestion.reasons import Reason
from services.ingestion.router import RawRecord, Router
from services.ingestion.validation import TimeLimits
from shared import samples
from shared.streams import check_definition
from streamlearn.v1 import sample_pb2, stream_pb2
from tests.unit.test_ingestion_fastpath import Record, incoming, plain
from tests.unit.test_ingestion_router import NOW, STREAMS, columns

LIMIT = 64  # the text streams' max_bytes here
KIND = stream_pb2.LabelKind
TEXT_STREAMS = {
    # A language model's stream: text only, no label kind.
    "lm": stream_pb2.StreamDefinition(name="lm", text=stream_pb2.TextSpec(max_bytes=LIMIT)),
    # A task on text: binary label required, two optional dense features.
    "lmbin": stream_pb2.StreamDefinition(
        name="lmbin",
        dense_dim=2,
        label_kind=KIND.LABEL_KIND_BINARY,
        text=stream_pb2.TextSpec(max_bytes=LIMIT),
    ),
}
ALL = STREAMS | TEXT_STREAMS
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def router() -> Router:
    limits = TimeLimits(max_future_ms=300_000, max_age_ms=86_400_000)
    return Router(lambda name, _at: ALL.get(name), limits, 10_000, clock=lambda: NOW)


def text_sample(**overrides: object) -> sample_pb2.Sample:
    fields: dict[str, object] = {"event_id": "t1", "key": "k", "stream": "lm", "text": "hello"}
    fields.update(overrides)
    message = sample_pb2.Sample(**{k: v for k, v in fields.items() if v is not None})  # type: ignore[arg-type]
    message.event_time.FromMilliseconds(int(NOW * 1000) - 1000)
    return message


def with_raw_text(value: bytes, raw: bytes) -> bytes:
    """`value` with field 12 (text) appended as `raw` bytes: the last one wins when parsed."""
    length, size = b"", len(raw)
    while True:
        byte, size = size & 0x7F, size >> 7
        length += bytes([byte | (0x80 if size else 0)])
        if not size:
            break
    return value + b"\x62" + length + raw


def both(values: list[bytes], batch: bool = False) -> tuple[list[list[Any]], int]:
    """Route `values` through the fast path and the router; their outcomes (equal) and how
    many the fast path accepted itself."""
    headers = [(samples.CONTENT_TYPE, samples.BATCH_TYPE)] if batch else None
    records: list[Record] = [(b"k", value, headers) for value in values]
    routing = BatchRouter(router(), compiled=True).route(incoming(records), PartitionMemory(60))
    slow, memory = router(), PartitionMemory(60)
    expected = [
        plain(slow.route(RawRecord("raw", 0, i, b"k", v, list(headers or []), NOW), memory))
        for i, v in enumerate(values)
    ]
    fast: list[Routed] = routing.routed
    assert [plain(r) for r in fast] == expected  # the same outputs, record by record
    return expected, sum(type(r) is tuple for r in fast)


def only_outcome(value: bytes, batch: bool = False) -> Reason | None:
    """The one outcome of `value` (None: accepted), the same through both paths."""
    [[*outputs]], _ = both([value], batch)
    assert len(outputs) == 1
    rejection = outputs[0][3]
    return None if rejection is None else rejection.reason


def test_the_text_streams_here_are_valid_definitions() -> None:
    for definition in TEXT_STREAMS.values():
        check_definition(definition)


def test_valid_ascii_text_samples_are_accepted_on_the_compiled_path() -> None:
    values = [
        text_sample(event_id="a").SerializeToString(),
        text_sample(event_id="b", text="x" * LIMIT).SerializeToString(),  # exactly the limit
        text_sample(event_id="c", stream="lmbin", class_index=1).SerializeToString(),
        text_sample(
            event_id="d", stream="lmbin", dense=[1.0, 2.0], class_index=0
        ).SerializeToString(),
    ]
    outcomes, fast = both(values)
    assert [o[0][3] for o in outcomes] == [None] * 4
    assert fast == 4


def test_non_ascii_text_is_counted_in_utf8_bytes_by_the_router() -> None:
    fits = text_sample(event_id="a", text="é" * (LIMIT // 2)).SerializeToString()  # 64 bytes
    over = text_sample(event_id="b", text="€" * 22).SerializeToString()  # 22 chars, 66 bytes
    outcomes, fast = both([fits, over])
    assert fast == 0  # not ASCII: the scan declines, the router decides
    assert outcomes[0][0][3] is None
    rejection = outcomes[1][0][3]
    assert rejection.reason == Reason.OVERSIZED_TEXT
    assert "66" in rejection.detail and str(LIMIT) in rejection.detail


RULES = {
    "empty text": (text_sample(text=""), Reason.MISSING_TEXT),
    "no text field": (text_sample(text=None), Reason.MISSING_TEXT),
    "one byte over": (text_sample(text="x" * (LIMIT + 1)), Reason.OVERSIZED_TEXT),
    "label without a label kind": (text_sample(class_index=1), Reason.UNEXPECTED_LABEL),
    "regression label without a label kind": (
        text_sample(regression=0.5),
        Reason.UNEXPECTED_LABEL,
    ),
    "no label on a labelled text stream": (text_sample(stream="lmbin"), Reason.MISSING_LABEL),
    "class out of range": (
        text_sample(stream="lmbin", class_index=2),
        Reason.LABEL_OUT_OF_RANGE,
    ),
    "wrong dense dimension": (
        text_sample(stream="lmbin", dense=[1.0], class_index=1),
        Reason.WRONG_DIMENSION,
    ),
    "dense on a featureless text stream": (text_sample(dense=[1.0]), Reason.WRONG_DIMENSION),
    "NaN dense feature": (
        text_sample(stream="lmbin", dense=[1.0, float("nan")], class_index=1),
        Reason.NON_FINITE,
    ),
    "named features without a schema": (
        text_sample(features={"age": sample_pb2.FeatureValue(number=1.0)}),
        Reason.NO_FEATURE_SCHEMA,
    ),
    "no event id": (text_sample(event_id=""), Reason.MISSING_EVENT_ID),
    "empty text on a labelled text stream": (
        text_sample(stream="lmbin", text="", class_index=1),
        Reason.MISSING_TEXT,
    ),
}


@pytest.mark.parametrize(("message", "reason"), RULES.values(), ids=RULES.keys())
def test_each_text_rule_gives_its_reason_through_both_paths(
    message: sample_pb2.Sample, reason: Reason
) -> None:
    assert only_outcome(message.SerializeToString()) == reason


def test_oversized_text_says_both_sizes() -> None:
    value = text_sample(text="y" * 100).SerializeToString()
    [[(_, dead, _, rejection)]], _ = both([value])
    assert rejection.detail == f"text of 100 UTF-8 bytes, stream 'lm' allows {LIMIT}"
    assert dead == value  # the original bytes, for redrive


@pytest.mark.parametrize(
    "raw", [b"\xff", b"ok\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"caf\xe9"], ids=repr
)
@pytest.mark.parametrize("stream", ["lm", "bin"])
def test_invalid_utf8_text_is_an_undecodable_dead_letter_naming_the_field(
    raw: bytes, stream: str
) -> None:
    base = text_sample(stream=stream, text="fine", dense=[1.0, 2.0, 3.0] if stream == "bin" else [])
    if stream == "bin":
        base.class_index = 1
    value = with_raw_text(base.SerializeToString(), raw)
    [[(_, dead, headers, rejection)]], fast = both([value])
    assert fast == 0
    assert rejection.reason == Reason.UNDECODABLE
    assert rejection.detail.startswith("not a Sample: text (field 12) is not valid UTF-8")
    assert dead == value
    assert samples.header(headers, samples.REASON) == b"undecodable"


def test_text_on_a_stream_that_is_not_a_text_stream_travels_uncapped() -> None:
    # 5,000 bytes, far over any text stream here: only the record limit bounds it.
    value = text_sample(
        stream="bin", text="z" * 5000, dense=[1.0, 2.0, 3.0], class_index=1
    ).SerializeToString()
    outcomes, fast = both([value])
    assert outcomes[0][0][3] is None and fast == 1


def test_a_batch_on_a_text_stream_is_refused_whole() -> None:
    batch = columns(3)
    value = samples.encode_batch(
        samples.Columns(
            "lmbin", batch.event_ids, batch.keys, batch.event_time_ms,
            np.ones((3, 2), np.float32), np.zeros(3, np.int32), batch.weights,
        )
    )  # fmt: skip
    [[(_, dead, _, rejection)]], _ = both([value], batch=True)
    assert rejection.reason == Reason.TEXT_NEEDS_SAMPLES
    assert "send single Samples" in rejection.detail and dead == value


def test_the_grpc_front_door_refuses_text_samples_as_routing_does() -> None:
    refused = router().rejections(text_sample(text="").SerializeToString(), [])
    assert [r.reason for r in refused] == [Reason.MISSING_TEXT]
    assert router().rejections(text_sample().SerializeToString(), []) == []


# --- fuzzing: random text up to and over the limit, random bytes in field 12 --------------


def expected_reason(message: sample_pb2.Sample, raw: bytes | None) -> Reason | None:
    """What the rules say of a generated sample (None: valid): the oracle of the fuzz."""
    text = message.text
    if raw is not None:
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            return Reason.UNDECODABLE
    definition = ALL[message.stream]
    labelled = message.WhichOneof("label") is not None
    if definition.text.max_bytes:
        if not text:
            return Reason.MISSING_TEXT
        if len(text.encode()) > definition.text.max_bytes:
            return Reason.OVERSIZED_TEXT
        if len(message.dense) not in (0, definition.dense_dim):
            return Reason.WRONG_DIMENSION
        if definition.label_kind == KIND.LABEL_KIND_UNSPECIFIED:
            return Reason.UNEXPECTED_LABEL if labelled else None
    elif len(message.dense) != definition.dense_dim:
        return Reason.WRONG_DIMENSION
    return None if labelled else Reason.MISSING_LABEL


texts = st.text(max_size=2 * LIMIT) | st.integers(0, 2 * LIMIT).map(lambda n: "a" * n)
generated = st.fixed_dictionaries(
    {
        "event_id": st.sampled_from(["e1", "e2", "e3"]),
        "stream": st.sampled_from(["lm", "lmbin", "bin"]),
        "text": texts,
        "dense": st.sampled_from([[], [1.0], [1.0, 2.0], [1.0, 2.0, 3.0]]),
    },
    optional={"class_index": st.integers(0, 1)},
)
raw_texts = st.none() | st.binary(max_size=2 * LIMIT) | texts.map(str.encode)


@FUZZ
@given(st.lists(st.tuples(generated, raw_texts), min_size=1, max_size=8))
def test_fuzzed_text_samples_route_as_the_rules_say_through_both_paths(
    drawn: list[tuple[dict[str, Any], bytes | None]],
) -> None:
    messages = [text_sample(**fields) for fields, _ in drawn]
    values = [
        m.SerializeToString() if raw is None else with_raw_text(m.SerializeToString(), raw)
        for m, (_, raw) in zip(messages, drawn, strict=True)
    ]
    outcomes, _ = both(values)  # never raises; the fast path agrees with the router
    seen: set[str] = set()
    for message, (_, raw), outputs in zip(messages, drawn, outcomes, strict=True):
        [(_, _, _, rejection)] = outputs
        reason = expected_reason(message, raw)
        if reason is None and message.event_id in seen:
            reason = Reason.DUPLICATE
        assert (rejection.reason if rejection else None) == reason, rejection
        if rejection is None:
            seen.add(message.event_id)

"""Fuzzing of the ingestion router, its validators and the gRPC front door's check.

Whatever the bytes and headers, routing gives documented reasons or valid outputs, every
output within the size limit, and never another exception.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingestion.dedup import PartitionMemory
from services.ingestion.limits import record_size
from services.ingestion.reasons import Reason
from services.ingestion.router import Output, RawRecord
from shared import samples
from streamlearn.v1 import sample_pb2
from tests.unit.test_ingestion_router import columns, router, sample

LIMIT = 20_000
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID_SAMPLE = sample().SerializeToString()
VALID_BATCH = samples.encode_batch(columns(4))
CONTENT_TYPES = [samples.SAMPLE_TYPE, samples.BATCH_TYPE, b"application/json", b"", b"\xff"]

NAMES = [samples.CONTENT_TYPE, samples.SOURCE, samples.REASON, samples.TRUNCATED, "x-trace"]
one_header = st.tuples(
    st.sampled_from(NAMES) | st.text(max_size=20),
    st.sampled_from(CONTENT_TYPES)
    | st.binary(max_size=64)
    | st.integers(0, 2 * LIMIT).map(lambda n: b"h" * n),  # one large header
)
# Many headers: one repeated (up to 3,000 copies) or many distinct content types.
repeated = st.tuples(one_header, st.integers(0, 3000)).map(lambda hn: [hn[0]] * hn[1])
distinct_types = st.integers(0, 3000).map(
    lambda n: [(samples.CONTENT_TYPE, f"application/x-{i}".encode()) for i in range(n)]
)
header_sets = st.lists(
    st.lists(one_header, max_size=4) | repeated | distinct_types, max_size=3
).map(lambda parts: [header for part in parts for header in part])
keys = st.none() | st.binary(max_size=16) | st.integers(0, 2 * LIMIT).map(lambda n: b"k" * n)


def mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """`valid` truncated, with bytes flipped, inserted or replaced."""

    def mutate(data: tuple[int, int, int, bytes, str]) -> bytes:
        cut, at, bit, insert, how = data
        value = bytearray(valid)
        at %= max(len(value), 1)
        if how == "truncate":
            return bytes(value[: cut % (len(value) + 1)])
        if how == "flip" and value:
            value[at] ^= 1 << (bit % 8)
        elif how == "insert":
            value[at:at] = insert
        elif how == "replace":
            value[at : at + len(insert)] = insert
        return bytes(value)

    return st.tuples(
        st.integers(0, 10_000),
        st.integers(0, 10_000),
        st.integers(0, 7),
        st.binary(min_size=1, max_size=16),
        st.sampled_from(["truncate", "flip", "insert", "replace"]),
    ).map(mutate)


def check(outputs: list[Output], value: bytes | None) -> None:
    """Documented reasons or valid outputs, each within the limit."""
    for out in outputs:
        assert record_size(out.key, out.value, out.headers) <= LIMIT
        if out.rejection is None:
            assert samples.header(out.headers, samples.SOURCE) == b"raw:0:0"
            if samples.is_batch(out.headers):
                kept = samples.decode_batch(sample_pb2.SampleBatch.FromString(out.value))
                assert len(kept) == out.rows > 0
            else:
                assert out.value == value
        else:
            assert out.rejection.reason in set(Reason)
            # The catch-all is for bugs: the fuzzer must find none.
            assert out.rejection.reason != Reason.INTERNAL_ERROR, out.rejection.detail
            assert samples.header(out.headers, samples.REASON) == out.rejection.reason.encode()


def route(value: bytes | None, headers: samples.Headers, key: bytes | None = b"k") -> list[Output]:
    raw = RawRecord("raw", 0, 0, key, value, headers)
    outputs = router(max_bytes=LIMIT).route(raw, PartitionMemory(60))
    check(outputs, value)
    return outputs


@FUZZ
@given(st.binary(max_size=2 * LIMIT) | st.none(), header_sets, keys)
def test_random_bytes_headers_and_keys(
    value: bytes | None, headers: samples.Headers, key: bytes | None
) -> None:
    assert route(value, headers, key)  # a record always gives an output (never silently dropped)


@FUZZ
@given(st.sampled_from([VALID_SAMPLE, VALID_BATCH]), header_sets, keys)
def test_valid_values_with_many_or_large_headers_and_keys(
    value: bytes, headers: samples.Headers, key: bytes | None
) -> None:
    assert route(value, headers, key)


@FUZZ
@given(mutated(VALID_SAMPLE), header_sets)
def test_mutated_samples(value: bytes, headers: samples.Headers) -> None:
    route(value, headers)


@FUZZ
@given(mutated(VALID_BATCH))
def test_mutated_batches(value: bytes) -> None:
    route(value, [(samples.CONTENT_TYPE, samples.BATCH_TYPE)])


@st.composite
def batches(draw: st.DrawFn) -> bytes:
    """Batches of extreme shapes: declared dimension and column lengths drawn apart."""
    rows = draw(st.integers(0, 50))
    dim = draw(st.sampled_from([0, 1, 3, 2**31, 2**32 - 1]))
    size = st.integers(0, 200)
    floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
    batch = sample_pb2.SampleBatch(
        schema_version=draw(st.sampled_from([0, 1, 2])),
        stream=draw(st.sampled_from(["bin", "multi", "reg", "tags", "nope", ""])),
        dense_dim=dim,
        event_ids=draw(st.lists(st.sampled_from(["a", "b", "", "c" * 300]), min_size=rows,
                                max_size=rows + draw(st.integers(0, 2)))),
        keys=draw(st.lists(st.text(max_size=5), min_size=0, max_size=rows + 1)),
        event_time_unix_ms=draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=rows + 1)),
        dense=np.asarray(draw(st.lists(floats, max_size=draw(size))), "<f4").tobytes()
        + draw(st.binary(max_size=3)),
        weights=draw(st.binary(max_size=4 * rows + 3)),
    )  # fmt: skip
    labels = draw(st.binary(max_size=8 * rows + 7))
    if draw(st.booleans()):
        batch.regression = labels
    elif draw(st.booleans()):
        batch.class_index = labels
    return batch.SerializeToString()


@FUZZ
@given(batches())
def test_batches_of_extreme_shapes(value: bytes) -> None:
    route(value, [(samples.CONTENT_TYPE, samples.BATCH_TYPE)])


@st.composite
def samples_with_odd_fields(draw: st.DrawFn) -> bytes:
    values = st.floats(allow_nan=True, allow_infinity=True, width=32)
    message = sample_pb2.Sample(
        schema_version=draw(st.sampled_from([0, 1, 2**32 - 1])),
        event_id=draw(st.text(max_size=8)),
        stream=draw(st.sampled_from(["bin", "multi", "reg", "tags", ""])),
        dense=draw(st.lists(values, max_size=5)),
        weight=draw(values),
        sparse=sample_pb2.SparseFeatures(
            indices=draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3)),
            values=draw(st.lists(values, max_size=3)),
        ),
    )
    label = draw(st.sampled_from(["none", "regression", "class_index", "multi_label"]))
    if label == "regression":
        message.regression = draw(st.floats(allow_nan=True, allow_infinity=True))
    elif label == "class_index":
        message.class_index = draw(st.integers(-(2**31), 2**31 - 1))
    elif label == "multi_label":
        message.multi_label.classes.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1))))
    message.event_time.seconds = draw(st.integers(-(2**40), 2**40))
    return message.SerializeToString()


@FUZZ
@given(samples_with_odd_fields(), header_sets)
def test_samples_with_extreme_fields(value: bytes, headers: samples.Headers) -> None:
    route(value, headers)


@FUZZ
@given(st.binary(max_size=2 * LIMIT) | mutated(VALID_SAMPLE) | batches(), header_sets)
def test_the_grpc_front_door_check(value: bytes, headers: samples.Headers) -> None:
    rejections = router(max_bytes=LIMIT).rejections(value, headers)
    assert all(r.reason in set(Reason) - {Reason.INTERNAL_ERROR} for r in rejections)


# --- named features (streams with a feature schema) -------------------------------------------

SCHEMA_NUMERIC = ("age", "income")  # the `named` stream of the router tests
SCHEMA_CATEGORICAL = ("country", "device")
FLOAT32_MAX = float(np.finfo(np.float32).max)
utf8 = st.characters(exclude_categories=["Cs"])  # protobuf strings are valid UTF-8
feature_names = st.sampled_from([*SCHEMA_NUMERIC, *SCHEMA_CATEGORICAL, "colour", ""]) | st.text(
    utf8, max_size=12
)
feature_values = (
    st.none()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(utf8, max_size=40)
    | st.integers(1000, 1100).map(lambda n: "é" * (n // 2))  # around the category limit
)


def expected_reasons(values: dict[str, float | str | None]) -> set[Reason]:
    """Every problem of a record under the `named` schema (the map's order is unspecified)."""
    found = set()
    for name, value in values.items():
        if value is None:
            continue
        if name in SCHEMA_NUMERIC:
            if isinstance(value, str):
                found.add(Reason.WRONG_TYPE)
            elif not math.isfinite(value) or abs(value) > FLOAT32_MAX:
                found.add(Reason.NON_FINITE)
        elif name in SCHEMA_CATEGORICAL:
            if isinstance(value, str) and len(value.encode()) > 1024:
                found.add(Reason.OVERSIZED_CATEGORY)
            elif not isinstance(value, str) and not math.isfinite(value):
                found.add(Reason.NON_FINITE)
        else:
            found.add(Reason.UNKNOWN_FEATURE)
    return found


@FUZZ
@given(
    st.dictionaries(feature_names, feature_values, max_size=8),
    st.sampled_from(["named", "bin"]),
    st.sampled_from([[], [1.0, 2.0]]),
)
def test_named_samples_of_arbitrary_maps_are_valid_or_have_their_reason(
    values: dict[str, float | str | None], stream: str, dense: list[float]
) -> None:
    message = sample(stream=stream, dense=dense)
    for name, value in values.items():
        slot = message.features[name]
        if isinstance(value, str):
            slot.category = value
        elif value is not None:
            slot.number = value
        else:
            slot.SetInParent()
    wire = message.SerializeToString()
    [out] = route(wire, [])
    reason = out.rejection.reason if out.rejection else None
    if not values:  # no named features: a positional sample (the named stream has 2 dense)
        assert reason in (None, Reason.WRONG_DIMENSION)
    elif dense:
        assert reason == Reason.MIXED_FEATURES
    elif stream == "bin":
        assert reason == Reason.NO_FEATURE_SCHEMA
    else:
        problems = expected_reasons(values)
        assert (reason is None) == (not problems), (values, out.rejection)
        assert reason is None or reason in problems
    assert router(max_bytes=LIMIT).rejections(wire, []) == ([out.rejection] if reason else [])


@FUZZ
@given(
    st.lists(st.lists(st.sampled_from([f"e{i}" for i in range(12)]), max_size=8), max_size=6),
    st.integers(1, 5),
)
def test_accepting_in_bulk_is_accepting_one_by_one(records: list[list[str]], max_ids: int) -> None:
    """`accept_all` and `known` answer as `accept` and `accepted_at`, settling and cap too."""
    one, bulk = PartitionMemory(3600, max_ids=max_ids), PartitionMemory(3600, max_ids=max_ids)
    for offset, ids in enumerate(records):
        accepted = dict.fromkeys(ids)  # a plan's ids: a repeat within a record is refused
        for event_id in accepted:
            one.accept(event_id, offset, float(offset))
        bulk.accept_all(accepted, offset, float(offset))
        names = [f"e{i}" for i in range(12)]
        assert [bulk.accepted_at(e) for e in names] == [one.accepted_at(e) for e in names]
        assert bulk.known([hash(e) for e in names]) == [
            one.accepted_at(e) is not None for e in names
        ]
        assert len(bulk) == len(one)

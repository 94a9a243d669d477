"""The compiled fast path routes exactly as the router: same outputs, same memory, in order."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingestion import scan
from services.ingestion.dedup import PartitionMemory
from services.ingestion.fastpath import BatchRouter, Incoming, Routed
from services.ingestion.router import RawRecord
from services.ingestion.scan import Col
from shared import samples
from streamlearn.v1 import sample_pb2
from tests.unit.test_ingestion_router import MALFORMED, NOW, columns, router, sample

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
Record = tuple[bytes | None, bytes | None, Any]  # key, value, headers (None: none)


def incoming(records: list[Record], first: int = 0) -> Incoming:
    count = len(records)
    return Incoming(
        "raw",
        0,
        list(range(first, first + count)),
        [key for key, _, _ in records],
        [value for _, value, _ in records],
        [headers for _, _, headers in records],
        [NOW] * count,
    )


def plain(routed: Routed) -> list[tuple[Any, ...]]:
    """An outcome as comparable tuples: an accepted sample is one training output."""
    if type(routed) is tuple:
        return [(*routed, None)]
    return [(o.key, o.value, o.headers, o.rejection) for o in routed]  # type: ignore[union-attr]


def both(
    batches: list[list[Record]], memory: tuple[PartitionMemory, PartitionMemory] | None = None
) -> tuple[list[Routed], list[list[Any]], PartitionMemory, PartitionMemory]:
    """Route `batches` with the fast path and record by record with the router."""
    fast_memory, slow_memory = memory or (PartitionMemory(60), PartitionMemory(60))
    fast, slow = BatchRouter(router(), compiled=True), router()
    routed: list[Routed] = []
    expected: list[list[Any]] = []
    offset = 0
    for records in batches:
        routing = fast.route(incoming(records, offset), fast_memory)
        accepted = [r for r in routing.routed if type(r) is tuple]
        assert sum(routing.accepted.values()) == len(accepted)
        routed += routing.routed
        for i, (key, value, headers) in enumerate(records):
            theirs = [(k, v or b"") for k, v in headers or []]
            raw = RawRecord("raw", 0, offset + i, key, value, theirs, NOW)
            expected.append(plain(slow.route(raw, slow_memory)))
        offset += len(records)
    assert [plain(r) for r in routed] == expected
    return routed, expected, fast_memory, slow_memory


def accepted_fast(routed: list[Routed]) -> int:
    return sum(type(r) is tuple for r in routed)


def test_numba_is_there_so_the_compiled_path_runs() -> None:
    assert scan.AVAILABLE


def test_valid_samples_of_each_label_kind_are_accepted_on_the_compiled_path() -> None:
    values = [
        sample(event_id=f"b{i}").SerializeToString() for i in range(5)
    ] + [
        sample(event_id="m", stream="multi", dense=[1.0, 2.0], class_index=3).SerializeToString(),
        sample(
            event_id="r", stream="reg", dense=[1.0, 2.0], class_index=None, regression=-2.5
        ).SerializeToString(),
        sample(event_id="w", weight=0.0, text="some text").SerializeToString(),
    ]  # fmt: skip
    headers = [(samples.CONTENT_TYPE, samples.SAMPLE_TYPE)]
    routed, *_ = both([[(b"k", v, headers if i % 2 else None) for i, v in enumerate(values)]])
    assert accepted_fast(routed) == len(values)


@pytest.mark.parametrize(("value", "reason"), MALFORMED.values(), ids=MALFORMED.keys())
def test_each_malformed_input_is_routed_as_the_router_routes_it(value: bytes, reason: Any) -> None:
    valid = sample(event_id="ok").SerializeToString()
    routed, expected, *_ = both([[(b"k", valid, None), (b"k", value, None), (b"k", valid, None)]])
    assert accepted_fast(routed) == 1  # the first valid one; the third is its duplicate
    assert expected[1][0][3].reason == reason


def test_duplicates_within_a_batch_across_batches_and_past_settling() -> None:
    # max_ids 1000: the memory settles every 1,000 ids and forgets the oldest beyond them,
    # so duplicates are found in the settled arrays, among the recent ids, earlier in the
    # same batch, and ids forgotten early are accepted again: all as the router does.
    memories = (PartitionMemory(60, max_ids=1000), PartitionMemory(60, max_ids=1000))
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 2500, size=6000)
    batches: list[list[Record]] = [
        [(b"k", sample(event_id=f"e{i}").SerializeToString(), None) for i in ids[at : at + 700]]
        for at in range(0, len(ids), 700)
    ]
    routed, expected, fast_memory, slow_memory = both(batches, memories)
    duplicates = sum(1 for outs in expected for out in outs if out[3] is not None)
    assert duplicates > 1000 and accepted_fast(routed) == len(ids) - duplicates
    assert fast_memory.cut_short == slow_memory.cut_short > 0
    assert len(fast_memory) == len(slow_memory)
    for i in set(ids.tolist()):
        assert fast_memory.accepted_at(f"e{i}") == slow_memory.accepted_at(f"e{i}")


def test_a_slow_record_that_accepts_an_id_makes_a_later_fast_one_a_duplicate() -> None:
    # Sparse features send the first through the router; it accepts "x" before the second.
    sparse = sample(event_id="x", stream="tags", dense=[], class_index=None,
                    multi_label=sample_pb2.MultiLabel(classes=[1]),
                    sparse=sample_pb2.SparseFeatures(indices=[3], values=[1.0]))  # fmt: skip
    first = sparse.SerializeToString()
    second = sample(event_id="x").SerializeToString()
    routed, expected, *_ = both([[(b"k", first, None), (b"k", second, None)]])
    assert accepted_fast(routed) == 0
    assert expected[1][0][3].reason.value == "duplicate"


def test_redelivered_inputs_routed_by_an_earlier_run_are_skipped_as_the_router_does() -> None:
    memories = (PartitionMemory(60), PartitionMemory(60))
    for memory in memories:
        memory.mark_routed_before(1, -1)
    values = [sample(event_id=f"e{i}").SerializeToString() for i in range(4)]
    routed, expected, *_ = both([[(b"k", v, None) for v in values]], memories)
    assert expected[1] == [] and accepted_fast(routed) == 0  # skipped; all by the router
    again = both([[(b"k", sample(event_id="n").SerializeToString(), None)]], memories)[0]
    assert accepted_fast(again) == 1  # nothing routed before is left: the compiled path


def test_batches_and_foreign_content_types_go_to_the_router() -> None:
    batch = samples.encode_batch(columns(3))
    records: list[Record] = [
        (b"k", batch, [(samples.CONTENT_TYPE, samples.BATCH_TYPE)]),
        (b"k", sample(event_id="j").SerializeToString(), [(samples.CONTENT_TYPE, b"json")]),
        (None, None, None),
        (b"k", b"", None),
    ]
    routed, *_ = both([records])
    assert accepted_fast(routed) == 0


def test_the_scan_reads_the_fields_validation_needs() -> None:
    message = sample(event_id="abc", stream="bin", weight=2.0, schema_version=1)
    value = message.SerializeToString()
    joined, rows = scan.scan([value, b"", b"\xff\xff"])
    row = rows[0]
    assert row[Col.SIMPLE] == 1 and row[Col.SCHEMA] == 1
    assert joined[row[Col.EVENT_ID_START] : row[Col.EVENT_ID_STOP]] == b"abc"
    assert joined[row[Col.STREAM_START] : row[Col.STREAM_STOP]] == b"bin"
    assert (row[Col.DENSE], row[Col.LABEL], row[Col.CLASS]) == (3, scan.CLASS_INDEX, 1)
    assert row[Col.EVENT_MS] == message.event_time.ToMilliseconds()
    assert (row[Col.NON_FINITE], row[Col.NEGATIVE_WEIGHT]) == (0, 0)
    assert rows[1, Col.SIMPLE] == 0 and rows[2, Col.SIMPLE] == 0


@pytest.mark.parametrize(
    "message",
    [
        sample(event_id="é"),  # not ASCII: the library checks UTF-8
        sample(sparse=sample_pb2.SparseFeatures(indices=[1], values=[1.0])),
        sample(attributes={"a": "b"}),
        sample(dense=[], features={"age": sample_pb2.FeatureValue(number=1.0)}),
        sample(class_index=None, multi_label=sample_pb2.MultiLabel(classes=[1])),
    ],
    ids=["non-ascii", "sparse", "attributes", "named", "multi-label"],
)
def test_the_scan_declines_what_it_does_not_model(message: sample_pb2.Sample) -> None:
    _, rows = scan.scan([message.SerializeToString()])
    assert rows[0, Col.SIMPLE] == 0


def test_the_scan_flags_non_finite_values_and_negative_weights() -> None:
    values = [
        sample(dense=[1.0, math.nan, 2.0]),
        sample(dense=[1.0, 2.0, -math.inf]),
        sample(stream="reg", class_index=None, regression=math.inf),
        sample(weight=math.nan),
        sample(weight=-1e-40),  # a negative subnormal float32 (-0.0 is not negative)
        sample(weight=-0.0),
    ]
    _, rows = scan.scan([v.SerializeToString() for v in values])
    assert rows[:, Col.NON_FINITE].tolist() == [1, 1, 1, 1, 0, 0]
    assert rows[:, Col.NEGATIVE_WEIGHT].tolist() == [0, 0, 0, 0, 1, 0]


# Fuzzing: samples with every field varied (valid or not), their bytes mutated, headers.

ids = st.sampled_from(["e1", "e2", "e3", "", "é", "a" * 40])
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
dense = st.lists(floats, max_size=4)
fields = st.fixed_dictionaries(
    {
        "event_id": ids,
        "stream": st.sampled_from(["bin", "multi", "reg", "tags", "named", "nope", ""]),
        "dense": dense,
        "schema_version": st.sampled_from([0, 1, 2]),
    },
    optional={
        "class_index": st.integers(-(2**31), 2**31 - 1) | st.integers(-1, 5),
        "regression": st.floats(),
        "weight": floats,
        "text": st.text(max_size=8),
        "event_ms": st.integers(-(2**40), 2**42)
        | st.integers(-(10**6), 10**6).map(lambda d: int(NOW * 1000) + d * 1000),
    },
)


def build(data: dict[str, Any]) -> bytes:
    event_ms = data.pop("event_ms", None)
    message = sample_pb2.Sample(**data)
    if event_ms is not None:
        message.event_time.FromMilliseconds(event_ms)
    return message.SerializeToString()


def mutate(value: bytes, how: tuple[int, int, bytes]) -> bytes:
    at, cut, insert = how
    if not value:
        return insert
    at %= len(value)
    return value[:at] + insert + value[at + cut % 4 :]


edits = st.tuples(st.integers(0, 200), st.integers(0, 3), st.binary(max_size=6))
values = st.one_of(
    fields.map(build),
    st.tuples(fields.map(build), edits).map(lambda vh: mutate(*vh)),
    st.binary(max_size=40),
)
headers = st.none() | st.lists(
    st.tuples(
        st.sampled_from([samples.CONTENT_TYPE, "x-trace"]),
        st.sampled_from([samples.SAMPLE_TYPE, samples.BATCH_TYPE, b"other", None]),
    ),
    max_size=2,
)
records = st.tuples(st.none() | st.binary(max_size=4), values, headers)


@FUZZ
@given(st.lists(st.lists(records, min_size=1, max_size=12), min_size=1, max_size=4))
def test_fuzzed_batches_route_exactly_as_the_router(batches: list[list[Record]]) -> None:
    both(batches)

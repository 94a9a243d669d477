"""Hardening of the ingestion core (issue 13): every input gives a documented outcome."""

from __future__ import annotations

import asyncio
import math
import tracemalloc
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder  # type: ignore[import-untyped]

from services.ingestion import router as router_module
from services.ingestion.dedup import PartitionMemory
from services.ingestion.delivery import settle
from services.ingestion.holding import Holds, unless
from services.ingestion.limits import check_topic_limits, record_size
from services.ingestion.reasons import Reason
from services.ingestion.router import Output, RawRecord, Router
from services.ingestion.settings import IngestionSettings
from services.ingestion.topology import require_partition
from services.ingestion.validation import TimeLimits
from services.ingestion.worker import _know_partition
from shared import samples
from shared.errors import ConfigError, Unavailable
from streamlearn.v1 import sample_pb2, stream_pb2
from tests.unit.test_ingestion_router import NOW, STREAMS, columns, record, router, sample

LIMIT = 20_000


def route(value: bytes | None, headers: samples.Headers | None = None, **kw: Any) -> list[Output]:
    raw = RawRecord("raw", 0, 0, b"k", value, headers or [])
    return router(**kw).route(raw, PartitionMemory(60))


def reason_of(outputs: list[Output]) -> Reason | None:
    [out] = outputs
    return out.rejection.reason if out.rejection else None


def batch_bytes(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "schema_version": 1, "stream": "bin", "dense_dim": 3, "event_ids": ["a"], "keys": ["k"],
        "dense": np.ones(3, "<f4").tobytes(), "class_index": np.ones(1, "<i4").tobytes(),
    }  # fmt: skip
    base.update(fields)
    return sample_pb2.SampleBatch(**base).SerializeToString()


BATCH = [(samples.CONTENT_TYPE, samples.BATCH_TYPE)]


# --- defect 1: a record that breaks the router is one dead letter, nothing else -------------


@pytest.mark.parametrize(
    "fields",
    [
        {"dense": b"\0" * 7},
        {"class_index": b"\0" * 3},
        {"weights": b"\0" * 5},
        {"class_index": None, "regression": b"\0" * 9},
    ],
    ids=["dense", "class_index", "weights", "regression"],
)
def test_a_batch_column_of_partial_elements_is_undecodable(fields: dict[str, Any]) -> None:
    value = batch_bytes(**{k: v for k, v in fields.items() if v is not None})
    if "regression" in fields:
        batch = sample_pb2.SampleBatch.FromString(value)
        batch.regression = fields["regression"]
        value = batch.SerializeToString()
    [out] = route(value, BATCH)
    assert out.rejection is not None and out.rejection.reason == Reason.UNDECODABLE
    assert "multiple" in out.rejection.detail


def test_an_unexpected_error_while_routing_dead_letters_that_record_only() -> None:
    calls = 0

    def lookup(name: str, _at: float) -> stream_pb2.StreamDefinition | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("catalog exploded")
        return STREAMS.get(name)

    limits = TimeLimits(max_future_ms=300_000, max_age_ms=86_400_000)
    subject = Router(lookup, limits, LIMIT, clock=lambda: NOW)
    memory = PartitionMemory(60)
    [dead] = subject.route(record(sample().SerializeToString(), offset=0), memory)
    assert dead.rejection is not None and dead.rejection.reason == Reason.INTERNAL_ERROR
    assert "catalog exploded" in dead.rejection.detail
    assert samples.header(dead.headers, samples.REASON) == b"internal_error"
    [next_one] = subject.route(record(sample().SerializeToString(), offset=1), memory)
    assert next_one.rejection is None  # the failed record left no trace in the memory


# --- defect 2: one limit for what ingestion writes ------------------------------------------


def _size(out: Output) -> int:
    return record_size(out.key, out.value, out.headers)


def test_record_size_is_never_below_what_the_producer_counts() -> None:
    for key, value, headers in [
        (None, b"", []),
        (b"k", b"x" * 1000, [("a", b"b")]),
        (b"k" * 300, b"x" * 70_000, [(f"h{i}", b"v" * i) for i in range(40)]),
    ]:
        theirs = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
        assert record_size(key, value, headers) >= theirs


def test_a_sample_whose_output_would_exceed_the_limit_is_oversized() -> None:
    value = sample(text="x" * (LIMIT - 100)).SerializeToString()
    assert len(value) <= LIMIT  # the input fits, its output (with our headers) does not
    [out] = route(value, max_bytes=LIMIT)
    assert out.rejection is not None and out.rejection.reason == Reason.OVERSIZED
    assert _size(out) <= LIMIT


def test_the_dead_letter_of_an_oversized_record_is_truncated_to_the_limit() -> None:
    value = sample(text="x" * 3 * LIMIT).SerializeToString()
    headers = [("trace", b"t" * 5000), ("other", b"o" * 5000)]
    [out] = route(value, headers, max_bytes=LIMIT)
    assert out.rejection is not None and out.rejection.reason == Reason.OVERSIZED
    assert _size(out) <= LIMIT
    assert value.startswith(out.value) and len(out.value) < len(value)
    assert samples.header(out.headers, samples.TRUNCATED) == str(len(value)).encode()
    assert "truncated" in (samples.header(out.headers, samples.DETAIL) or b"").decode()


def test_outputs_within_the_limit_are_untouched() -> None:
    value = sample().SerializeToString()
    [out] = route(value, max_bytes=LIMIT)
    assert out.rejection is None and out.value == value
    assert samples.header(out.headers, samples.TRUNCATED) is None


def test_a_long_exception_text_does_not_blow_the_dead_letter() -> None:
    def lookup(name: str, _at: float) -> stream_pb2.StreamDefinition | None:
        raise RuntimeError("y" * 100_000)

    limits = TimeLimits(max_future_ms=300_000, max_age_ms=86_400_000)
    subject = Router(lookup, limits, LIMIT, clock=lambda: NOW)
    [out] = subject.route(record(sample().SerializeToString()), PartitionMemory(60))
    assert out.rejection is not None and out.rejection.reason == Reason.INTERNAL_ERROR
    assert _size(out) <= LIMIT


def test_topics_that_accept_less_than_the_limit_are_a_start_up_error() -> None:
    check_topic_limits({"train": 2_000_000, "dlq": 1_048_588}, 1_048_576)
    with pytest.raises(ConfigError, match="dlq"):
        check_topic_limits({"train": 2_000_000, "dlq": 1_000_000}, 1_048_576)


# --- defect 4: foreign content types --------------------------------------------------------


@pytest.mark.parametrize(
    "content_types",
    [
        [b"application/json"],
        [b"application/x-protobuf;type=streamlearn.v1.StreamDefinition"],
        [samples.SAMPLE_TYPE, samples.BATCH_TYPE],
        [samples.SAMPLE_TYPE, b"text/plain"],
    ],
    ids=["json", "other-protobuf", "both-of-ours", "ours-and-foreign"],
)
def test_a_content_type_that_is_not_ours_is_an_unsupported_schema(
    content_types: list[bytes],
) -> None:
    headers = [(samples.CONTENT_TYPE, t) for t in content_types]
    [out] = route(sample().SerializeToString(), headers)
    assert out.rejection is not None and out.rejection.reason == Reason.UNSUPPORTED_SCHEMA
    assert "content-type" in out.rejection.detail


def test_a_sample_with_or_without_its_content_type_is_accepted() -> None:
    value = sample().SerializeToString()
    assert reason_of(route(value)) is None
    assert reason_of(route(value, [(samples.CONTENT_TYPE, samples.SAMPLE_TYPE)])) is None


# --- the rest of the input space: each gets a clear reason ---------------------------------


def wire(**overrides: object) -> bytes:
    return sample(**overrides).SerializeToString()


CLEAR_REASONS = {
    "NaN weight": (wire(weight=math.nan), [], Reason.NON_FINITE),
    "infinite weight": (wire(weight=math.inf), [], Reason.NON_FINITE),
    "negative class": (wire(class_index=-3), [], Reason.LABEL_OUT_OF_RANGE),
    "multi-label on binary": (
        wire(class_index=None, multi_label=sample_pb2.MultiLabel(classes=[1])),
        [],
        Reason.LABEL_KIND,
    ),
    "empty value": (b"", [], Reason.EMPTY),
    "tombstone": (None, [], Reason.EMPTY),
    "empty batch value": (b"", BATCH, Reason.EMPTY),
    "zero-row batch": (batch_bytes(event_ids=[], keys=[], dense=b"", class_index=b""), BATCH,
                       Reason.EMPTY),
    "batch bytes sent as a Sample": (batch_bytes(), [], Reason.UNDECODABLE),
    "stream definition bytes": (
        stream_pb2.StreamDefinition(name="bin", dense_dim=3).SerializeToString(),
        [],
        Reason.UNKNOWN_STREAM,
    ),
    "sample bytes sent as a batch": (wire(), BATCH, Reason.UNDECODABLE),
}  # fmt: skip


@pytest.mark.parametrize(
    ("value", "headers", "reason"), CLEAR_REASONS.values(), ids=CLEAR_REASONS.keys()
)
def test_each_bad_input_has_a_clear_reason(
    value: bytes | None, headers: samples.Headers, reason: Reason
) -> None:
    [out] = route(value, headers)
    assert out.rejection is not None and out.rejection.reason == reason, out.rejection
    assert samples.header(out.headers, samples.DETAIL)


def test_bad_weights_and_negative_classes_in_a_batch_are_row_dead_letters() -> None:
    data = columns(5)
    data.weights[1] = np.nan
    data.weights[2] = np.inf
    data.labels[3] = -1
    train, *dead = route(samples.encode_batch(data), BATCH)
    assert train.rows == 2
    assert [d.rejection.reason for d in dead] == [  # type: ignore[union-attr]
        Reason.NON_FINITE,
        Reason.NON_FINITE,
        Reason.LABEL_OUT_OF_RANGE,
    ]


def test_a_batch_repeating_an_event_id_keeps_the_first() -> None:
    data = columns(3)
    data.event_ids[2] = data.event_ids[0]
    train, dead = route(samples.encode_batch(data), BATCH)
    assert train.rows == 2 and dead.rejection is not None
    assert dead.rejection.reason == Reason.DUPLICATE


# --- defect 3: a raw record is acked only after its outputs are acknowledged ---------------


def test_events_are_acked_in_order_only_after_their_deliveries_and_not_after_a_failure() -> None:
    async def scenario() -> tuple[list[str], BaseException | None]:
        loop = asyncio.get_running_loop()
        ok, failed, late = loop.create_future(), loop.create_future(), loop.create_future()
        ok.set_result("meta")
        failed.set_exception(RuntimeError("MessageSizeTooLarge"))
        late.set_result("meta")
        acked: list[str] = []

        async def ack(event: str) -> None:
            acked.append(event)

        error = await settle([("a", [ok]), ("b", []), ("c", [ok, failed]), ("d", [late])], ack)
        return acked, error

    acked, error = asyncio.run(scenario())
    assert acked == ["a", "b"]
    assert isinstance(error, RuntimeError) and "MessageSizeTooLarge" in str(error)


def test_settle_waits_for_pending_deliveries() -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        pending = loop.create_future()
        acked: list[str] = []

        async def ack(event: str) -> None:
            acked.append(event)

        task = asyncio.ensure_future(settle([("a", [pending])], ack))
        await asyncio.sleep(0.01)
        assert acked == []  # not before the broker answered
        pending.set_result("meta")
        assert await task is None
        return acked

    assert asyncio.run(scenario()) == ["a"]


# --- defect 6: the de-duplication memory is compact and bounded ---------------------------


def test_the_memory_answers_like_before() -> None:
    memory = PartitionMemory(window_s=10)
    for i in range(5000):
        memory.accept(f"id-{i}", i, at_s=100.0 + i / 1000)
    memory.accept("id-3", 999_999, at_s=106.0)  # the first one wins
    assert memory.accepted_at("id-3") == 3
    assert memory.accepted_at("id-4999") == 4999
    assert memory.accepted_at("nope") is None
    assert len(memory) == 5000
    assert memory.forget_before(112.0) == 2000  # accepted before 102.0
    assert memory.accepted_at("id-1999") is None and memory.accepted_at("id-2000") == 2000
    memory.accept("id-5", 7, at_s=113.0)  # forgotten, so accepted anew
    assert memory.accepted_at("id-5") == 7


def test_the_memory_is_capped_and_counts_the_cut() -> None:
    memory = PartitionMemory(window_s=3600, max_ids=1000)
    for i in range(3000):
        memory.accept(f"id-{i}", i, at_s=100.0 + i)
    assert len(memory) <= 1000
    assert memory.accepted_at("id-2999") == 2999
    assert memory.accepted_at("id-0") is None
    assert memory.cut_short >= 2000


def test_the_memory_costs_less_than_64_bytes_per_id() -> None:
    # A cost bound (not a speed threshold): the old memory used ~240 B per id.
    ids = [f"event-{i:012d}" for i in range(200_000)]
    tracemalloc.start()
    memory = PartitionMemory(window_s=3600)
    for i, event_id in enumerate(ids):
        memory.accept(event_id, i, at_s=100.0)
    memory.forget_before(100.0)  # settles the recent part into the compact arrays
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(memory) == len(ids)
    assert used / len(ids) < 64


# --- review finding 1: no input, whatever its headers or key, gives an output over the limit ---


def _garbage_headers(copies: int) -> samples.Headers:
    return [(samples.CONTENT_TYPE, b"application/x-garbage-type")] * copies


@pytest.mark.parametrize(
    ("value", "headers", "key"),
    [
        (wire(), [(samples.CONTENT_TYPE, f"type/{i:06d}".encode()) for i in range(1500)], b"k"),
        (b"\xff garbage", _garbage_headers(1000), b"k"),
        (wire(), [(samples.CONTENT_TYPE, b"t" * 3 * LIMIT)], b"k"),
        (wire(), [("x-trace", b"t" * 3 * LIMIT)], b"k"),
        (wire(), [], b"k" * 3 * LIMIT),
        (b"x" * 3 * LIMIT, [(samples.CONTENT_TYPE, b"c" * 5000)] * 10, b"k" * 5000),
    ],
    ids=["1500-content-types", "1000-copies", "huge-content-type", "huge-header", "huge-key",
         "all-of-it"],
)  # fmt: skip
def test_an_input_over_the_limit_in_headers_or_key_is_oversized_and_its_dead_letter_fits(
    value: bytes, headers: samples.Headers, key: bytes
) -> None:
    raw = RawRecord("raw", 0, 0, key, value, headers)
    [out] = router(max_bytes=LIMIT).route(raw, PartitionMemory(60))
    assert out.rejection is not None and out.rejection.reason == Reason.OVERSIZED
    assert _size(out) <= LIMIT
    assert samples.header(out.headers, samples.SOURCE) == b"raw:0:0"
    assert samples.header(out.headers, samples.REASON) == b"oversized"
    assert len([k for k, _ in out.headers if k == samples.CONTENT_TYPE]) <= 1


def test_a_dead_letter_pushed_over_the_limit_by_our_headers_keeps_one_content_type() -> None:
    # The input fits; the dead letter (its headers plus ours) does not: cut to fit.
    types = [(samples.CONTENT_TYPE, f"type/{i:06d}".encode()) for i in range(602)]
    raw = RawRecord("raw", 0, 0, b"k", b"\xff", types)
    assert record_size(raw.key, raw.value, raw.headers) <= LIMIT
    [out] = router(max_bytes=LIMIT).route(raw, PartitionMemory(60))
    assert out.rejection is not None and out.rejection.reason == Reason.UNSUPPORTED_SCHEMA
    assert _size(out) <= LIMIT
    assert len([k for k, _ in out.headers if k == samples.CONTENT_TYPE]) <= 1


# --- review finding 2: a partition that cannot be prepared holds up nothing else -----------


def test_waiting_for_a_preparation_gives_up_once_the_partition_is_not_wanted() -> None:
    async def scenario() -> tuple[object, bool]:
        wanted = True
        never = asyncio.get_running_loop().create_future()  # a recovery that hangs

        async def revoke_soon() -> None:
            nonlocal wanted
            await asyncio.sleep(0.05)
            wanted = False  # revoked, rebalancing or stopping

        revoking = asyncio.ensure_future(revoke_soon())
        result = await unless(never, lambda: wanted, poll_s=0.01)
        await revoking
        return result, never.cancelled()

    assert asyncio.run(scenario()) == (None, True)


def test_waiting_for_a_preparation_gives_its_result_or_its_error() -> None:
    async def fine() -> str:
        return "memory"

    async def broken() -> str:
        raise TimeoutError("recovery timed out")

    assert asyncio.run(unless(fine(), lambda: True)) == "memory"
    with pytest.raises(TimeoutError):
        asyncio.run(unless(broken(), lambda: True))


def test_a_held_partition_keeps_its_events_in_order_and_retries_with_bounded_backoff() -> None:
    now = [0.0]
    holds: Holds[str] = Holds(first_s=0.5, max_s=2.0, clock=lambda: now[0])
    assert 3 not in holds and holds.due() == []
    assert [holds.failed(3) for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    holds.keep(3, "a")
    holds.keep(3, "b")
    assert 3 in holds and holds.due() == []
    now[0] = 2.0
    assert holds.due() == [3]
    assert holds.take(3) == ["a", "b"] and 3 in holds  # routed while still held
    holds.keep(3, "c")
    assert holds.release(3) == ["c"] and 3 not in holds
    holds.failed(4)
    holds.keep(4, "x")
    assert holds.forget(4) == ["x"] and 4 not in holds  # revoked: redelivered to its owner
    assert holds.failed(4) == 0.5  # a new hold starts its backoff again


# --- review finding 3: growing the raw topic is an operator's opt-in ------------------------


class _Future:
    def result(self, timeout: float = 0) -> None:
        return None


class _Admin:
    """The admin calls `require_partition` makes, on topics of given partition counts."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.created: list[tuple[str, int]] = []

    def list_topics(self, timeout: float = 0) -> Any:
        topics = {name: SimpleNamespace(partitions=dict.fromkeys(range(n))) for name, n in
                  self.counts.items()}  # fmt: skip
        return SimpleNamespace(topics=topics)

    def create_partitions(self, new: list[Any], request_timeout: float = 0) -> dict[str, Any]:
        for item in new:
            self.created.append((item.topic, item.new_total_count))
            self.counts[item.topic] = item.new_total_count
        return {item.topic: _Future() for item in new}


def test_outputs_lacking_a_raw_partition_are_not_grown_unless_the_operator_opted_in() -> None:
    admin: Any = _Admin({"raw": 3, "train": 2, "dlq": 2})
    require_partition(admin, "raw", ("train", "dlq"), 1, grow=False)  # they have it
    with pytest.raises(ConfigError, match="INGESTION_GROW_OUTPUTS") as raised:
        require_partition(admin, "raw", ("train", "dlq"), 2, grow=False)
    assert "train" in str(raised.value) and "dlq" in str(raised.value)
    assert admin.created == []
    require_partition(admin, "raw", ("train", "dlq"), 2, grow=True)
    assert sorted(admin.created) == [("dlq", 3), ("train", 3)]
    assert IngestionSettings().grow_outputs is False


class _Producer:
    """aiokafka's producer as `_know_partition` sees it: metadata that a refresh updates."""

    def __init__(self, known: dict[str, set[int]], after_refresh: dict[str, set[int]]) -> None:
        self.known, self.after_refresh, self.refreshes = known, after_refresh, 0
        self.client = SimpleNamespace(
            cluster=SimpleNamespace(partitions_for_topic=lambda t: self.known.get(t)),
            force_metadata_update=self.refresh,
        )

    async def refresh(self) -> None:
        self.refreshes += 1
        self.known = self.after_refresh


def _app_with(producer: _Producer) -> Any:
    return SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer))


def test_the_producer_metadata_is_refreshed_when_it_lacks_the_partition() -> None:
    # Another worker (or an operator) added partition 2: this producer has not seen it yet.
    grown = {"train": {0, 1, 2}, "dlq": {0, 1, 2}}
    stale = _Producer({"train": {0, 1}, "dlq": {0, 1}}, grown)
    asyncio.run(_know_partition(_app_with(stale), ("train", "dlq"), 2))
    assert stale.refreshes == 1
    known = _Producer(grown, grown)
    asyncio.run(_know_partition(_app_with(known), ("train", "dlq"), 2))
    assert known.refreshes == 0
    never = _Producer({"train": {0, 1}}, {"train": {0, 1}})
    with pytest.raises(Unavailable, match="partition 2"):
        asyncio.run(_know_partition(_app_with(never), ("train", "dlq"), 2))


# --- review finding 4: an internal error leaves the memory as it was ------------------------


def test_an_internal_error_keeps_the_rows_routed_before_and_its_dead_letter_names_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = samples.encode_batch(columns(3))
    memory = PartitionMemory(60)
    memory.mark_routed_before(5, 0)  # an earlier run trained row 0 of offset 5, then crashed
    raw = RawRecord("raw", 0, 5, b"k", value, BATCH)

    def explode(*_: object) -> Output:
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(router_module, "_train_rows", explode)
    [dead] = router().route(raw, memory)
    assert dead.rejection is not None and dead.rejection.reason == Reason.INTERNAL_ERROR
    assert "rows [0] of this record were routed before" in dead.rejection.detail
    assert memory.routed_before(5, 0)  # untouched by the failed attempt
    monkeypatch.undo()
    [train] = router().route(raw, memory)  # redriven: row 0 is not trained twice
    assert train.rejection is None and train.rows == 2
    assert samples.header(train.headers, samples.ROWS) == np.asarray([1, 2], "<i4").tobytes()
    assert not memory.routed_before(5, 0)  # forgotten once the plan succeeded


# --- review finding 5: the cap holds when acceptance times tie -----------------------------


def test_the_memory_cap_holds_when_every_id_has_the_same_time() -> None:
    memory = PartitionMemory(window_s=3600, max_ids=1000)
    for i in range(50_000):  # all rows of one batch share `now`
        memory.accept(f"id-{i}", i, at_s=100.0)
    memory.forget_before(100.0)
    assert 1000 - 1000 // 16 <= len(memory) <= 1000  # evicted down to 1/16 below the cap
    assert memory.cut_short == 50_000 - len(memory)


def test_ids_past_their_window_are_not_counted_as_cut_short() -> None:
    memory = PartitionMemory(window_s=10, max_ids=1000)
    for i in range(1000):
        memory.accept(f"old-{i}", i, at_s=0.0)
    memory.forget_before(0.0)
    for i in range(1000):  # the old ones' window is over: forgetting them is no cut
        memory.accept(f"new-{i}", 1000 + i, at_s=100.0)
    memory.forget_before(100.0)
    assert len(memory) == 1000 and memory.accepted_at("new-0") == 1000
    assert memory.cut_short == 0

"""The trainer loop against a scripted consumer: streams, restores, errors, rebalances, batching.

The scripted consumer serves rebalances and error events from inside `poll`/`consume`, as
librdkafka does, at chosen calls; it sets `stop` once every record was delivered.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from confluent_kafka import KafkaError, TopicPartition
from prometheus_client import REGISTRY

from services.trainer import checkpoint
from services.trainer.batching import Batcher, StreamFilter
from services.trainer.config import ModelSpec, OptimizerSpec, TrainerConfig
from services.trainer.decode import decode
from services.trainer.learner import Learner
from services.trainer.loop import TrainerLoop
from services.trainer.progress import Every
from services.trainer.versions import VersionPublisher
from shared import samples
from shared.errors import StreamlearnError
from shared.fakes import FakeMessage
from streamlearn.v1 import sample_pb2

TOPIC = "train"
FEATURES = 3
CONFIG = TrainerConfig(
    model=ModelSpec(kind="logistic", features=FEATURES),
    optimizer=OptimizerSpec(name="sgd", lr=0.1),
)


def sample(i: int, stream: str = "demo") -> bytes:
    x = [np.sin(i), np.cos(i * 0.7), (i % 5) / 5]
    return sample_pb2.Sample(
        event_id=f"{stream}-{i}", stream=stream, dense=x, class_index=int(x[0] > 0)
    ).SerializeToString()


def batch_value(i: int, rows: int, stream: str = "demo") -> bytes:
    columns = samples.Columns(
        stream,
        [f"{stream}-b{i}-{r}" for r in range(rows)],
        ["k"] * rows,
        np.zeros(rows, np.int64),
        np.full((rows, FEATURES), 0.25, np.float32) + np.arange(rows)[:, None],
        np.arange(rows, dtype=np.int32) % 2,
        np.ones(rows, np.float32),
    )
    return samples.encode_batch(columns)


BATCH_HEADERS = [(samples.CONTENT_TYPE, samples.BATCH_TYPE)]


def partitions_of(*values: list[tuple[bytes, Any]]) -> dict[int, list[FakeMessage]]:
    """Partition p holds values[p] (each a (value, headers) pair) at offsets 0, 1, ..."""
    return {
        p: [FakeMessage(TOPIC, p, o, b"k", v, h) for o, (v, h) in enumerate(part)]
        for p, part in enumerate(values)
    }


def singles(n: int, stream: str = "demo", start: int = 0) -> list[tuple[bytes, Any]]:
    return [(sample(start + i, stream), None) for i in range(n)]


@dataclass
class FakeError:
    """A KafkaError as a consumer delivers it in an error event."""

    _code: int
    _fatal: bool = False

    def code(self) -> int:
        return self._code

    def fatal(self) -> bool:
        return self._fatal

    def retriable(self) -> bool:
        return False

    def name(self) -> str:
        return {KafkaError._PARTITION_EOF: "_PARTITION_EOF", KafkaError._FENCED: "_FENCED"}.get(
            self._code, "_TRANSPORT"
        )

    def str(self) -> str:
        return f"error {self._code}"


def error_event(code: int, fatal: bool = False) -> FakeMessage:
    return FakeMessage(TOPIC, 0, 0, None, None, None, FakeError(code, fatal))


Hook = Callable[["ScriptedConsumer"], list[FakeMessage]]


class ScriptedConsumer:
    """Delivers the partitions' records in a seeded random interleaving, `hooks` at given calls.

    A hook runs inside call number k (polls and consumes counted together, from 1), before
    records are picked, like a rebalance or an error served by librdkafka; what it returns
    is delivered first.
    """

    def __init__(
        self,
        log: dict[int, list[FakeMessage]],
        stop: threading.Event,
        seed: int = 0,
        hooks: dict[int, Hook] | None = None,
        stop_at_call: int | None = None,
    ) -> None:
        self.log = log
        self.stop = stop
        self.rng = random.Random(seed)
        self.hooks = hooks or {}
        self.stop_at_call = stop_at_call
        self.positions: dict[int, int] = {}
        self.calls = 0
        self.closed = False
        self._callbacks: tuple[Any, Any] | None = None
        self._on_lost: Any = None

    def subscribe(
        self, topics: list[str], on_assign: Any, on_revoke: Any, on_lost: Any = None
    ) -> None:
        self._callbacks = (on_assign, on_revoke)
        self._on_lost = on_lost

    def lose(self) -> list[FakeMessage]:
        """Every partition lost, as when fenced: confluent-kafka calls on_lost, or on_revoke
        when none was given."""
        assert self._callbacks is not None
        owned = [TopicPartition(TOPIC, p) for p in sorted(self.positions)]
        (self._on_lost or self._callbacks[1])(self, owned)
        self.positions.clear()
        return []

    def assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.positions[tp.partition] = max(tp.offset, 0)  # OFFSET_BEGINNING is negative

    def rebalance(self) -> list[FakeMessage]:
        """Revoke every partition, then assign them all again (eager protocol)."""
        assert self._callbacks is not None
        on_assign, on_revoke = self._callbacks
        owned = [TopicPartition(TOPIC, p) for p in sorted(self.positions)]
        on_revoke(self, owned)
        self.positions.clear()
        on_assign(self, [TopicPartition(TOPIC, p) for p in sorted(self.log)])
        return []

    def poll(self, timeout: float = -1) -> FakeMessage | None:
        got = self._call(1)
        return got[0] if got else None

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        return self._call(num_messages)

    def _call(self, n: int) -> list[FakeMessage]:
        self.calls += 1
        if self._callbacks is not None and not self.positions and self.calls == 1:
            self._callbacks[0](self, [TopicPartition(TOPIC, p) for p in sorted(self.log)])
        out = list(self.hooks[self.calls](self)) if self.calls in self.hooks else []
        while len(out) < n:
            left = [p for p in sorted(self.positions) if self.positions[p] < len(self.log[p])]
            if not left:
                break
            p = self.rng.choice(left)
            take = min(self.rng.randint(1, 3), n - len(out))
            at = self.positions[p]
            out += self.log[p][at : at + take]
            self.positions[p] = at + len(self.log[p][at : at + take])
        if self.stop_at_call is not None and self.calls >= self.stop_at_call:
            self.stop.set()
        elif not out and self.calls not in self.hooks:
            self.stop.set()  # everything delivered
        return out[:n] if n == 1 else out

    def commit(self, offsets: Any = None, asynchronous: bool = True) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@dataclass
class Registered:
    version: int


class FakeRegistry:
    """Counts registered versions."""

    def __init__(self) -> None:
        self.versions = 0

    def register(self, model: str, data: bytes, lineage: Any = None) -> Registered:
        self.versions += 1
        return Registered(self.versions)


def make_loop(
    consumer: ScriptedConsumer,
    path: Path,
    config: TrainerConfig = CONFIG,
    registry: FakeRegistry | None = None,
    version_events: int = 10**9,
    fetch: int = 7,
) -> TrainerLoop:
    learner = Learner(config, "cpu")
    publisher = None
    if registry is not None:
        publisher = VersionPublisher(registry, "demo", "demo", "t-0", learner)  # type: ignore[arg-type]
    return TrainerLoop(
        learner,
        consumer,  # type: ignore[arg-type]
        TOPIC,
        path,
        publisher,
        checkpoint_every=Every(10**9, 10**9),
        version_every=Every(version_events, 10**9),
        fetch=fetch,
        streams={"demo"},
    )


def run(loop: TrainerLoop, stop: threading.Event) -> None:
    loop.run(stop)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def reference(values: list[bytes], config: TrainerConfig = CONFIG) -> Learner:
    learner = Learner(config, "cpu")
    messages = [FakeMessage(TOPIC, 0, i, b"k", v) for i, v in enumerate(values)]
    batch, _ = decode(messages, config.task, FEATURES)  # type: ignore[arg-type]
    learner.learn(batch)
    return learner


def assert_same_parameters(ours: Learner, theirs: Learner) -> None:
    for a, b in zip(ours.network.parameters(), theirs.network.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


# --- 1. a trainer learns only its stream ---------------------------------------------------


def test_records_of_other_streams_are_skipped_counted_and_never_learned(tmp_path: Path) -> None:
    mixed: list[tuple[bytes, Any]] = []
    for i in range(30):
        mixed.append((sample(i, "demo"), None))
        if i % 3 == 0:
            mixed.append((sample(i, "other"), None))
    mixed.append((batch_value(1, 4, "other"), BATCH_HEADERS))
    mixed += singles(5, "other", start=100)  # the partition ends with skipped records
    before = metric("streamlearn_trainer_records_skipped_stream_total", stream="other")
    stop = threading.Event()
    loop = make_loop(ScriptedConsumer(partitions_of(mixed), stop), tmp_path / "c.ckpt")
    run(loop, stop)
    assert (loop.learner.applied, loop.learner.skipped) == (30, 0)
    assert_same_parameters(loop.learner, reference([sample(i) for i in range(30)]))
    skipped = metric("streamlearn_trainer_records_skipped_stream_total", stream="other")
    assert skipped - before == 10 + 1 + 5
    # Skipped records are passed over: a restart does not read them again.
    assert loop.positions.next == {f"{TOPIC}:0": len(mixed)}


def test_a_trainer_that_never_saw_its_stream_does_not_pass_over_what_it_skipped(
    tmp_path: Path,
) -> None:
    stop = threading.Event()
    others = singles(12, "other")  # TRAINER_STREAM misnamed: nothing on the topic is ours
    loop = make_loop(ScriptedConsumer(partitions_of(others), stop), tmp_path / "c.ckpt")
    run(loop, stop)
    assert loop.learner.applied == 0
    assert loop.positions.next == {}  # fixed and restarted, it reads them all again


def test_a_batch_record_of_another_stream_is_skipped_and_one_of_ours_is_learned() -> None:
    stream = [
        FakeMessage(TOPIC, 0, 0, b"k", batch_value(0, 3, "other"), BATCH_HEADERS),
        FakeMessage(TOPIC, 0, 1, b"k", batch_value(1, 2, "demo"), BATCH_HEADERS),
        FakeMessage(TOPIC, 0, 2, b"k", sample(2, "demo")),
        FakeMessage(TOPIC, 0, 3, b"k", sample(3, "")),  # no stream: not ours either
    ]
    skipped: dict[str, int] = {}
    batcher = Batcher(1, StreamFilter({"demo"}, lambda s, n: skipped.update({s: n})))
    segments = batcher.add(stream)  # type: ignore[arg-type]
    assert [[m.offset() for m in s] for s in segments] == [[1, 2]]
    assert skipped == {"other": 1, "": 1}
    assert batcher.settled() == {f"{TOPIC}:0": 4}


def test_other_streams_are_logged_once_per_stream(caplog: pytest.LogCaptureFixture) -> None:
    batcher = Batcher(1, StreamFilter({"demo"}))
    with caplog.at_level(logging.WARNING):
        for offset in range(5):
            batcher.add([FakeMessage(TOPIC, 0, offset, b"k", sample(offset, "x"))])  # type: ignore[list-item]
        batcher.add([FakeMessage(TOPIC, 0, 9, b"k", sample(9, "y"))])  # type: ignore[list-item]
    streams = [r.stream for r in caplog.records if "does not learn" in r.getMessage()]  # type: ignore[attr-defined]
    assert streams == ["x", "y"]


# --- 2. a version falls due with nothing learned since the restore ---------------------------


@pytest.mark.parametrize(
    "tail",
    [[(b"\xff\xff\xff", None)], [(b"\xff\xff\xff", None), (sample(50, "other"), None)]],
    ids=["undecodable", "undecodable-and-another-stream"],
)
def test_a_version_due_after_a_restore_with_nothing_learned_publishes_nothing(
    tmp_path: Path, tail: list[tuple[bytes, Any]]
) -> None:
    path, registry = tmp_path / "c.ckpt", FakeRegistry()
    stop = threading.Event()
    first = make_loop(
        ScriptedConsumer(partitions_of(singles(6)), stop), path, registry=registry, version_events=1
    )
    run(first, stop)
    assert registry.versions >= 1
    published = registry.versions
    # After the restore only unusable records arrive: they count, but nothing is learned.
    rest = [*singles(6), *tail]
    stop = threading.Event()
    again = make_loop(
        ScriptedConsumer(partitions_of(rest), stop), path, registry=registry, version_events=1
    )
    run(again, stop)  # no "nothing learned" crash
    assert again.learner.skipped == 1 and registry.versions == published


# --- 3. consumer error events ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "fatal"),
    # A fenced consumer delivers _FATAL with fatal() false (confluent-kafka-python #869).
    [(KafkaError._FENCED, True), (KafkaError._FATAL, False)],
)
def test_a_fatal_consumer_error_stops_the_trainer_without_writing_the_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, code: int, fatal: bool
) -> None:
    path = tmp_path / "c.ckpt"
    stop = threading.Event()
    fenced: Hook = lambda _: [error_event(code, fatal=fatal)]  # noqa: E731
    consumer = ScriptedConsumer(partitions_of(singles(40)), stop, hooks={5: fenced})
    loop = make_loop(consumer, path)
    with caplog.at_level(logging.ERROR), pytest.raises(StreamlearnError, match="fatal"):
        run(loop, stop)
    assert 0 < loop.learner.applied < 40  # it learned, then stopped at the error
    assert checkpoint.load(path) is None  # a fenced instance must not write the checkpoint
    assert consumer.closed
    assert any("fatal consumer error" in r.getMessage() for r in caplog.records)


def test_partitions_lost_when_fenced_are_not_checkpointed(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    stop = threading.Event()

    def fenced(consumer: ScriptedConsumer) -> list[FakeMessage]:
        consumer.lose()  # librdkafka takes the partitions away before reporting the error
        return [error_event(KafkaError._FATAL, fatal=False)]

    consumer = ScriptedConsumer(partitions_of(singles(40)), stop, hooks={5: fenced})
    loop = make_loop(consumer, path)
    with pytest.raises(StreamlearnError, match="fatal"):
        run(loop, stop)
    assert loop.learner.applied > 0
    assert checkpoint.load(path) is None  # the partitions' new owner keeps the live one


def test_non_fatal_consumer_errors_are_counted_and_logged_rate_limited(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    transport: Hook = lambda _: [error_event(KafkaError._TRANSPORT)]  # noqa: E731
    eof: Hook = lambda _: [error_event(KafkaError._PARTITION_EOF)]  # noqa: E731
    hooks = {2: transport, 3: transport, 4: eof, 5: transport}
    before = metric("streamlearn_trainer_consumer_errors_total", error="_TRANSPORT")
    eof_before = metric("streamlearn_trainer_consumer_errors_total", error="_PARTITION_EOF")
    stop = threading.Event()
    loop = make_loop(
        ScriptedConsumer(partitions_of(singles(20)), stop, hooks=hooks), tmp_path / "c"
    )
    with caplog.at_level(logging.WARNING):
        run(loop, stop)
    assert loop.learner.applied == 20  # errors do not stop learning
    after = metric("streamlearn_trainer_consumer_errors_total", error="_TRANSPORT")
    assert after - before == 3
    assert metric("streamlearn_trainer_consumer_errors_total", error="_PARTITION_EOF") == eof_before
    logged = [r for r in caplog.records if r.getMessage() == "consumer error"]
    assert len(logged) == 1  # three within the rate limit: one line


# --- 4. a rebalance inside a fetch --------------------------------------------------------------


def test_a_rebalance_inside_a_fetch_does_not_apply_a_record_twice(tmp_path: Path) -> None:
    stop = threading.Event()
    # Call 4 is the `consume` after the second `poll`: the polled record is in hand when
    # the rebalance re-positions its partition at the checkpoint, before that record.
    consumer = ScriptedConsumer(
        partitions_of(singles(30), singles(30, start=30)),
        stop,
        hooks={4: ScriptedConsumer.rebalance, 9: ScriptedConsumer.rebalance},
    )
    loop = make_loop(consumer, tmp_path / "c.ckpt")
    run(loop, stop)
    assert (loop.learner.applied, loop.learner.skipped) == (60, 0)
    assert loop.positions.next == {f"{TOPIC}:0": 30, f"{TOPIC}:1": 30}


def test_held_back_records_of_a_revoked_partition_are_dropped(tmp_path: Path) -> None:
    stop = threading.Event()
    consumer = ScriptedConsumer(
        partitions_of(singles(21), singles(21, start=21)),
        stop,
        seed=3,
        hooks={k: ScriptedConsumer.rebalance for k in (3, 6, 10)},
    )
    loop = make_loop(
        consumer, tmp_path / "c.ckpt", config=CONFIG.model_copy(update={"batch_size": 4})
    )
    run(loop, stop)
    # 21 = 5 mini-batches of 4 + 1 held back, per partition; none applied twice.
    assert loop.learner.applied == 40
    assert loop.positions.next == {f"{TOPIC}:0": 20, f"{TOPIC}:1": 20}


# --- 5. mini-batches with several partitions ----------------------------------------------------


Row = tuple[int, int, int]  # partition, offset, row of the record


def rows_of(msg: Any) -> list[Row]:
    count = 1
    if samples.is_batch(samples.headers_of(msg)):
        count = len(samples.decode_batch(sample_pb2.SampleBatch.FromString(msg.value())))
    return [(msg.partition(), msg.offset(), r) for r in range(count)]


def segments_of(loop: TrainerLoop) -> list[tuple[Row, ...]]:
    """Record every mini-batch the loop learns, as its rows: the learner steps through a
    segment `batch_size` rows at a time."""
    seen: list[tuple[Row, ...]] = []
    apply, size = loop._apply, loop.learner.config.batch_size

    def recording(applying: list[Any]) -> None:
        rows = [row for m in applying for row in rows_of(m)]
        seen.extend(tuple(rows[i : i + size]) for i in range(0, len(rows), size))
        apply(applying)

    loop._apply = recording  # type: ignore[method-assign]
    return seen


def test_mini_batches_are_cut_per_partition_whatever_the_interleaving(tmp_path: Path) -> None:
    config = CONFIG.model_copy(update={"batch_size": 4})
    data = partitions_of(
        singles(22), [*singles(9, start=50), (batch_value(2, 3), BATCH_HEADERS), *singles(7)]
    )
    runs = []
    for seed, fetch in [(1, 5), (2, 11), (3, 2)]:
        stop = threading.Event()
        loop = make_loop(
            ScriptedConsumer(data, stop, seed=seed), tmp_path / f"{seed}", config, fetch=fetch
        )
        seen = segments_of(loop)
        run(loop, stop)
        runs.append(seen)
    for seen in runs:
        assert all(len({p for p, _, _ in s}) == 1 for s in seen), seen  # never mixed
    assert sorted(runs[0]) == sorted(runs[1]) == sorted(runs[2])


def test_a_restart_repeats_the_mini_batches_of_an_uninterrupted_run(tmp_path: Path) -> None:
    config = CONFIG.model_copy(update={"batch_size": 3})
    data = partitions_of(singles(25), singles(20, start=25), singles(16, start=45))
    stop = threading.Event()
    whole = make_loop(ScriptedConsumer(data, stop, seed=4), tmp_path / "whole", config)
    uninterrupted = segments_of(whole)
    run(whole, stop)
    path = tmp_path / "resumed"
    stop = threading.Event()
    first = make_loop(ScriptedConsumer(data, stop, seed=5, stop_at_call=7), path, config)
    resumed = segments_of(first)
    run(first, stop)  # stops mid-stream and checkpoints
    stop = threading.Event()
    second = make_loop(ScriptedConsumer(data, stop, seed=6), path, config)
    after_restart = segments_of(second)
    run(second, stop)
    assert 0 < len(resumed) < len(uninterrupted)  # it did stop mid-stream
    assert sorted(resumed + after_restart) == sorted(uninterrupted)
    assert second.learner.applied == whole.learner.applied == 24 + 18 + 15


def test_a_stream_name_that_is_not_utf8_is_left_to_the_guard_not_counted_as_a_stream() -> None:
    value = bytes.fromhex("120265302a046465e66f32080000803f000000404801")  # stream b"de\xe6o"
    skipped: list[str] = []
    kept = StreamFilter({"demo"}, lambda s, n: skipped.append(s)).keep(
        [FakeMessage(TOPIC, 0, 0, b"k", value)]  # type: ignore[list-item]
    )
    assert kept == [True] and skipped == []

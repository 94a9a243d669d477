"""The joiner service on the real broker: exact outcomes, and exactly once through SIGKILLs.

The joiner runs as `python -m services.joiner` in a subprocess; outputs are read back with
`isolation.level=read_committed`, so only what its transactions committed counts.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from services.joiner.outputs import OUTCOME
from shared import samples
from shared.feedback import (
    Feedback,
    Label,
    PredictionRecord,
    encode_feedback,
    encode_prediction,
)
from shared.kafka.config import consumer_config, producer_config
from shared.settings import KafkaSettings
from shared.streams import publish_definition
from streamlearn.v1 import sample_pb2, stream_pb2
from tests.helpers import wait_until

PARTITIONS = 3
KIND = stream_pb2.LabelKind


def define(kafka: KafkaSettings, topic: str) -> None:
    clicks = stream_pb2.StreamDefinition(
        name="clicks", dense_dim=2, label_kind=KIND.LABEL_KIND_BINARY
    )
    clicks.join.window_s, clicks.join.negative_after_s = 4.0, 3.0
    ratings = stream_pb2.StreamDefinition(
        name="ratings", dense_dim=2, label_kind=KIND.LABEL_KIND_REGRESSION
    )
    ratings.join.window_s = 3.0
    for definition in (clicks, ratings):
        publish_definition(kafka, topic, definition)


class Topics:
    def __init__(self, make_topic: Callable[..., str]) -> None:
        self.predictions = make_topic(PARTITIONS, "pred")
        self.feedback = make_topic(PARTITIONS, "fb")
        self.train = make_topic(PARTITIONS, "train")
        self.dlq = make_topic(PARTITIONS, "dlq")
        self.streams = make_topic(1, "streams")
        self.state = f"{self.predictions}.state"  # created (compacted) by the joiner


def joiner_env(kafka: KafkaSettings, topics: Topics, tmp: Path) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {
        "JOINER_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "JOINER_TOPICS__PREDICTIONS": topics.predictions,
        "JOINER_TOPICS__FEEDBACK": topics.feedback,
        "JOINER_TOPICS__TRAIN": topics.train,
        "JOINER_TOPICS__DLQ": topics.dlq,
        "JOINER_TOPICS__STREAMS": topics.streams,
        "JOINER_TOPICS__JOINER_STATE": topics.state,
        "JOINER_TOPICS__PARTITIONS": str(PARTITIONS),
        "JOINER_CONSUMER_GROUP": f"joiner-{tag}",
        "JOINER_TRANSACTIONAL_ID": f"joiner-{tag}",
        "JOINER_GRPC_PORT": "0",
        "JOINER_METRICS_PORT": "0",
        "JOINER_STATE_DIR": str(tmp),
        "JOINER_WINDOW_S": "3",
        "JOINER_RETENTION_S": "600",
        "JOINER_COMMIT_INTERVAL_MS": "50",
        "JOINER_CLOCK_TICK_MS": "100",
        "JOINER_SESSION_TIMEOUT_MS": "6000",
    }


@contextmanager
def running(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A joiner process, ready (every partition restored); killed if a check left it up."""
    starts = _restored(log)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.joiner"],
            env=os.environ | env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: _restored(log) >= starts + PARTITIONS or process.poll() is not None, 60)
        assert process.poll() is None, log.read_text()[-3000:]
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def _restored(log: Path) -> int:
    return log.read_text().count("partition restored") if log.exists() else 0


def partition_of(event_id: str) -> int:
    return zlib.crc32(event_id.encode()) % PARTITIONS


class Sender:
    """Writes predictions and feedback co-partitioned by event id."""

    def __init__(self, kafka: KafkaSettings, topics: Topics) -> None:
        self.producer = Producer(producer_config(kafka))
        self.topics = topics

    def prediction(self, event_id: str, stream: str, ts: int) -> bytes:
        record = PredictionRecord(event_id, stream, "m", 1, (1.0, 2.0), (), (("p", (0.5,)),), ts)
        value = encode_prediction(record)
        self.raw(self.topics.predictions, event_id, value)
        return value

    def feedback(self, event_id: str, stream: str, label: Label, at: int) -> None:
        value = encode_feedback(Feedback(event_id, stream, label, at))
        self.raw(self.topics.feedback, event_id, value)

    def raw(self, topic: str, key: str, value: bytes | None) -> None:
        self.producer.produce(topic, value, key.encode(), partition=partition_of(key))
        self.producer.poll(0)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


def committed(kafka: KafkaSettings, topic: str) -> list[Message]:
    """Every committed record of `topic`: read `read_committed` to each partition's end (EOF).

    (Offsets cannot tell the end: transaction markers take offsets and are never delivered.)
    """
    config = consumer_config(
        kafka,
        f"reader-{uuid.uuid4().hex[:8]}",
        enable_partition_eof=True,
        isolation_level="read_committed",
    )
    consumer = Consumer(config)
    out: list[Message] = []
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        pending = set(range(PARTITIONS))
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                error = msg.error()
                if error is None:
                    out.append(msg)
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition() or 0)
        assert not pending, f"{topic}: partitions {pending} not read to their end"
    finally:
        consumer.close()
    return out


def now_ms() -> int:
    return int(time.time() * 1000)


def reasons(messages: list[Message]) -> Counter[str]:
    return Counter(
        (samples.header(samples.headers_of(m), samples.REASON) or b"").decode() for m in messages
    )


def decoded(messages: list[Message]) -> list[sample_pb2.Sample]:
    return [sample_pb2.Sample.FromString(m.value() or b"") for m in messages]


def test_outcomes_are_exact_and_samples_are_written_as_ingestion_writes_them(
    kafka: KafkaSettings, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topics = Topics(make_topic)
    define(kafka, topics.streams)
    env = joiner_env(kafka, topics, tmp_path)
    with running(env, tmp_path / "joiner.log") as process:
        send = Sender(kafka, topics)
        t = now_ms()
        one, zero, bad = Label.class_index(1), Label.class_index(0), Label.class_index(5)
        for i in range(10):  # feedback before its prediction: waits, then joins
            send.feedback(f"early{i}", "clicks", one, t + 100)
        send.flush()
        for i in range(10):
            send.prediction(f"early{i}", "clicks", t)
            send.prediction(f"click{i}", "clicks", t)
            send.prediction(f"rate{i}", "ratings", t)
            send.prediction(f"silent{i}", "clicks", t)  # negatives
        for i in range(5):
            send.prediction(f"late{i}", "clicks", t)  # feedback after the close: late
            send.prediction(f"quiet{i}", "ratings", t)  # no negatives: expired
        for i in range(3):
            send.prediction(f"bad{i}", "clicks", t)  # class 5 on a binary stream
        send.prediction("click0", "clicks", t)  # duplicates
        send.prediction("click1", "clicks", t)
        for i in range(10):
            send.feedback(f"click{i}", "clicks", zero if i % 2 else one, t + 200)
            send.feedback(f"rate{i}", "ratings", Label.regression(i / 2), t + 200)
        for i in range(5):
            send.feedback(f"late{i}", "clicks", one, t + 60_000)
        for i in range(3):
            send.feedback(f"bad{i}", "clicks", bad, t + 100)
        for i in range(4):
            send.feedback(f"ghost{i}", "clicks", one, t)  # no prediction: unknown
        for i in range(3):
            send.raw(topics.predictions, f"junk{i}", b"\xff\xfe not protobuf")
        send.raw(topics.feedback, "junk-fb", b"\x08")  # a truncated varint
        send.raw(topics.feedback, "junk-fb2", b"\x0a\x05ab")  # a truncated string
        send.raw(topics.feedback, "tombstone", None)
        send.flush()

        train_expected = 20 + 10 + 10 + 5  # joined clicks + ratings, negatives (silent, late)
        dlq_expected = 5 + 5 + 4 + 5 + 1 + 3 + 2
        wait_until(
            lambda: (
                len(committed(kafka, topics.train)) >= train_expected
                and len(committed(kafka, topics.dlq)) >= dlq_expected
            ),
            40,
            pause=0.5,
        )
        time.sleep(1.0)  # a duplicate written late would be seen, not missed
        train, dlq = committed(kafka, topics.train), committed(kafka, topics.dlq)
        assert process.poll() is None

    assert len(train) == train_expected, Counter(m.key() for m in train)
    outcomes = Counter(
        (s.stream, s.attributes[OUTCOME], s.WhichOneof("label")) for s in decoded(train)
    )
    assert outcomes == {
        ("clicks", "joined", "class_index"): 20,
        ("ratings", "joined", "regression"): 10,
        ("clicks", "negative", "class_index"): 15,
    }
    by_id = {s.event_id: s for s in decoded(train)}
    assert by_id["click0"].class_index == 1 and by_id["click1"].class_index == 0
    assert by_id["silent3"].class_index == 0 and by_id["rate4"].regression == 2.0
    assert by_id["early2"].attributes["streamlearn-label-delay-ms"] == "100"
    for msg in train:  # the trainer's wire format: one Sample, keyed by its event id
        headers = samples.headers_of(msg)
        assert samples.header(headers, samples.CONTENT_TYPE) == samples.SAMPLE_TYPE
        assert samples.header(headers, samples.EVENT_ID) == msg.key()
    assert reasons(dlq) == {
        "late": 5,
        "expired": 5,
        "unknown": 4,
        "undecodable": 5,
        "empty": 1,
        "label_out_of_range": 3,
        "duplicate_prediction": 2,
    }
    for msg in dlq:
        detail = samples.header(samples.headers_of(msg), samples.DETAIL)
        assert detail, msg.headers()


def test_sigkill_at_random_moments_every_prediction_ends_exactly_once(
    kafka: KafkaSettings, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topics = Topics(make_topic)
    define(kafka, topics.streams)
    env = joiner_env(kafka, topics, tmp_path)
    log = tmp_path / "joiner.log"
    rng = random.Random(16)
    send = Sender(kafka, topics)
    predictions: set[str] = set()
    kills = 3
    for round_ in range(kills + 1):
        with running(env, log) as process:
            for i in range(60):
                event_id = f"r{round_}-{i}"
                stream = "clicks" if i % 3 else "ratings"
                t = now_ms()
                predictions.add(event_id)
                send.prediction(event_id, stream, t)
                if i % 2:
                    label = Label.class_index(1) if stream == "clicks" else Label.regression(1.0)
                    send.feedback(event_id, stream, label, t + rng.randint(0, 500))
                if i % 20 == 0:
                    send.flush()
                    time.sleep(rng.uniform(0.05, 0.3))
            send.flush()
            if round_ < kills:
                time.sleep(rng.uniform(0.0, 2.0))
                process.send_signal(signal.SIGKILL)
                process.wait(30)
                continue
            # The last run: let every window close, then stop cleanly.
            wait_until(lambda: len(_endings(kafka, topics)) >= len(predictions), 60, pause=1.0)
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0, log.read_text()[-3000:]

    endings = _endings(kafka, topics)
    assert Counter(endings) == Counter({event_id: 1 for event_id in predictions}), [
        e for e, n in Counter(endings).items() if n > 1
    ]


def _endings(kafka: KafkaSettings, topics: Topics) -> list[str]:
    """The event id of every committed ending: a joined or negative sample, an expiry."""
    train, dlq = committed(kafka, topics.train), committed(kafka, topics.dlq)
    ids = [s.event_id for s in decoded(train)]
    for msg in dlq:
        reason = samples.header(samples.headers_of(msg), samples.REASON)
        if reason in (b"expired", b"overflow"):
            ids.append((msg.key() or b"").decode())
    return ids

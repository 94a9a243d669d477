"""Learning from traffic, end to end, as `streamlearn up` runs it on the real broker.

Requests to inference (each with its own id) are logged to the prediction log; a simulated
user's feedback (some of it sent before its request) goes through the SDK; the joiner pairs
them in transactions into training samples (silence after 3 s: a negative); the trainer
learns them and a new version is served. Every logged prediction must end exactly once,
also across a SIGKILLed joiner that the supervisor restarts mid-stream.
"""

from __future__ import annotations

import heapq
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest
from confluent_kafka import Message

from services.joiner.outputs import LABEL_DELAY_MS, MODEL, OUTCOME, VERSION
from shared import samples
from shared.clients.registry import RegistryClient
from shared.settings import KafkaSettings, TopicSettings
from shared.streams import publish_definition
from streamlearn.client import SampleProducer
from streamlearn.client.datasets import Synthetic
from streamlearn.system.clicks import SimulatedUser
from streamlearn.system.control import LocalSystem
from streamlearn.system.feed import FeedbackFeed
from streamlearn.system.traffic import TrafficClient
from streamlearn.system.watch import JoinFollower
from streamlearn.v1 import sample_pb2
from tests.e2e.system import service_state
from tests.helpers import version_numbers, wait_until
from tests.integration.test_joiner_service import committed

STREAM = "e2e"
FEATURES = 8
DATASET = Synthetic("binary", features=FEATURES, seed=11)
BOOTSTRAP = 300  # labelled samples through the SDK: the trainer's first version
WINDOW_S, NEGATIVE_AFTER_S = 5.0, 3.0
MAX_DELAY_S = 1.0  # feedback within 1 s of its answer: well inside the 3 s before a negative
# Dead-letter reasons that end a prediction (the others end a feedback record).
PREDICTION_ENDS = {"expired", "overflow"}
FEEDBACK_ENDS = {"late", "unknown"}


@pytest.fixture
def system_overrides() -> dict[str, str]:
    """Inference logs its predictions; the joiner commits and ticks often (a short test)."""
    return {
        "INFERENCE_LOG_PREDICTIONS": "true",
        "JOINER_COMMIT_INTERVAL_MS": "50",
        "JOINER_CLOCK_TICK_MS": "100",
        "JOINER_SESSION_TIMEOUT_MS": "6000",
    }


@dataclass
class Traffic:
    """One round of requests and the feedback the simulated user gives on them."""

    ids: list[str]
    labels: dict[str, int]  # the feedback each id gets (the rest stays silent)
    early: set[str]  # feedback sent before its request
    versions: set[int] = field(default_factory=set)
    scores: dict[str, float] = field(default_factory=dict)  # what inference answered


def test_predictions_and_feedback_are_joined_exactly_once_and_learned(
    kafka: KafkaSettings, system: tuple[LocalSystem, TopicSettings]
) -> None:
    local, topics = system
    address = {s.name: s.address for s in local.plan()}
    definition = DATASET.definition(STREAM)
    definition.join.window_s, definition.join.negative_after_s = WINDOW_S, NEGATIVE_AFTER_S
    publish_definition(kafka, topics.streams, definition)
    x, y = _stream(BOOTSTRAP + 600)
    registry = RegistryClient(address["registry"])
    producer = SampleProducer(
        kafka=kafka, topic=topics.raw, feedback_topic=topics.feedback, stream=STREAM
    )
    with producer, TrafficClient(address["inference"]) as client:
        producer.send_columns(x[:BOOTSTRAP], y[:BOOTSTRAP], keys=["boot"] * BOOTSTRAP)
        producer.flush()
        wait_until(lambda: version_numbers(registry, STREAM) != [], 120, pause=0.2)
        first = min(version_numbers(registry, STREAM))
        wait_until(lambda: client.served().get(STREAM, 0) > 0, 60, pause=0.2)
        rng = random.Random(16)

        # A quiet round: every outcome is known in advance.
        calm = _plan("calm", range(BOOTSTRAP, BOOTSTRAP + 150), y, rng)
        _send(client, producer, calm, x, rng)
        wait_until(lambda: _ended(kafka, topics, calm.ids), 30, pause=0.5)
        _check_calm(kafka, topics, calm, first)

        # A round through a SIGKILLed joiner: outcomes may shift (windows close in wall
        # time while it is down), but each prediction and feedback still ends exactly once.
        killed = _plan("kill", range(BOOTSTRAP + 150, BOOTSTRAP + 600), y, rng)
        joiner_pid = service_state(local, "joiner")["pid"]
        assert isinstance(joiner_pid, int)
        _send(client, producer, killed, x, rng, kill_after=150, pid=joiner_pid)
        wait_until(lambda: service_state(local, "joiner")["restarts"] == 1, 60, pause=0.2)
        wait_until(lambda: _ended(kafka, topics, calm.ids + killed.ids), 60, pause=0.5)
        time.sleep(1.0)  # a sample written twice would be seen, not missed
        _check_exactly_once(kafka, topics, [calm, killed])

        # The trainer learned every joined sample: a newer version, served.
        learned = BOOTSTRAP + len(_joiner_samples(kafka, topics))
        wait_until(
            lambda: registry.get_version(STREAM).lineage.events_seen >= learned, 60, pause=0.2
        )
        newest = registry.get_version(STREAM)
        assert newest.lineage.events_seen == learned  # nothing lost, nothing twice
        # Every joiner sample carried its served score, and the trainer scored each once.
        assert newest.lineage.metrics["served_events"] == learned - BOOTSTRAP
        assert 0.0 <= newest.lineage.metrics["served_accuracy"] <= 1.0
        assert newest.lineage.stream == STREAM and newest.version > first
        wait_until(lambda: client.served()[STREAM] >= newest.version, 60, pause=0.2)
        answer = client.predict_logged(STREAM, x[:1], "after")
        assert answer.version >= newest.version and answer.event_ids == ("after",)
    registry.close()
    assert service_state(local, "joiner")["healthy"]


def _stream(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = zip(*DATASET.chunks(n), strict=True)
    return np.concatenate(x), np.concatenate(y)


def _plan(name: str, rows: range, y: np.ndarray, rng: random.Random) -> Traffic:
    """Feedback (the true label) for two rows in three; one feedback in nine comes first."""
    ids = [f"{name}-{i}" for i in rows]
    labels = {ids[n]: int(y[i]) for n, i in enumerate(rows) if n % 3}
    early = {event_id for n, event_id in enumerate(ids) if n % 9 == 1}
    assert early <= set(labels)
    return Traffic(ids, labels, early)


def _send(
    client: TrafficClient,
    producer: SampleProducer,
    traffic: Traffic,
    x: np.ndarray,
    rng: random.Random,
    kill_after: int = -1,
    pid: int = 0,
) -> None:
    """Each request alone, with its id; feedback after a random delay, as a user gives it."""
    due: list[tuple[float, str]] = []
    first_row = int(traffic.ids[0].rsplit("-", 1)[1])
    for n, event_id in enumerate(traffic.ids):
        if n == kill_after:
            os.kill(pid, signal.SIGKILL)  # mid-stream: the supervisor restarts it
        if event_id in traffic.early:
            producer.feedback(event_id, STREAM, label=traffic.labels[event_id])
        row = first_row + n
        answer = client.predict_logged(STREAM, x[row : row + 1], event_id)
        assert answer.event_ids == (event_id,)
        traffic.versions.add(answer.version)
        traffic.scores[event_id] = float(answer.scores.reshape(-1)[0])
        if event_id in traffic.labels and event_id not in traffic.early:
            heapq.heappush(due, (time.monotonic() + rng.uniform(0.0, MAX_DELAY_S), event_id))
        _give(producer, traffic, due, time.monotonic())
        time.sleep(0.005)
    while due:
        time.sleep(max(0.0, due[0][0] - time.monotonic()))
        _give(producer, traffic, due, time.monotonic())
    producer.flush()


def _give(
    producer: SampleProducer, traffic: Traffic, due: list[tuple[float, str]], now: float
) -> None:
    while due and due[0][0] <= now:
        _, event_id = heapq.heappop(due)
        producer.feedback(event_id, STREAM, label=traffic.labels[event_id])


def _joiner_samples(kafka: KafkaSettings, topics: TopicSettings) -> list[sample_pb2.Sample]:
    """The joiner's committed training samples of the stream (ingestion writes batches)."""
    found = []
    for msg in committed(kafka, topics.train):
        if samples.header(samples.headers_of(msg), samples.CONTENT_TYPE) != samples.SAMPLE_TYPE:
            continue
        sample = sample_pb2.Sample.FromString(msg.value() or b"")
        if sample.stream == STREAM and OUTCOME in sample.attributes:
            found.append(sample)
    return found


def _dead_letters(kafka: KafkaSettings, topics: TopicSettings) -> list[tuple[str, str]]:
    """(reason, event id) of every committed dead letter."""
    return [(_reason(m), (m.key() or b"").decode()) for m in committed(kafka, topics.dlq)]


def _reason(msg: Message) -> str:
    return (samples.header(samples.headers_of(msg), samples.REASON) or b"").decode()


def _endings(kafka: KafkaSettings, topics: TopicSettings) -> list[str]:
    """The event id of every prediction's end: a joined or negative sample, an expiry."""
    ids = [s.event_id for s in _joiner_samples(kafka, topics)]
    ids += [i for reason, i in _dead_letters(kafka, topics) if reason in PREDICTION_ENDS]
    return ids


def _ended(kafka: KafkaSettings, topics: TopicSettings, ids: list[str]) -> bool:
    return set(ids) <= set(_endings(kafka, topics))


def _check_calm(kafka: KafkaSettings, topics: TopicSettings, traffic: Traffic, first: int) -> None:
    """Joined exactly where feedback came (the true label), negatives elsewhere, no dead letter."""
    ours = set(traffic.ids)
    found = [s for s in _joiner_samples(kafka, topics) if s.event_id in ours]
    assert Counter(s.event_id for s in found) == Counter(ours)
    joined = {s.event_id: s for s in found if s.attributes[OUTCOME] == "joined"}
    negatives = {s.event_id: s for s in found if s.attributes[OUTCOME] == "negative"}
    assert set(joined) == set(traffic.labels) and len(joined) + len(negatives) == len(ours)
    assert all(s.class_index == traffic.labels[i] for i, s in joined.items())
    assert all(s.class_index == 0 for s in negatives.values())
    for sample in found:  # lineage of every sample: the model and version that served it
        assert sample.attributes[MODEL] == STREAM
        assert int(sample.attributes[VERSION]) in traffic.versions
        assert int(sample.attributes[VERSION]) >= first
        assert list(sample.served_score) == [traffic.scores[sample.event_id]]  # as answered
    delays = {i: int(s.attributes[LABEL_DELAY_MS]) for i, s in joined.items()}
    assert all(delays[i] == 0 for i in traffic.early)  # feedback first: no delay
    assert all(0 <= d <= 1000 * NEGATIVE_AFTER_S for d in delays.values())
    negative_delays = {int(s.attributes[LABEL_DELAY_MS]) for s in negatives.values()}
    assert negative_delays == {int(1000 * NEGATIVE_AFTER_S)}
    assert not [d for d in _dead_letters(kafka, topics) if d[1] in ours]


def _check_exactly_once(kafka: KafkaSettings, topics: TopicSettings, rounds: list[Traffic]) -> None:
    """Each prediction ends once; each feedback joins once or is dead-lettered once."""
    ids = [i for traffic in rounds for i in traffic.ids]
    labels = {i: label for traffic in rounds for i, label in traffic.labels.items()}
    endings = Counter(_endings(kafka, topics))
    assert endings == Counter(ids), [i for i, n in endings.items() if n != 1]
    dead = _dead_letters(kafka, topics)
    assert {reason for reason, _ in dead} <= PREDICTION_ENDS | FEEDBACK_ENDS, dead
    found = _joiner_samples(kafka, topics)
    joined = [s for s in found if s.attributes[OUTCOME] == "joined"]
    assert all(s.class_index == labels[s.event_id] for s in joined)
    feedback_ends = Counter(s.event_id for s in joined)
    feedback_ends.update(i for reason, i in dead if reason in FEEDBACK_ENDS)
    assert feedback_ends == Counter(list(labels)), [i for i, n in feedback_ends.items() if n != 1]


def test_the_demo_feed_learns_from_a_simulated_users_clicks(
    kafka: KafkaSettings, system: tuple[LocalSystem, TopicSettings]
) -> None:
    """demo --feedback's traffic: joined clicks and negatives arrive, a newer version serves."""
    local, topics = system
    address = {s.name: s.address for s in local.plan()}
    dataset = Synthetic("drift", features=FEATURES, drift_every=10**9, seed=4)
    definition = dataset.definition(STREAM)
    definition.join.window_s, definition.join.negative_after_s = WINDOW_S, NEGATIVE_AFTER_S
    publish_definition(kafka, topics.streams, definition)
    follower = JoinFollower(kafka, topics.train, topics.dlq, STREAM)
    registry = RegistryClient(address["registry"])
    with TrafficClient(address["inference"]) as client:
        user = SimulatedUser(dataset, max_delay_s=MAX_DELAY_S, seed=1)
        feed = FeedbackFeed(
            kafka, topics, client, (STREAM, STREAM), dataset, user, (400.0, 400 * 60),
            rows_per_request=32, bootstrap=BOOTSTRAP,
        ).start()  # fmt: skip
        try:
            wait_until(lambda: version_numbers(registry, STREAM) != [], 120, pause=0.2)
            first = registry.get_version(STREAM)
            assert first.lineage.events_seen <= BOOTSTRAP  # the bootstrap made it

            def joined_and_learned() -> bool:
                follower.poll(0.2)
                joins = follower.joins
                newest = registry.get_version(STREAM)
                return (
                    joins.joined > 20
                    and joins.negatives > 20
                    and newest.lineage.events_seen > BOOTSTRAP + 40
                )

            wait_until(joined_and_learned, 60, pause=0.2)
        finally:
            served = feed.stop()
        try:  # every served row ends: a click joined, or silence (clicks not given) negative

            def all_closed() -> bool:
                follower.poll(0.2)
                return follower.joins.joined + follower.joins.negatives >= served

            wait_until(all_closed, 30, pause=0.2)
            time.sleep(0.5)
            follower.poll(0.2)
        finally:
            follower.close()
        newest = registry.get_version(STREAM)
        wait_until(lambda: client.served()[STREAM] >= newest.version, 60, pause=0.2)
    registry.close()
    assert feed.unserved >= 1 and served > 0 and feed.clicks > 0
    assert newest.version > first.version
    joins = follower.joins
    assert joins.joined + joins.negatives == served
    assert joins.joined <= feed.clicks
    assert joins.late == joins.unknown == joins.expired == 0
    assert joins.mean_delay_s is not None and 0 <= joins.mean_delay_s <= MAX_DELAY_S + 1
    rate = joins.join_rate
    assert rate is not None and 0.2 < rate < 0.8  # clicks at the concept's mean probability

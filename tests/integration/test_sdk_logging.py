"""The SDK through a broker restart: one outage line and one recovery line, not one per retry.

Uses a broker of its own (stopped and started here), never the session's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from shared.kafka.admin import TopicSpec, ensure_topics
from shared.kafka.local.broker import LocalBroker
from shared.kafka.local.files import BrokerConfig
from shared.kafka.outage import LOGGER
from shared.net import free_port
from shared.settings import DEFAULT_CACHE_DIR, KafkaSettings
from streamlearn.client.producer import SampleProducer

TOPIC = "sdk.logging"
DOWN_S = 6.0  # how long the broker stays stopped while the producer keeps sending


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    config = BrokerConfig(
        state_dir=tmp_path / "kafka",
        cache_dir=DEFAULT_CACHE_DIR,
        port=free_port(),
        controller_port=free_port(),
    )
    broker = LocalBroker(config)
    broker.start()
    admin = AdminClient({"bootstrap.servers": config.bootstrap})
    ensure_topics(admin, [TopicSpec(TOPIC, 1)])
    try:
        yield broker
    finally:
        broker.stop()


def _until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_a_broker_restart_is_one_outage_line_with_its_duration(
    own_broker: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    kafka = KafkaSettings(bootstrap_servers=own_broker.config.bootstrap)
    producer = SampleProducer(kafka=kafka, topic=TOPIC, stream="s")
    sent = 0

    def send() -> None:
        nonlocal sent
        producer.send({"features": [1.0, 2.0], "label": 1, "key": f"k{sent % 7}"})
        sent += 1

    send()
    producer.flush()
    assert _until(lambda: producer.connected, 15)

    stopping = time.monotonic()
    own_broker.stop()
    stopped = time.monotonic()
    while time.monotonic() - stopped < DOWN_S:  # keep sending: records wait for delivery
        send()
        time.sleep(0.05)
    assert not producer.connected
    assert producer.pending > 0

    restarting = time.monotonic()
    own_broker.start()
    assert producer.flush(120) == sent  # every record delivered after the restart
    assert producer.pending == 0
    assert _until(lambda: producer.connected, 15)

    mine = [r for r in caplog.records if r.name == LOGGER]
    loud = [r for r in mine if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(":")[0].split(" after")[0] for r in loud] == [
        "Kafka unreachable",
        "Kafka reachable again",
    ]
    retries = [r for r in mine if r.levelno == logging.DEBUG]
    assert len(retries) >= 2  # librdkafka did retry: those attempts were kept quiet
    outage_s = loud[1].outage_s  # type: ignore[attr-defined]
    # From the broker's shutdown until it was back: at least the time it was surely down.
    assert DOWN_S <= restarting - stopped <= outage_s <= time.monotonic() - stopping
    # Nothing else repeats the failure per attempt (librdkafka's lines pass on .client).
    spam = [
        r
        for r in caplog.records
        if r.name.startswith(LOGGER) and r.levelno >= logging.WARNING and r not in loud
    ]
    assert not [r for r in spam if "Connect to" in r.getMessage()]

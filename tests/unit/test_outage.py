"""The outage state machine of `ConnectionLog`, fed synthetic librdkafka lines and statistics."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from shared.kafka import outage
from shared.kafka.config import consumer_config, producer_config
from shared.kafka.outage import LOGGER, ConnectionLog
from shared.settings import KafkaSettings
from streamlearn.client import producer as sdk

ERR, INFO = 3, 6  # syslog levels, as librdkafka passes them


def _fail(log: ConnectionLog, node: str) -> None:
    """A failed connect, as a log line and as an `error_cb` (librdkafka reports both)."""
    text = (
        f"{node}/1: Connect to ipv4#{node} failed: Connection refused (after 0ms in state CONNECT)"
    )
    log.log(ERR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", f"[thrd:{node}/1]: {text}")
    log.error(_Error(text))


def _stats(log: ConnectionLog, **states: str) -> None:
    brokers = {f"{n}/1": {"name": f"{n}/1", "nodename": n, "state": s} for n, s in states.items()}
    log.stats(json.dumps({"brokers": brokers}))


def _loud(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= 30]


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)


def test_one_broker_of_several_failing_is_no_outage(caplog: pytest.LogCaptureFixture) -> None:
    log = ConnectionLog()
    _stats(log, **{"b1:9092": "UP", "b2:9092": "UP"})
    for _ in range(5):
        _fail(log, "b1:9092")
        _stats(log, **{"b1:9092": "CONNECT", "b2:9092": "UP"})
    assert _loud(caplog) == []
    assert not log.in_outage and log.connected
    notes = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert notes == [
        "Kafka broker b1:9092 unreachable (others are up): " + notes[0].split(": ", 1)[1]
    ]
    _stats(log, **{"b1:9092": "UP", "b2:9092": "UP"})
    assert caplog.records[-1].getMessage() == "Kafka broker b1:9092 reachable again"


def test_every_broker_failing_is_one_outage_ended_by_any_broker_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = ConnectionLog()
    _stats(log, **{"b1:9092": "UP", "b2:9092": "UP"})
    _fail(log, "b1:9092")
    _fail(log, "b2:9092")  # the last one up: now the cluster is unreachable
    for _ in range(3):
        _fail(log, "b1:9092")
        _fail(log, "b2:9092")
    assert log.in_outage and not log.connected
    _stats(log, **{"b1:9092": "CONNECT", "b2:9092": "UP"})
    assert not log.in_outage and log.connected
    loud = _loud(caplog)
    assert len(loud) == 2
    assert loud[0].startswith("Kafka unreachable: [thrd:b2:9092/1]: b2:9092/1: Connect to")
    assert loud[1].startswith("Kafka reachable again after") and "(14 failed" in loud[1]


def test_an_idle_disconnect_is_not_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    log = ConnectionLog()
    log.recovered()  # a delivery
    text = "127.0.0.1:9092/1: Disconnected (after 600012ms in state UP)"
    log.log(INFO, "%s [%s] %s", "FAIL", "rdkafka#producer-1", text)
    log.error(_Error(text))
    assert _loud(caplog) == []
    assert not log.in_outage and log.connected


def test_without_statistics_a_delivery_ends_the_outage(caplog: pytest.LogCaptureFixture) -> None:
    log = ConnectionLog()
    assert not log.connected  # no sign yet
    log.error(_Error("1/1 brokers are down", -187))  # _ALL_BROKERS_DOWN
    _fail(log, "127.0.0.1:9092")
    assert log.in_outage and not log.connected
    log.recovered()
    assert log.connected
    assert [m.split(":")[0].split(" after")[0] for m in _loud(caplog)] == [
        "Kafka unreachable",
        "Kafka reachable again",
    ]


def test_service_consumers_report_recovery_through_statistics_of_one_process_log() -> None:
    kafka = KafkaSettings()
    config = consumer_config(kafka, "g")
    assert config["logger"] is outage.process_log()
    assert config["stats_cb"] == outage.process_log().stats
    assert config["statistics.interval.ms"] > 0
    assert config["error_cb"] == outage.process_log().error
    assert producer_config(kafka)["logger"] is config["logger"]  # one outage line per process
    assert "stats_cb" not in producer_config(kafka)  # an idle producer would queue them


class _Error:
    def __init__(self, text: str, code: int = -195) -> None:  # -195: _TRANSPORT
        self._text, self._code = text, code

    def str(self) -> str:
        return self._text

    def code(self) -> int:
        return self._code


class _Producer:
    """Stands in for confluent_kafka.Producer: keeps its config and delivery callbacks."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.reports: list[Any] = []
        self.polls = 0

    def produce(self, *_a: Any, on_delivery: Any = None, **_k: Any) -> None:
        self.reports.append(on_delivery)

    def poll(self, _timeout: float = 0) -> int:
        self.polls += 1
        return 0

    def __len__(self) -> int:
        return 0


def test_an_idle_sample_producer_requests_no_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk, "Producer", _Producer)
    producer = sdk.SampleProducer(stream="s")
    fake: _Producer = producer._producer  # type: ignore[assignment]
    assert "stats_cb" not in fake.config
    assert int(fake.config.get("statistics.interval.ms", 0)) == 0
    assert not producer.connected
    producer.send({"features": [1.0], "label": 1})
    fake.reports[0](None, None)  # delivered
    assert producer.connected
    fake.config["error_cb"](_Error("1/1 brokers are down", -187))
    assert not producer.connected


def test_a_fast_sender_serves_reports_once_a_millisecond_a_slow_one_at_every_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sdk, "Producer", _Producer)
    producer = sdk.SampleProducer(stream="s")
    fake: _Producer = producer._producer  # type: ignore[assignment]
    now = [10.0]
    producer._serve = sdk.ServeThrottle(clock=lambda: now[0])
    for _ in range(100):  # a burst within one millisecond: served once, at its first record
        producer.send({"features": [1.0], "label": 1})
    assert len(fake.reports) == 100 and fake.polls == 1
    for _ in range(3):  # a record every second: each serves the reports due
        now[0] += 1.0
        producer.send({"features": [1.0], "label": 1})
    assert fake.polls == 4

"""The faust-streaming worker: raw topic in, training and dead-letter topics out (adapter).

At-least-once, made exactly-once in effect: faust commits a raw offset only after the agent
processed the record and the producer flushed its outputs; what a crash leaves
uncommitted is redelivered, and the partition's memory (rebuilt from the outputs when the
partition is assigned) skips every input that was already routed. Outputs keep the raw
partition, so per-key order holds end to end.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from typing import Any

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver

from services.ingestion import metrics
from services.ingestion.dedup import PartitionMemory
from services.ingestion.recovery import recover
from services.ingestion.router import RawRecord, Router
from services.ingestion.settings import IngestionSettings

log = logging.getLogger(__name__)
TAKE_MAX, TAKE_WITHIN_S = 500, 0.02


class _IdempotentProducer(aiokafka_driver.Producer):
    """faust enables idempotence only in its exactly-once mode; retries must not duplicate."""

    def _settings_extra(self) -> dict[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class _Transport(aiokafka_driver.Transport):
    Producer = _IdempotentProducer


class _App(faust.App):
    def _new_transport(self) -> _Transport:
        return _Transport(self.conf.broker_consumer, self)


def build_app(settings: IngestionSettings, router: Router, stop: threading.Event) -> faust.App:
    """A faust app with one agent routing the raw topic.

    `stop` is set by a SIGTERM/SIGINT that came before faust installed its own handlers
    (during start-up); it is replayed to them once the worker runs, so no stop is lost.
    """
    app = _App(
        settings.consumer_group,
        broker=f"kafka://{settings.kafka.bootstrap_servers}",
        broker_client_id=f"{settings.kafka.client_id}-ingestion",
        broker_credentials=_credentials(settings),
        processing_guarantee="at_least_once",
        broker_commit_interval=settings.commit_interval_s,
        # A killed worker's partitions move on after this long (faust's default is 60 s).
        broker_session_timeout=settings.session_timeout_s,
        consumer_auto_offset_reset="earliest",
        store="memory://",
        web_enabled=False,
        topic_disable_leader=True,
        producer_acks=-1,
        producer_linger_ms=5,
    )
    topics = settings.topics
    raw = app.topic(topics.raw, key_serializer="raw", value_serializer="raw")
    outputs = {
        True: app.topic(topics.train, key_serializer="raw", value_serializer="raw"),
        False: app.topic(topics.dlq, key_serializer="raw", value_serializer="raw"),
    }
    memories: dict[int, PartitionMemory] = {}
    positions: dict[int, int] = {}  # last raw offset processed, per partition (for lag)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget(app: faust.App, revoked: set[Any], **_: Any) -> None:
        for tp in revoked:
            if tp.topic == topics.raw:
                memories.pop(tp.partition, None)

    async def memory_of(partition: int) -> PartitionMemory:
        if partition not in memories:
            await app.producer.flush()  # our own sends must be readable by the recovery
            memories[partition] = await asyncio.get_running_loop().run_in_executor(
                None, _recover, settings, partition
            )
        return memories[partition]

    @app.agent(raw)
    async def route(stream: faust.StreamT[Any]) -> None:
        # Events come in small batches to save faust's per-event overhead; each is still
        # routed on its own, in order, and acked only after its batch was handled.
        async for events in stream.take_events(TAKE_MAX, TAKE_WITHIN_S):  # type: ignore[attr-defined]
            for event in events:
                message = event.message
                memory = await memory_of(message.partition)
                started = time.perf_counter()
                routed = router.route(_raw_record(message), memory)
                for output in routed:
                    await outputs[output.rejection is None].send(
                        key=output.key,
                        value=output.value,
                        partition=message.partition,
                        headers=output.headers,
                    )
                metrics.LATENCY.observe(time.perf_counter() - started)
                metrics.count(routed)
                positions[message.partition] = message.offset

    @app.task  # type: ignore[untyped-decorator]
    async def replay_early_stop() -> None:
        if stop.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def housekeeping() -> None:
        now = time.time()
        for partition, memory in list(memories.items()):
            memory.forget_before(now)
            high = app.consumer.highwater(faust.types.TP(topics.raw, partition))
            if high is not None and partition in positions:
                metrics.LAG.labels(str(partition)).set(max(high - positions[partition] - 1, 0))

    return app


def _recover(settings: IngestionSettings, partition: int) -> PartitionMemory:
    topics = settings.topics
    return recover(
        settings.kafka,
        settings.consumer_group,
        (topics.train, topics.dlq),
        (topics.raw, partition),
        settings.dedup_window_s,
    )


def _raw_record(message: Any) -> RawRecord:
    headers = message.headers or []
    if isinstance(headers, dict):
        headers = list(headers.items())
    return RawRecord(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value or b"",
        [(k, bytes(v or b"")) for k, v in headers],
        message.timestamp or 0.0,
    )


def _credentials(settings: IngestionSettings) -> faust.SASLCredentials | None:
    kafka = settings.kafka
    if not kafka.sasl_mechanism:
        return None
    password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
    return faust.SASLCredentials(
        username=kafka.sasl_username or "", password=password, mechanism=kafka.sasl_mechanism
    )

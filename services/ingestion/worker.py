"""The faust-streaming worker: raw topic in, training and dead-letter topics out (adapter).

At-least-once, made exactly-once in effect: a raw record is acked (and so its offset may be
committed) only after the broker acknowledged every one of its outputs (`delivery.settle`;
faust's own `take_events` would ack a batch even when the agent failed). When an output is
not written, nothing after it is acked and the worker stops (exit status 1) so the records
are redelivered; what a crash leaves uncommitted is redelivered too, and the partition's
memory (rebuilt from the outputs when the partition is assigned) skips every input that
was already routed. Outputs keep the raw partition, so per-key order holds end to end.

When the raw topic has a partition its outputs lack (it grew at run time), the outputs are
given the missing partitions (`topology.match_partitions`); if that fails, or the recovery
of a partition's memory fails (a Kafka time-out), the agent retries with backoff, holding
the records (never routed elsewhere, never committed), with an error log and the metrics
`streamlearn_ingestion_unroutable_partition{partition}` / `_recovery_failures_total`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import faust
from confluent_kafka.admin import AdminClient
from faust.transport.drivers import aiokafka as aiokafka_driver

from services.ingestion import metrics
from services.ingestion.dedup import PartitionMemory
from services.ingestion.delivery import settle
from services.ingestion.recovery import recover
from services.ingestion.router import Output, RawRecord, Router
from services.ingestion.settings import IngestionSettings
from services.ingestion.topology import match_partitions

log = logging.getLogger(__name__)
TAKE_MAX, TAKE_WITHIN_S = 500, 0.02
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 30.0


@dataclass
class Failure:
    """Why the worker stopped itself (an output not written), for the exit status."""

    error: BaseException | None = None


class _IdempotentProducer(aiokafka_driver.Producer):
    """faust enables idempotence only in its exactly-once mode; retries must not duplicate."""

    def _settings_extra(self) -> dict[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class _Transport(aiokafka_driver.Transport):
    Producer = _IdempotentProducer


class _App(faust.App):
    def _new_transport(self) -> _Transport:
        return _Transport(self.conf.broker_consumer, self)


def build_app(  # the agent and its helpers share the app's state
    settings: IngestionSettings,
    router: Router,
    stop: threading.Event,
    failure: Failure | None = None,
) -> faust.App:
    """A faust app with one agent routing the raw topic.

    `stop` is set by a SIGTERM/SIGINT that came before faust installed its own handlers
    (during start-up); it is replayed to them once the worker runs, so no stop is lost.
    `failure` receives the error that made the worker stop itself.
    """
    failure = failure if failure is not None else Failure()
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
        # The one limit (see `limits`): faust's default (1,000,000) is below 1 MiB.
        producer_max_request_size=settings.max_message_bytes,
        # How soon partitions added to the raw topic are seen (aiokafka's default: 5 min).
        consumer_metadata_max_age_ms=int(settings.metadata_max_age_s * 1000),
        producer_metadata_max_age_ms=int(settings.metadata_max_age_s * 1000),
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

    admins: list[AdminClient] = []  # made on first use: building the app connects nothing

    async def memory_of(partition: int) -> PartitionMemory:
        if partition not in memories:
            memories[partition] = await _recovered(partition)
        return memories[partition]

    async def _recovered(partition: int) -> PartitionMemory:
        """The partition's memory, retried with backoff: a time-out must not kill the agent."""
        loop, delay = asyncio.get_running_loop(), RETRY_FIRST_S
        while True:
            try:
                admins[:] = admins or [AdminClient(settings.kafka.client_config())]
                if await loop.run_in_executor(None, _match, admins[0], settings):
                    await _refresh_producer_metadata(app)
                metrics.UNROUTABLE.labels(str(partition)).set(0)
                await app.producer.flush()  # our own sends must be readable by the recovery
                return await loop.run_in_executor(None, _recover, settings, partition)
            except Exception as exc:  # retried: Kafka time-outs, refused ACLs
                metrics.UNROUTABLE.labels(str(partition)).set(1)
                metrics.RECOVERY_FAILURES.inc()
                log.error(
                    "cannot route raw partition yet: holding its records, retrying",
                    extra={"partition": partition, "error": repr(exc), "retry_s": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def send(output: Output, partition: int) -> Awaitable[Any]:
        """Start writing `output`; the result resolves once the broker acknowledged it."""
        try:
            return await outputs[output.rejection is None].send(
                key=output.key, value=output.value, partition=partition, headers=output.headers
            )
        except Exception as exc:  # refused at once: a failed delivery
            refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            refused.set_exception(exc)
            return refused

    async def fail(error: BaseException) -> None:
        """Stop the worker without acking: the unwritten records are redelivered."""
        failure.error = error
        log.critical(
            "an output was not written: stopping so its raw record is redelivered",
            exc_info=error,
        )
        # On stop faust waits for every started event to be acked: ours never will be.
        # Not waiting makes it commit what was acked (all before `error`) and exit.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "reconfiguring late": read at stop, as meant
            app.conf.stream_wait_empty = False
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.Event().wait()  # cancelled by the stop; nothing more is routed

    @app.agent(raw)
    async def route(stream: faust.StreamT[Any]) -> None:
        # Events come in small batches to save faust's per-event overhead; each is still
        # routed on its own, in order, and acked only once its outputs are written.
        async for events in stream.noack_take(TAKE_MAX, TAKE_WITHIN_S):  # type: ignore[attr-defined]
            pending: list[tuple[Any, list[Awaitable[Any]]]] = []
            for event in events:
                message = event.message
                memory = await memory_of(message.partition)
                started = time.perf_counter()
                routed = router.route(_raw_record(message), memory)
                pending.append((event, [await send(o, message.partition) for o in routed]))
                metrics.LATENCY.observe(time.perf_counter() - started)
                metrics.count(routed)
                positions[message.partition] = message.offset
            error = await settle(pending, stream.ack)
            if error is not None:
                await fail(error)

    @app.task  # type: ignore[untyped-decorator]
    async def replay_early_stop() -> None:
        if stop.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def housekeeping() -> None:
        now = time.time()
        for partition, memory in list(memories.items()):
            memory.forget_before(now)
            metrics.DEDUP_IDS.labels(str(partition)).set(len(memory))
            metrics.DEDUP_CUT_SHORT.labels(str(partition)).set(memory.cut_short)
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
        settings.dedup_max_ids,
    )


def _match(admin: AdminClient, settings: IngestionSettings) -> bool:
    topics = settings.topics
    return bool(match_partitions(admin, topics.raw, (topics.train, topics.dlq)))


async def _refresh_producer_metadata(app: faust.App) -> None:
    """Refresh the producer's metadata: aiokafka refuses a partition it has not seen yet."""
    producer = app.producer._ensure_producer()  # type: ignore[attr-defined]
    await producer.client.force_metadata_update()


def _raw_record(message: Any) -> RawRecord:
    headers = message.headers or []
    if isinstance(headers, dict):
        headers = list(headers.items())
    return RawRecord(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,  # None: a tombstone, dead-lettered as such
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

"""The faust-streaming worker: raw topic in, training and dead-letter topics out (adapter).

At-least-once, made exactly-once in effect: a raw record is acked (and so its offset may be
committed) only after the broker acknowledged every one of its outputs (`delivery.settle`;
faust's own `take_events` would ack a batch even when the agent failed). When an output is
not written, nothing after it is acked and the worker stops (exit status 1) so the records
are redelivered; what a crash leaves uncommitted is redelivered too, and the partition's
memory (rebuilt from the outputs when the partition is assigned) skips every input that
was already routed. Outputs keep the raw partition, so per-key order holds end to end.

A raw partition is prepared on its first record after each assignment: its outputs must
have the partition (added only with `INGESTION_GROW_OUTPUTS=true`, see `topology` for what
growing the raw topic costs), the producer's metadata must list it (refreshed when it does
not: another worker may have added it) and its memory is recovered. When that fails, that
partition alone is held (`holding`: paused, its fetched records kept unacked, tried again
with backoff) with an error log and the metrics
`streamlearn_ingestion_unroutable_partition{partition}` / `_recovery_failures_total`; the
other partitions go on. Waiting for a preparation gives up at once when the partition is
revoked or the app rebalances or stops, and records of a partition no longer assigned are
dropped unrouted and unacked (their next owner routes them from the committed offset), so
neither a rebalance nor a stop waits on it, and no record is routed by two workers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust
from confluent_kafka.admin import AdminClient
from faust.transport.drivers import aiokafka as aiokafka_driver

from services.ingestion import metrics
from services.ingestion.dedup import PartitionMemory
from services.ingestion.delivery import settle
from services.ingestion.holding import Holds, unless
from services.ingestion.recovery import recover
from services.ingestion.router import Output, RawRecord, Router
from services.ingestion.settings import IngestionSettings
from services.ingestion.topology import require_partition
from shared.errors import Unavailable
from shared.settings import KafkaSettings

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
    holds: Holds[Any] = Holds(RETRY_FIRST_S, RETRY_MAX_S)
    acks: list[Callable[[Any], Awaitable[Any]]] = []  # the agent's stream.ack, once it runs

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget(app: faust.App, revoked: set[Any], **_: Any) -> None:
        for tp in revoked:
            if tp.topic == topics.raw:
                memories.pop(tp.partition, None)
                holds.forget(tp.partition)  # never acked: redelivered to its next owner

    admins: list[AdminClient] = []  # made on first use: building the app connects nothing

    def raw_tp(partition: int) -> Any:
        return faust.types.TP(topics.raw, partition)

    def owned(partition: int) -> bool:
        return raw_tp(partition) in app.consumer.assignment()

    def wanted(partition: int) -> bool:
        """Whether preparing `partition` is still worth waiting for."""
        return owned(partition) and not app.rebalancing and not app.should_stop

    def untrack(event: Any) -> None:
        """Drop `event` unacked without faust waiting for it (at a rebalance or stop)."""
        app.consumer.unacked.discard(event.message)

    async def attempt(partition: int) -> PartitionMemory:
        """Make `partition` routable: outputs have it, the producer knows it, memory recovered."""
        loop = asyncio.get_running_loop()
        admins[:] = admins or [AdminClient(settings.kafka.client_config())]
        await loop.run_in_executor(None, _require_partition, admins[0], settings, partition)
        await _know_partition(app, (topics.train, topics.dlq), partition)
        await app.producer.flush()  # our own sends must be readable by the recovery
        return await loop.run_in_executor(None, _recover, settings, partition)

    async def prepare(partition: int) -> PartitionMemory | None:
        """The partition's memory; None when it is held (failed) or no longer wanted.

        A failure holds the partition (paused, its records kept; `retry_held` tries again),
        so one partition that cannot be routed never holds up the others, a rebalance or a
        stop. Not wanted any more (revoked, rebalancing, stopping): its records are dropped
        unacked, and come again from the committed offset to whoever owns it next.
        """
        try:
            memory = await unless(attempt(partition), lambda: wanted(partition))
        except Exception as exc:  # Kafka time-outs, refused ACLs, outputs lacking it
            if not owned(partition):  # revoked meanwhile: nothing to hold (nor pause)
                return None
            delay = holds.failed(partition)
            app.consumer.pause_partitions([raw_tp(partition)])
            metrics.UNROUTABLE.labels(str(partition)).set(1)
            metrics.RECOVERY_FAILURES.inc()
            log.error(
                "cannot route raw partition yet: holding its records, retrying",
                extra={"partition": partition, "error": str(exc), "retry_s": delay},
            )
            return None
        if memory is not None and not wanted(partition):
            return None  # a rebalance or stop began as it finished: another owner may route
        if memory is not None:
            memories[partition] = memory
            metrics.UNROUTABLE.labels(str(partition)).set(0)
        return memory

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

    async def route_event(event: Any, memory: PartitionMemory) -> list[Awaitable[Any]]:
        message = event.message
        started = time.perf_counter()
        routed = router.route(_raw_record(message), memory)
        deliveries = [await send(o, message.partition) for o in routed]
        metrics.LATENCY.observe(time.perf_counter() - started)
        metrics.count(routed)
        positions[message.partition] = message.offset
        return deliveries

    @app.agent(raw)
    async def route(stream: faust.StreamT[Any]) -> None:
        acks[:] = [stream.ack]
        # Events come in small batches to save faust's per-event overhead; each is still
        # routed on its own, in order, and acked only once its outputs are written.
        async for events in stream.noack_take(TAKE_MAX, TAKE_WITHIN_S):  # type: ignore[attr-defined]
            pending: list[tuple[Any, list[Awaitable[Any]]]] = []
            for event in events:
                partition = event.message.partition
                if not owned(partition):  # revoked since fetched: its next owner routes it
                    untrack(event)
                    continue
                if partition in holds:  # kept, in order, routed once it is prepared
                    untrack(event)
                    holds.keep(partition, event)
                    continue
                memory = memories.get(partition)
                if memory is None:
                    memory = await prepare(partition)
                if memory is None:
                    untrack(event)
                    if partition in holds:
                        holds.keep(partition, event)
                    continue
                pending.append((event, await route_event(event, memory)))
            error = await settle(pending, stream.ack)
            if error is not None:
                await fail(error)

    @app.timer(interval=0.25)  # type: ignore[untyped-decorator]
    async def retry_held() -> None:
        """Try the held partitions again; once prepared, route their kept records, resume."""
        for partition in holds.due():
            if not owned(partition):
                holds.forget(partition)
                continue
            memory = await prepare(partition)
            if memory is None:
                continue  # failed again (tried later) or not wanted now
            log.info("routing a held raw partition", extra={"partition": partition})
            if await route_held(partition, memory):
                holds.release(partition)  # no await since the last take: nothing kept after
                if owned(partition):
                    app.consumer.resume_partitions([raw_tp(partition)])

    async def route_held(partition: int, memory: PartitionMemory) -> bool:
        """Route a held partition's kept events in order, settling each round before the next.

        Events the agent keeps meanwhile (the hold stands until this returns) are routed in
        later rounds. False when it stopped: the partition was no longer wanted (what is kept
        is dropped unacked: its next owner reads it from the committed offset) or a delivery
        failed (the worker stops; nothing after the failure is acked).
        """
        while kept := holds.take(partition):
            pending: list[tuple[Any, list[Awaitable[Any]]]] = []
            given_up = False
            for event in kept:
                if not wanted(partition):
                    holds.forget(partition)  # the rest are dropped unacked
                    given_up = True
                    break
                app.consumer.unacked.add(event.message)  # routed now: a stop waits for it
                pending.append((event, await route_event(event, memory)))
            # What was sent is settled even when giving up: a revoke waits for those acks.
            error = await settle(pending, acks[0])
            if error is not None:
                await fail(error)
                return False
            if given_up:
                return False
        return True

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


def _require_partition(admin: AdminClient, settings: IngestionSettings, partition: int) -> None:
    topics = settings.topics
    outputs = (topics.train, topics.dlq)
    require_partition(admin, topics.raw, outputs, partition, settings.grow_outputs)


async def _know_partition(app: faust.App, outputs: tuple[str, ...], partition: int) -> None:
    """Refresh the producer's metadata when it lacks `partition` of an output.

    aiokafka refuses to send to a partition its metadata does not list ("Unrecognized
    partition"), and another worker (or an operator) may have added it.

    Raises:
        Unavailable: still unknown after the refresh (the caller retries).

    """
    producer = app.producer._ensure_producer()  # type: ignore[attr-defined]
    cluster = producer.client.cluster

    def unknown() -> list[str]:
        return [t for t in outputs if partition not in (cluster.partitions_for_topic(t) or ())]

    if unknown():
        await producer.client.force_metadata_update()
        if missing := unknown():
            raise Unavailable(f"the producer does not know partition {partition} of {missing}")


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


def _credentials(
    settings: IngestionSettings,
) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """The credentials faust (aiokafka) connects with, from the librdkafka clients' settings."""
    kafka = settings.kafka
    context = _ssl_context(kafka)
    if not kafka.sasl_mechanism:
        return faust.SSLCredentials(context) if context is not None else None
    password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
    return faust.SASLCredentials(
        username=kafka.sasl_username or "",
        password=password,
        mechanism=kafka.sasl_mechanism,
        ssl_context=context,  # given: SASL_SSL; None: SASL_PLAINTEXT
    )


def _ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """TLS for SSL and SASL_SSL, trusting `ssl_ca_location` (None: the system's CAs)."""
    if not kafka.security_protocol.upper().endswith("SSL"):
        return None
    cafile = str(kafka.ssl_ca_location) if kafka.ssl_ca_location is not None else None
    return ssl.create_default_context(cafile=cafile)

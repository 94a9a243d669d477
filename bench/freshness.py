"""Freshness: from an event produced to a served version that learned from it, by hop.

The whole pipeline runs as separate processes on this machine (registry, ingestion, two
trainers, inference) on fresh topics. Samples go in one per record (the SDK's `send`, the
hardest case for every hop) at `RATE` events/s, paced in bursts of `BURST`, each its own
event id and key on features taken in turn from a pool of `POOL` samples built before the
paced run: the load generator shares the cores with every service, so per record it does
the SDK's part only (building a `Sample` from Python floats cost it 3 of its ~13 us a
record, on a box where it kept to 33-37k of the 50k records/s). Both trainers
learn the same training topic side by side: one registers a version every `FRESH_EVERY_S`
or every 5,000 events (the default count), the baseline at the trainer's default interval
of 5 s alone; inference serves both models. Hops of
every `TRACK_EVERY`-th record (its Kafka key marks it, so the watcher decodes only those):
produce -> training topic (ingestion) -> a registered version covers its offset (trainer
and registry) -> a version at least that new is served (model event, download, swap).
The ingestion and trainer processes' resident memory is read at the start and the end of
the paced run.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from bench.core import BenchContext, Figure
from bench.processes import rss_kib, service, topics_env
from bench.timeline import Timeline, Watchers
from services.trainer.settings import TrainerSettings
from shared.kafka.admin import ensure_topics, standard_topics
from shared.net import free_port
from shared.settings import KafkaSettings, TopicSettings
from shared.streams import publish_definition
from streamlearn.client.datasets import Synthetic
from streamlearn.client.producer import SampleProducer
from streamlearn.system.plan import HEALTH_NAMES
from streamlearn.v1 import sample_pb2

log = logging.getLogger(__name__)
RATE = 50_000
BURST = 500  # 10 ms of events per burst
POOL = 50_000  # a second of distinct features, cycled
TRACK_EVERY = 100  # 500 tracked records a second
TRACKED = b"t"  # the Kafka key prefix of tracked records
FRESH_EVERY_S = 0.2
DEFAULT_EVERY_S = TrainerSettings.model_fields["version_every_s"].default
FRESH_EVERY_EVENTS = TrainerSettings.model_fields["version_every_events"].default
MODELS = {"fresh": FRESH_EVERY_S, "default": DEFAULT_EVERY_S}
Chunk = tuple[np.ndarray, np.ndarray]
HOPS = ("ingestion", "trainer+registry", "inference", "end to end")
TOPIC_NAMES = ("raw", "train", "dlq", "streams", "metrics", "model_events")


def run(ctx: BenchContext) -> list[Figure]:
    """Measure event-to-served latency at RATE events/s; the default interval as baseline."""
    topics = _topics(ctx.kafka)
    seconds = max(10.0, 30.0 * ctx.scale)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        # Dropped once the services have stopped: ten minutes at this rate write ~12 GB.
        stack.callback(_drop_topics, ctx.kafka, topics)
        address, pids = _start(stack, ctx.kafka, topics, Path(tmp))
        watchers = Watchers(
            ctx.kafka,
            (topics.train, topics.model_events),
            address["registry"],
            address["inference"],
            list(MODELS),
            tracked=TRACKED,
        ).start()
        try:
            memory, sent = _feed(ctx.kafka, topics, watchers.timeline, seconds, pids)
        finally:
            watchers.stop()
    if watchers.missed:  # their records were credited to the next version read
        log.warning("versions deleted before they were read", extra={"missed": watchers.missed})
    fresh = latencies(watchers.timeline, "fresh")
    default = latencies(watchers.timeline, "default")
    # The producer shares the cores: the rate it kept up is part of the result.
    pace = Figure("single-sample records sent", sent, "records/s", "the target rate", RATE)
    return [pace, *_figures(fresh, default), *_memory_figures(memory, seconds)]


def latencies(timeline: Timeline, model: str) -> dict[str, np.ndarray]:
    """Seconds per hop for every record a served version of `model` learned from."""
    reach = _Reach(timeline, model)
    rows: list[tuple[float, float, float, float]] = []
    for record, sent in timeline.produced.items():
        if record not in timeline.trained_on:
            continue
        on_topic, partition, offset = timeline.trained_on[record]
        reached = reach(partition, offset)
        if reached is not None:
            registered, done = reached
            rows.append((on_topic - sent, registered - on_topic, done - registered, done - sent))
    table = np.array(rows).reshape(-1, len(HOPS))
    return {hop: table[:, i] for i, hop in enumerate(HOPS)}


class _Reach:
    """When the first version covering an offset was registered, and when one was served.

    Indexed once per model (a ten-minute run has thousands of versions and hundreds of
    thousands of tracked records): binary searches instead of a scan per record.
    """

    def __init__(self, timeline: Timeline, model: str) -> None:
        versions = sorted(dict(timeline.versions[model]).items())
        self._numbers = [v for v, _ in versions]
        self._registered = [at for _, (at, _) in versions]
        self._covered = [covered for _, (_, covered) in versions]
        self._covers: dict[int, np.ndarray] = {}
        served = sorted(dict(timeline.served[model]).items())
        self._served = [v for v, _ in served]
        # the earliest time any version at least as new was served
        self._served_by = np.minimum.accumulate([t for _, t in served][::-1])[::-1]

    def __call__(self, partition: int, offset: int) -> tuple[float, float] | None:
        covers = self._covers.get(partition)
        if covers is None:  # how far each version (or an older one) covers the partition
            reached = [c.get(partition, 0) for c in self._covered]
            covers = np.maximum.accumulate(reached) if reached else np.zeros(0)
            self._covers[partition] = covers
        first = int(np.searchsorted(covers, offset, side="right"))  # covers[first] > offset
        if first == len(covers):
            return None
        shown = bisect.bisect_left(self._served, self._numbers[first])
        if shown == len(self._served):
            return None
        return self._registered[first], float(self._served_by[shown])


def _reach(
    timeline: Timeline, model: str, partition: int, offset: int
) -> tuple[float, float] | None:
    """`_Reach` for one record."""
    return _Reach(timeline, model)(partition, offset)


def _figures(fresh: dict[str, np.ndarray], default: dict[str, np.ndarray]) -> list[Figure]:
    if not len(fresh["end to end"]) or not len(default["end to end"]):
        raise RuntimeError("no record reached a served version")
    baseline = f"version every {DEFAULT_EVERY_S:g} s (the default time, no event count)"
    figures = []
    for q in (50, 99):
        figures.append(
            Figure(
                f"event -> served p{q}, {RATE:,} single-sample records/s, version every "
                f"{FRESH_EVERY_S:g} s or {FRESH_EVERY_EVENTS:,} events",
                float(np.percentile(fresh["end to end"], q)),
                "s",
                baseline,
                float(np.percentile(default["end to end"], q)),
                higher_is_better=False,
            )
        )
    total = float(np.percentile(fresh["end to end"], 50))
    for hop in HOPS[:-1]:
        figures.append(
            Figure(
                f"hop {hop} p50 (p99 {np.percentile(fresh[hop], 99):.3f} s)",
                float(np.percentile(fresh[hop], 50)),
                "s",
                "end-to-end p50 (ratio: its share, inverted)",
                total,
                higher_is_better=False,
            )
        )
    return figures


def _topics(kafka: KafkaSettings) -> TopicSettings:
    prefix = f"bench.freshness.{uuid.uuid4().hex[:8]}"
    topics = TopicSettings(**{n: f"{prefix}.{n}" for n in TOPIC_NAMES})
    ensure_topics(AdminClient(kafka.client_config()), standard_topics(topics))
    publish_definition(kafka, topics.streams, Synthetic("binary", features=32).definition("bench"))
    return topics


def _drop_topics(kafka: KafkaSettings, topics: TopicSettings) -> None:
    """Delete the run's own topics (their names are unique to the run)."""
    names = [getattr(topics, n) for n in TOPIC_NAMES]
    admin = AdminClient(kafka.client_config())  # held until every answer came back
    for name, done in admin.delete_topics(names).items():
        try:
            done.result(30)
        except KafkaException as exc:  # the measure stands; the topic stays behind
            log.warning("bench topic not deleted", extra={"topic": name, "error": str(exc)})


def _env(prefix: str, kafka: KafkaSettings, topics: TopicSettings, state: Path) -> dict[str, str]:
    env = {
        f"{prefix}KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        f"{prefix}STATE_DIR": str(state),
        f"{prefix}LOG_LEVEL": "WARNING",
        f"{prefix}METRICS_PORT": "0",
    }
    return env | topics_env(prefix, topics)


def _start(
    stack: contextlib.ExitStack, kafka: KafkaSettings, topics: TopicSettings, tmp: Path
) -> tuple[dict[str, str], dict[str, int]]:
    """Registry, ingestion, both trainers and inference, each once it is ready.

    Returns their addresses and process ids by name.
    """
    ports = {name: free_port() for name in ("registry", "ingestion", "inference", *MODELS)}
    address = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    pids: dict[str, int] = {}

    def start(module: str, prefix: str, name: str, health: str, extra: dict[str, str]) -> None:
        env = _env(prefix, kafka, topics, tmp / name) | {f"{prefix}GRPC_PORT": str(ports[name])}
        process = stack.enter_context(
            service(module, env | extra, address[name], health, tmp / f"{name}.log", timeout=120)
        )
        pids[name] = process.pid

    start("services.registry", "REGISTRY_", "registry", HEALTH_NAMES["registry"], {})
    start("services.ingestion", "INGESTION_", "ingestion", HEALTH_NAMES["ingestion"], {})
    for model, every in MODELS.items():
        start(
            "services.trainer",
            "TRAINER_",
            model,
            HEALTH_NAMES["trainer"],
            {
                "TRAINER_MODEL_NAME": model,
                "TRAINER_STREAM": "bench",
                "TRAINER_TRAINER_ID": f"bench-{model}",
                "TRAINER_CONSUMER_GROUP": f"{topics.train}.{model}",
                "TRAINER_REGISTRY_ADDRESS": address["registry"],
                "TRAINER_VERSION_EVERY_S": str(every),
                # The baseline versions on time only: at this rate the default event count
                # (a version every 5,000 events) would make it as fresh as the other one.
                **({} if model == "fresh" else {"TRAINER_VERSION_EVERY_EVENTS": str(10**12)}),
            },
        )
    start(
        "services.inference",
        "INFERENCE_",
        "inference",
        "",  # live is enough: it serves once the trainers' first versions exist
        {
            "INFERENCE_REGISTRY_ADDRESS": address["registry"],
            "INFERENCE_MODEL_NAMES": json.dumps(list(MODELS)),
        },
    )
    return address, pids


def _feed(
    kafka: KafkaSettings,
    topics: TopicSettings,
    timeline: Timeline,
    seconds: float,
    pids: dict[str, int],
) -> tuple[dict[str, tuple[int, int, int]], float]:
    """Warm up until both models are served, then send `seconds` of paced samples.

    Returns the ingestion and trainer processes' resident memory (KiB) at the start, half
    way and the end of the paced run (ingestion's de-duplication memory grows until its
    cap, INGESTION_DEDUP_MAX_IDS, about a minute at this rate: flat means from then on),
    and the records sent per second.
    """
    dataset = Synthetic("binary", features=32)
    with SampleProducer(kafka=kafka, topic=topics.raw, stream="bench") as producer:
        chunks = dataset.chunks(10**12, BURST)
        deadline = time.monotonic() + 120
        while not all(timeline.served.values()):  # warm-up records are not measured
            if time.monotonic() > deadline:
                raise RuntimeError("no version was served within 120 s")
            x, y = next(chunks)
            producer.send_columns(x, y, keys=["warm-up"] * BURST)
            time.sleep(BURST / RATE)
        pool = _pool(chunks)
        watched = {name: pids[name] for name in ("ingestion", "fresh")}
        readings = {name: [rss_kib(pid)] for name, pid in watched.items()}

        def read() -> None:
            for name, pid in watched.items():
                readings[name].append(rss_kib(pid))

        sent = _paced(producer, pool, timeline, seconds, halfway=read)
        read()
    _settle(timeline)
    return {name: (v[0], v[1], v[2]) for name, v in readings.items()}, sent


def _pool(chunks: Iterator[Chunk]) -> list[sample_pb2.Sample]:
    """`POOL` samples (features and label) the paced run sends in turn."""
    pool: list[sample_pb2.Sample] = []
    while len(pool) < POOL:
        x, y = next(chunks)
        rows, labels = x.tolist(), y.tolist()
        pairs = zip(rows, labels, strict=True)
        pool.extend(sample_pb2.Sample(dense=row, class_index=int(label)) for row, label in pairs)
    return pool[:POOL]


def _paced(
    producer: SampleProducer,
    pool: list[sample_pb2.Sample],
    timeline: Timeline,
    seconds: float,
    halfway: Callable[[], None],
) -> float:
    """One `Sample` per record, `BURST` at a time on schedule; every TRACK_EVERY-th tracked.

    Each record is the next sample of `pool` with its own event id and key (`send`
    serializes it at once, so the pool's copy is reused). Returns the records sent per
    second (below `RATE` when the producer fell behind).
    """
    started = time.monotonic()
    bursts = int(seconds * RATE / BURST)
    for n in range(bursts):
        if n == bursts // 2:
            halfway()
        for event in range(n * BURST, (n + 1) * BURST):
            tracked = event % TRACK_EVERY == 0
            sample = pool[event % len(pool)]
            sample.event_id = str(event)
            sample.key = f"{TRACKED.decode()}{event}" if tracked else f"k{event % 12}"
            if tracked:
                timeline.produced[str(event)] = time.time()
            producer.send(sample)
        ahead = started + (n + 1) * BURST / RATE - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    return bursts * BURST / (time.monotonic() - started)


def _settle(timeline: Timeline, timeout: float = 60.0) -> None:
    """Wait until the last record tracked is served by every model (or `timeout`)."""
    deadline = time.monotonic() + timeout
    last = max(timeline.produced, key=timeline.produced.__getitem__)
    while time.monotonic() < deadline:
        where = timeline.trained_on.get(last)
        if where is not None and all(_reach(timeline, m, *where[1:]) for m in MODELS):
            return
        time.sleep(0.2)


def _memory_figures(memory: dict[str, tuple[int, int, int]], seconds: float) -> list[Figure]:
    """Resident memory at the end of the paced run against its start and its middle."""
    figures = []
    for name, (start, middle, end) in memory.items():
        label = f"{'trainer' if name == 'fresh' else name} RSS after {seconds:.0f} s at {RATE:,}/s"
        for baseline, value in (("RSS at its start", start), ("RSS half way", middle)):
            figures.append(Figure(label, end / 1024, "MiB", baseline, value / 1024, False))
    return figures

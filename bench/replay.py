"""Backtest throughput: `replay.backtest` on a slice beside the live trainer's path.

The same stream (logistic labels, 32 features, one partition) is learned per event by a
replay backtest (slice resolution, reading, the trainer's learner and decoder, a curve point
every 1,000 events) and by the live trainer's consume -> decode -> learn loop, in the same
run. Both are timed from creating their consumer to learning the last event, after a
warm-up that loads the compiled code: on this 2-core box, reading, not learning, is the
limit of both, and a consumer that had idle time to prefetch would look faster than it is.
"""

from __future__ import annotations

import threading
import time
import uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench import trainer
from bench.core import BenchContext, Figure
from services.replay import replay
from services.replay.runs import Run
from services.replay.slices import SliceSpec, resolve
from services.trainer.decode import decode
from services.trainer.learner import Learner
from shared.kafka.admin import TopicSpec, ensure_topics
from shared.kafka.config import consumer_config
from shared.kafka.consumer import consume_batches


def run(ctx: BenchContext) -> list[Figure]:
    """Replay backtest vs the live trainer path, events/s."""
    n = ctx.count(200_000)
    x, y = trainer.stream(n)
    topic = f"bench.replay.{uuid.uuid4().hex[:8]}"
    ensure_topics(AdminClient(ctx.kafka.client_config()), [TopicSpec(topic, 1)])
    trainer.produce_stream(ctx, topic, x, y)
    warm = resolve(ctx.kafka, SliceSpec(topic, to_offset=1000))
    replay.backtest(ctx.kafka, warm, [Run("warm-up", trainer.config(1))])
    live = _live(ctx, topic, n)
    started = time.perf_counter()
    piece = resolve(ctx.kafka, SliceSpec(topic))
    replay.backtest(ctx.kafka, piece, [Run("bench", trainer.config(1))])
    backtest = n / (time.perf_counter() - started)
    return [Figure("backtest, per event", backtest, "events/s", "live trainer path", live)]


def _live(ctx: BenchContext, topic: str, n: int) -> float:
    """The trainer loop's core: batched consume, decode, learn (no checkpoints, no versions)."""
    learner = Learner(trainer.config(1))
    started = time.perf_counter()
    consumer = Consumer(
        consumer_config(
            ctx.kafka, f"bench-{uuid.uuid4().hex[:8]}", max_partition_fetch_bytes=trainer.MAX_FETCH
        )
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen, stop = 0, threading.Event()
    try:
        for records in consume_batches(consumer, stop, batch_size=5000):
            learner.learn(decode(records, "binary", trainer.FEATURES)[0])
            seen += len(records)
            if seen >= n:
                stop.set()
        return n / (time.perf_counter() - started)
    finally:
        consumer.close()

"""Backtest throughput: `replay.backtest` on a slice beside the live trainer's path.

The same stream (logistic labels, 32 features, one partition) is learned per event by a
replay backtest (slice resolution, merged reads, the trainer's learner and decoder,
curve points every 1,000 events) and by the live trainer's consume -> decode -> learn path
(`bench trainer`'s per-event measurement), in the same run. Both are timed from their first
records to their last (connecting and the first fetch excluded), after a warm-up.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka.admin import AdminClient

from bench import trainer
from bench.core import BenchContext, Figure
from services.replay import replay
from services.replay.runs import Run
from services.replay.slices import SliceSpec, resolve
from shared.kafka.admin import TopicSpec, ensure_topics


def run(ctx: BenchContext) -> list[Figure]:
    """Replay backtest vs the live trainer path, events/s."""
    n = ctx.count(200_000)
    x, y = trainer.stream(n)
    topic = f"bench.replay.{uuid.uuid4().hex[:8]}"
    ensure_topics(AdminClient(ctx.kafka.client_config()), [TopicSpec(topic, 1)])
    trainer.produce_stream(ctx, topic, x, y)
    live = trainer.from_kafka(ctx, topic, n, batch_size=1)
    warm = resolve(ctx.kafka, SliceSpec(topic, to_offset=1000))  # load compiled code first,
    replay.backtest(ctx.kafka, warm, [Run("warm-up", trainer.config(1))])  # as the live path
    piece = resolve(ctx.kafka, SliceSpec(topic))
    marks: list[tuple[float, int]] = []  # timed like the live path: from the first records on
    replay.backtest(
        ctx.kafka,
        piece,
        [Run("bench", trainer.config(1))],
        lambda done: marks.append((time.perf_counter(), done)),
    )
    (first, first_done), (last, last_done) = marks[0], marks[-1]
    backtest = (last_done - first_done) / (last - first)
    return [Figure("backtest, per event", backtest, "events/s", "live trainer path", live)]

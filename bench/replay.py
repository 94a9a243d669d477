"""Backtest throughput: `replay.backtest` on a slice beside the live trainer.

The same stream (logistic labels, 32 features, one partition) is learned per event by a
replay backtest (slice resolution, reading, the trainer's learner and decoder, a curve point
every 1,000 events), by the trainer service's own loop (`TrainerLoop` as deployed: offsets,
checkpoints every 100k events / 10 s; no registry) and by a bare consume -> decode -> learn
loop, in the same run, three rounds alternating, medians reported. Each is timed from
creating its consumer to learning the last event, after a warm-up that loads the compiled
code: on this 2-core box reading is the limit, and a consumer that had idle time to prefetch
would look faster than it is.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable

from confluent_kafka.admin import AdminClient

from bench import trainer
from bench.core import BenchContext, Figure
from services.replay import replay
from services.replay.runs import Run
from services.replay.slices import SliceReader, SliceSpec, resolve
from shared.kafka.admin import TopicSpec, ensure_topics


def run(ctx: BenchContext) -> list[Figure]:
    """Replay backtest vs the live trainer path, events/s."""
    n = ctx.count(200_000)
    x, y = trainer.stream(n)
    topic = f"bench.replay.{uuid.uuid4().hex[:8]}"
    ensure_topics(AdminClient(ctx.kafka.client_config()), [TopicSpec(topic, 1)])
    trainer.produce_stream(ctx, topic, x, y)
    warm = resolve(ctx.kafka, SliceSpec(topic, to_offset=1000))
    replay.backtest(ctx.kafka, warm, [Run("warm-up", trainer.config(1))])
    # Alternate the two, three rounds each, and keep the medians: on a 2-core box the broker's
    # pauses otherwise favour whichever runs first.
    live: list[float] = []
    service: list[float] = []
    backtest: list[float] = []
    measures: list[tuple[list[float], Callable[[], float]]] = [
        (live, lambda: trainer.from_kafka(ctx, topic, n, 1, from_creation=True)),
        (service, lambda: trainer.service_loop(ctx, topic, n)),
        (backtest, lambda: _backtest(ctx, topic, n)),
    ]
    for round_ in range(3):  # each takes every position once: no order bias
        for results, measure in measures[round_:] + measures[:round_]:
            results.append(measure())
    rate = statistics.median(backtest)
    return [
        Figure(
            "backtest, per event (median of 3)",
            rate,
            "events/s",
            "trainer service loop",
            statistics.median(service),
        ),
        Figure(
            "backtest, per event (median of 3)",
            rate,
            "events/s",
            "bare consume-decode-learn loop",
            statistics.median(live),
        ),
    ]


def _backtest(ctx: BenchContext, topic: str, n: int) -> float:
    started = time.perf_counter()
    with SliceReader(ctx.kafka) as reader:  # as the CLI: one consumer resolves and reads
        piece = reader.resolve(SliceSpec(topic))
        replay.backtest(reader, piece, [Run("bench", trainer.config(1))])
    return n / (time.perf_counter() - started)

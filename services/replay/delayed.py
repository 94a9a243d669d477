"""Learning with label delays: each event is served before its label arrives, as in production.

A `Run` given a `LabelDelay` hands its decoded mini-batch segments here instead of learning
them at once. The semantics:

- Events are taken in the run's order: the slice order as the trainer takes it (its
  `Batcher`: the run's streams only, whole mini-batches per partition).
- An event's time is its sample's event time when set, else its record's Kafka timestamp
  (`timing.py`). The event time is when the event happened, the time labels are counted
  from (the joiner's recorded delay is the label's event time minus the prediction's);
  the Kafka timestamp says when a record was written, which a redrive or a backfill moves,
  so it only stands in for samples without an event time.
- Time does not run backwards in a replay: the clock is the latest event time seen so far.
  Slices merge partitions by Kafka timestamp and event times may be out of order; an event
  earlier than the clock is served by the model as it is at the clock (what was learned
  stays learned). With delay 0 this makes the run exactly today's test-then-train.
- An event's label time is its time plus its delay (fixed, or its own recorded delay).
- At each event the run first learns every held event whose label time is at or before
  the clock, in label-time order (ties: the run's order), then predicts the event with
  the current model (`Learner.predict`), scores that prediction into the "as served"
  prequential metrics (`served`, the trainer's own `Prequential`, over the config's
  metrics window), and holds the event until its label time.
- Released events are learned with `Learner.learn`, as the trainer learns: in mini-batches
  of `batch_size`, in release order (a batch record's short last mini-batch still ends a
  mini-batch, as the trainer's cut), each learned event scored test-then-train into the
  learner's own ("immediate") metrics. An incomplete mini-batch waits for more releases.
- At the end of the slice (`finish`) every held event is learned, the last mini-batch
  possibly short.

Served scores count the rows the learner can use (finite features and label, a class and
ids in range); rows the divergence guard later refuses are served (and scored) all the
same, as inference would have served them. Losses are the trainer's: squared error, Huber,
log-loss or -log p(label), times the sample weight.

Batching: the model only changes when a mini-batch is learned, so consecutive predictions
with no learning between them are one `predict` call, and all the mini-batches learned
between two predictions are one `learn` call. Events that share a millisecond, or a delay
that releases many labels at once, make few large calls.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import numpy as np
import torch
from confluent_kafka import Message

from services.replay.delay import LabelDelay
from services.replay.scoring import losses_of
from services.replay.timing import UNKNOWN, row_times
from services.trainer.learner import Batch, Learner
from services.trainer.metrics import Prequential
from shared.features import Featurizer

_NEVER = -(2**62)  # before any time: a row without a time before the first one that has it


@dataclass
class Delayed:
    """One run's served metrics, held events and released events waiting for a mini-batch."""

    learner: Learner
    delay: LabelDelay
    every: int = 1000
    curve: list[dict[str, float]] = field(default_factory=list)
    featurizer: Featurizer | None = None
    served: Prequential = field(init=False)
    bad_delays: int = 0  # recorded delays that were not usable (counted as none)
    clock: int = _NEVER
    # label time, seq, segment, row, whether the row ends a mini-batch early
    _held: list[tuple[int, int, int, int, bool]] = field(default_factory=list)
    _ready: list[tuple[int, int, bool]] = field(default_factory=list)  # part, row, ends a batch
    _cuts: int = 0  # rows in _ready that end a mini-batch early
    _parts: dict[int, Batch] = field(default_factory=dict)  # segments with rows not learned
    _left: dict[int, int] = field(default_factory=dict)  # per segment: rows not learned yet
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _next_part: int = 0
    _next_point: int = 0

    def __post_init__(self) -> None:
        config = self.learner.config
        self.served = Prequential(config.task, config.metrics_window)
        self._next_point = self.every

    @property
    def held(self) -> int:
        """Events predicted whose labels have not arrived yet."""
        return len(self._held)

    def feed(self, records: list[Message], batch: Batch) -> None:
        """Serve, hold and release the rows of one decoded segment (`records` decoded)."""
        n = len(batch)
        if n == 0:
            return
        config = self.learner.config
        times = row_times(records, config.task, config.model.features, self.featurizer)
        self.bad_delays += times.bad_delays
        known = np.where(times.event_ms == UNKNOWN, _NEVER, times.event_ms)
        clocks = np.maximum.accumulate(np.maximum(known, self.clock))
        own = np.where(times.event_ms == UNKNOWN, clocks, known)
        labels = own + (times.delay_ms if self.delay.recorded else self.delay.ms)
        part = self._next_part
        self._next_part += 1
        self._parts[part], self._left[part] = batch, n
        # a segment that ends with a short mini-batch (a batch record's) ends one there too
        short_end = n % config.batch_size != 0
        ok = usable(batch, self.learner)
        pending = 0  # rows [pending, i) are served by the current model, not yet predicted
        held, seq = self._held, self._seq
        for i, (clock, label) in enumerate(zip(clocks.tolist(), labels.tolist(), strict=True)):
            if held and held[0][0] <= clock and self._release(clock):
                self._serve(batch, ok, pending, i)
                pending = i
                self._learn_ready(final=False)
            heapq.heappush(held, (label, next(seq), part, i, short_end and i == n - 1))
        self.clock = int(clocks[-1])
        self._serve(batch, ok, pending, n)

    def finish(self) -> None:
        """The end of the slice: every held event's label arrives; learn them all."""
        self._release(None)
        self._learn_ready(final=True)

    def _release(self, clock: int | None) -> bool:
        """Move held events whose label time is at most `clock` (None: all) to the ready queue.

        Returns whether a mini-batch can now be learned.
        """
        held = self._held
        while held and (clock is None or held[0][0] <= clock):
            _, _, part, row, cut = heapq.heappop(held)
            self._ready.append((part, row, cut))
            self._cuts += cut
        return len(self._ready) >= self.learner.config.batch_size or self._cuts > 0

    def _learn_ready(self, final: bool) -> None:
        """Learn the ready events in whole mini-batches (`final`: the rest too), in order."""
        size, ready = self.learner.config.batch_size, self._ready
        calls: list[tuple[int, int]] = []  # one learn call per run of mini-batches
        start = call = 0
        for k, (_, _, cut) in enumerate(ready):
            full = k + 1 - start == size
            if full or cut:
                start = k + 1
            if cut and not full:  # a short mini-batch ends its learn call
                calls.append((call, start))
                call = start
        if final and start < len(ready):
            start = len(ready)
        if call < start:
            calls.append((call, start))
        for first, stop in calls:
            self.learner.learn(self._gather(ready[first:stop]))
        self._cuts -= sum(cut for _, _, cut in ready[:start])
        del ready[:start]

    def _gather(self, rows: list[tuple[int, int, bool]]) -> Batch:
        """The rows of held segments as one batch, in order; segments fully learned are freed."""
        pieces = []
        for part, group in itertools.groupby(rows, key=lambda r: r[0]):
            index = [row for _, row, _ in group]
            first, last = index[0], index[-1]
            if last - first + 1 == len(index) and index == list(range(first, last + 1)):
                pieces.append(self._parts[part].slice(first, last + 1))  # the usual case
            else:
                pieces.append(self._parts[part].take(torch.tensor(index)))
            self._left[part] -= len(index)
            if self._left[part] == 0:
                del self._parts[part], self._left[part]
        return pieces[0] if len(pieces) == 1 else _concat(pieces)

    def _serve(self, batch: Batch, ok: np.ndarray, start: int, stop: int) -> None:
        """Predict rows [start, stop) with the current model and score the usable (`ok`) ones."""
        if not ok[start:stop].any():
            return
        rows = batch.slice(start, stop)
        if not ok[start:stop].all():
            rows = rows.take(torch.from_numpy(np.flatnonzero(ok[start:stop])))
        predictions = self.learner.predict(rows)
        labels = rows.labels.numpy()
        weights = rows.weights.numpy() if rows.weights is not None else None
        losses = losses_of(self.learner.config, predictions, labels, weights)
        done = 0
        while done < len(labels):  # points fall on multiples of `every` served events
            room = max(self._next_point - self.served.events, 1)
            part = slice(done, done + room)
            self.served.update(predictions[part], labels[part], losses[part])
            done += room
            if self.served.events >= self._next_point:
                self.curve.append(self.snapshot())
                self._next_point += self.every

    def snapshot(self) -> dict[str, float]:
        """The served metrics now, with the events served and the events learned."""
        learned = self.learner.applied + self.learner.skipped
        return self.served.snapshot() | {
            "events": float(self.served.events),
            "learned": float(learned),
        }


def usable(batch: Batch, learner: Learner) -> np.ndarray:
    """Rows the learner can learn (its guard's rule): those a served score counts."""
    features, labels = batch.features, batch.labels
    # a named row's NaN is a missing value, imputed by the input layer
    missing_ok = batch.named
    ok = ~torch.isinf(features).any(dim=1) if missing_ok else torch.isfinite(features).all(dim=1)
    ok &= torch.isfinite(labels.float())
    if batch.weights is not None:
        ok &= torch.isfinite(batch.weights)
    config = learner.config
    if config.task == "multiclass":
        ok &= (labels >= 0) & (labels < config.outputs)
    if learner.uses_sparse and batch.sparse is not None and batch.sparse.shape[1]:
        buckets = config.model.sparse_buckets
        ok &= ((batch.sparse >= 0) & (batch.sparse < buckets)).all(dim=1)
    return np.asarray(ok.numpy(), dtype=bool)


def _concat(pieces: list[Batch]) -> Batch:
    def joined(ts: list[torch.Tensor | None]) -> torch.Tensor | None:
        present = [t for t in ts if t is not None]
        return torch.cat(present) if len(present) == len(ts) else None

    return Batch(
        torch.cat([p.features for p in pieces]),
        torch.cat([p.labels for p in pieces]),
        joined([p.weights for p in pieces]),
        joined([p.sparse for p in pieces]),
        pieces[0].named,
        _served([p.served for p in pieces], [len(p) for p in pieces]),
    )


def _served(pieces: list[torch.Tensor | None], rows: list[int]) -> torch.Tensor | None:
    """The pieces' served scores in one tensor: NaN rows for pieces that have none."""
    widths = {t.shape[1] for t in pieces if t is not None}
    if not widths:
        return None
    width = widths.pop()
    return torch.cat(
        [
            t if t is not None else torch.full((n, width), float("nan"))
            for t, n in zip(pieces, rows, strict=True)
        ]
    )

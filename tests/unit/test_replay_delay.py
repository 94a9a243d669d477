"""Replay with label delays: served predictions come from the model before the labels arrived."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE

from services.joiner.outputs import LABEL_DELAY_MS
from services.replay.delay import LabelDelay, parse_delay, parse_duration
from services.replay.delayed import Delayed
from services.replay.runs import Run
from services.replay.scoring import losses_of
from services.replay.timing import UNKNOWN, row_times
from services.trainer.config import ModelSpec, OptimizerSpec, TrainerConfig
from services.trainer.decode import decode
from services.trainer.learner import Batch, Learner
from services.trainer.metrics import Prequential
from shared import samples
from shared.errors import InvalidArgument
from shared.fakes import FakeMessage
from streamlearn.v1 import sample_pb2
from tests.helpers import plain

T0 = 1_700_000_000_000  # unix ms
Optimizer = Literal["sgd", "adam"]
Loss = Literal["bce", "mse", "huber", "cross_entropy"]
Kind = Literal["logistic", "linear", "softmax"]
BATCH_HEADERS = [(samples.CONTENT_TYPE, samples.BATCH_TYPE)]


@dataclass
class TimedMessage(FakeMessage):
    """A fake record with a Kafka timestamp, as `confluent_kafka.Message.timestamp()` gives."""

    _ts: int = 0

    def timestamp(self) -> tuple[int, int]:
        kind = TIMESTAMP_NOT_AVAILABLE if self._ts < 0 else TIMESTAMP_CREATE_TIME
        return kind, self._ts


def sample(
    x: Sequence[float] | np.ndarray,
    label: float,
    event_ms: int | None = None,
    delay: str | None = None,
    task: str = "binary",
) -> sample_pb2.Sample:
    out = sample_pb2.Sample(event_id="e", stream="s", dense=list(x))
    if task == "regression":
        out.regression = label
    else:
        out.class_index = int(label)
    if event_ms is not None:
        out.event_time.FromMilliseconds(event_ms)
    if delay is not None:
        out.attributes[LABEL_DELAY_MS] = delay
    return out


def record(
    value: sample_pb2.Sample | bytes, offset: int, kafka_ms: int, partition: int = 0
) -> TimedMessage:
    data = value if isinstance(value, bytes) else value.SerializeToString()
    return TimedMessage("t", partition, offset, b"k", data, None, None, kafka_ms)


def logistic(batch_size: int = 1, optimizer: Optimizer = "sgd", lr: float = 0.2) -> TrainerConfig:
    return TrainerConfig(
        model=ModelSpec(kind="logistic", features=3),
        optimizer=OptimizerSpec(name=optimizer, lr=lr),
        batch_size=batch_size,
        metrics_window=50,
    )


def stream(n: int, per_ms: int = 4, partitions: int = 1, seed: int = 0) -> list[TimedMessage]:
    """A logistic stream; `per_ms` events share each millisecond of event time."""
    rng = np.random.default_rng(seed)
    weights = np.array([1.5, -2.0, 0.5])
    out = []
    for i in range(n):
        x = rng.normal(size=3)
        y = float(rng.random() < 1 / (1 + np.exp(-x @ weights)))
        t = T0 + i // per_ms
        out.append(record(sample(x, y, t), i // partitions, t, i % partitions))
    return out


def replayed(
    config: TrainerConfig, records: Sequence[TimedMessage], delay: LabelDelay | None, chunk: int
) -> Run:
    run = Run("r", config, every=40, label_delay=delay)
    for start in range(0, len(records), chunk):
        run.feed(records[start : start + chunk])  # type: ignore[arg-type]
    run.finish()
    return run


def same_state(a: Run, b: Run) -> bool:
    state_a, state_b = a.learner.state(), b.learner.state()
    tensors = all(torch.equal(t, state_b["network"][k]) for k, t in state_a["network"].items())
    return (
        tensors
        and plain(state_a["metrics"]) == plain(state_b["metrics"])
        and ((a.learner.applied, a.learner.skipped) == (b.learner.applied, b.learner.skipped))
    )


# -- delay 0 is today's test-then-train ------------------------------------------------------


def with_batch_records(records: list[TimedMessage]) -> list[TimedMessage]:
    """`records` with a `SampleBatch` record of 5 rows (a short mini-batch) after the 30th."""
    rng = np.random.default_rng(7)
    columns = samples.Columns(
        "s",
        [f"b{i}" for i in range(5)],
        ["k"] * 5,
        np.full(5, T0 + 8, np.int64),
        rng.normal(size=(5, 3)).astype(np.float32),
        np.array([1, 0, 1, 1, 0], np.int32),
        np.ones(5, np.float32),
    )
    batch = TimedMessage("t", 0, 0, b"k", samples.encode_batch(columns), BATCH_HEADERS, None, T0)
    out = [*records[:30], batch, *records[30:]]
    for offset, msg in enumerate(out):
        msg._offset = offset
    return out


@pytest.mark.parametrize(
    ("config", "partitions", "batches"),
    [
        (logistic(), 1, False),  # the compiled per-event path
        (logistic(optimizer="adam", lr=0.05), 3, False),
        (logistic(batch_size=4), 3, False),  # torch mini-batches, partitions interleaved
        (logistic(batch_size=4), 1, True),  # a batch record's short mini-batch
        (
            TrainerConfig(
                model=ModelSpec(kind="mlp", features=3, hidden=[8]),
                optimizer=OptimizerSpec(name="adam", lr=0.01),
                loss="huber",
                batch_size=3,
                metrics_window=50,
            ),
            2,
            False,
        ),
    ],
)
def test_a_delay_of_zero_is_todays_test_then_train_bit_for_bit(
    config: TrainerConfig, partitions: int, batches: bool
) -> None:
    records = stream(403, partitions=partitions)
    if batches:
        records = with_batch_records(records)
    today = replayed(config, records, None, chunk=97)
    delayed = replayed(config, records, LabelDelay(0), chunk=97)
    assert today.learner.applied > 390
    assert same_state(today, delayed)
    served, immediate = delayed.report()["final"], delayed.report()["immediate"]
    assert served["events"] == immediate["events"] == today.events
    # the same predictions, through `predict` rather than the learning step
    assert served["loss"] == pytest.approx(immediate["loss"], rel=1e-5)
    assert served.get("accuracy") == immediate.get("accuracy")
    assert delayed.report()["label_delay"] == "0ms" and delayed.report()["held"] == 0


def test_a_fixed_delay_learns_the_same_events_in_the_same_order_but_serves_older_models() -> None:
    records = stream(400)
    today = replayed(logistic(), records, None, chunk=100)
    delayed = replayed(logistic(), records, LabelDelay(20), chunk=100)
    assert same_state(today, delayed)  # one partition: labels arrive in the events' order
    report = delayed.report()
    assert report["label_delay"] == "20ms"
    assert report["final"]["loss"] > report["immediate"]["loss"]  # served from staler models
    # a point's served events run ahead of the learned ones by the events of the last 20 ms
    point = report["curve"][2]
    assert point["events"] - point["learned"] == pytest.approx(20 * 4, abs=4)


# -- a delay longer than the slice: nothing is learned before it is served --------------------


def label_is_a_feature(n: int) -> list[TimedMessage]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        label = float(rng.integers(0, 2))
        x = [2 * label - 1, rng.normal(), 1.0]
        out.append(record(sample(x, label, T0 + i), i, T0 + i))
    return out


def test_with_a_delay_longer_than_the_slice_the_served_metrics_are_a_fresh_models() -> None:
    records = label_is_a_feature(300)
    run = replayed(logistic(), records, LabelDelay(parse_duration("1h")), chunk=64)
    fresh = Learner(run.config, "cpu")
    batch, _ = decode(records, "binary", 3)  # type: ignore[arg-type]
    predictions = fresh.predict(batch)
    labels = batch.labels.numpy()
    expected = Prequential("binary", run.config.metrics_window)
    expected.update(predictions, labels, losses_of(run.config, predictions, labels))
    report = run.report()
    assert report["final"] == expected.snapshot() | {"events": 300.0, "learned": 300.0}
    assert all(point["learned"] == 0 for point in report["curve"][:-1])
    # learned at the end all the same: the immediate metrics see an easy stream
    assert report["applied"] == 300 and report["immediate"]["accuracy"] > 0.9
    assert report["final"]["accuracy"] < 0.7


# -- who was learned before each prediction ------------------------------------------------------


class Spy(Learner):
    """A learner that logs each call: ("predict" | "learn", the ids in feature 0)."""

    def __init__(self, config: TrainerConfig) -> None:
        super().__init__(config, "cpu")
        self.log: list[tuple[str, list[int]]] = []

    def learn(self, batch: Batch) -> None:
        self.log.append(("learn", batch.features[:, 0].int().tolist()))
        super().learn(batch)

    def predict(self, batch: Batch) -> np.ndarray:
        self.log.append(("predict", batch.features[:, 0].int().tolist()))
        return super().predict(batch)


Row = tuple[int, int | None, str | None]  # Kafka ms, event ms, delay attribute


def spied(
    rows: Sequence[Row],
    delay: LabelDelay,
    batch_size: int = 1,
    chunks: Sequence[int] = (),
) -> list[tuple[str, list[int]]]:
    """Feed events (Kafka ms, event ms, delay attribute) whose feature 0 is their index."""
    records = [
        record(sample([i, 0.0, 1.0], i % 2, event, attribute), i, kafka)
        for i, (kafka, event, attribute) in enumerate(rows)
    ]
    config = logistic(batch_size)
    spy = Spy(config)
    delayed = Delayed(spy, delay, every=1000)
    cuts = [0, *chunks, len(records)]
    for start, stop in itertools.pairwise(cuts):
        part = records[start:stop]
        delayed.feed(part, decode(part, "binary", 3)[0])  # type: ignore[arg-type]
    delayed.finish()
    assert spy.applied + spy.skipped == len(rows)
    assert delayed.served.events == len(rows)
    return spy.log


def test_recorded_delays_are_each_records_own() -> None:
    rows = [
        (T0 + t, T0 + t, d) for t, d in [(0, "25"), (10, "0"), (20, None), (30, "100"), (40, "0")]
    ]
    assert spied(rows, LabelDelay(recorded=True)) == [
        ("predict", [0, 1]),
        ("learn", [1]),  # its label arrived at 10
        ("predict", [2]),
        ("learn", [2, 0]),  # in label-time order: 20, then 25
        ("predict", [3, 4]),
        ("learn", [4, 3]),  # the end of the slice: 40, then 130
    ]


def test_a_fixed_delay_ignores_recorded_ones_and_the_event_time_wins_over_kafkas() -> None:
    # Kafka timestamps say nothing happened for a minute; the event times say 10 ms apart.
    rows = [(T0 + 60_000 * i, T0 + 10 * i, "100000") for i in range(4)]
    assert spied(rows, LabelDelay(ms=15)) == [
        ("predict", [0, 1]),
        ("learn", [0]),  # at 20 the label of 0 (at 15) has arrived, not that of 1 (at 25)
        ("predict", [2]),
        ("learn", [1]),
        ("predict", [3]),
        ("learn", [2, 3]),
    ]


def test_ties_in_label_time_go_in_slice_order() -> None:
    rows: list[Row] = [
        (T0, T0 + 3, "7"),  # label at 10
        (T0, T0, "10"),  # label at 10 too: after the first, though it happened before it
        (T0, T0 + 10, "0"),
        (T0, T0 + 10, "0"),
    ]
    assert spied(rows, LabelDelay(recorded=True), chunks=[1, 2]) == [
        ("predict", [0]),
        ("predict", [1]),  # another segment: another call, with the same model
        ("learn", [0, 1]),  # at 10: both labels, in slice order
        ("predict", [2]),
        ("learn", [2]),  # 2's label (at 10) arrives at 3's time (10), before 3 is served
        ("predict", [3]),
        ("learn", [3]),
    ]


def test_the_clock_never_runs_backwards() -> None:
    # 1 happened before 0 but comes after it: served when 0's label has arrived, as the
    # trainer's test-then-train would have it with no delay.
    rows: list[Row] = [(T0, T0 + 10, None), (T0, T0 + 5, None)]
    assert spied(rows, LabelDelay(0)) == [
        ("predict", [0]),
        ("learn", [0]),
        ("predict", [1]),
        ("learn", [1]),
    ]


def test_mini_batches_are_learned_whole_in_release_order() -> None:
    rows = [(T0 + i, T0 + i, None) for i in range(10)]
    assert spied(rows, LabelDelay(ms=3), batch_size=4) == [
        # at 5 the labels of 0..2 have arrived: no whole mini-batch yet, the model stays
        ("predict", [0, 1, 2, 3, 4, 5]),
        ("learn", [0, 1, 2, 3]),  # at 6, with 3's label
        ("predict", [6, 7, 8, 9]),  # 4..6 wait for a fourth label
        ("learn", [4, 5, 6, 7, 8, 9]),  # at the end: 4..7, then the short 8, 9
    ]


def test_many_events_released_together_are_few_large_calls() -> None:
    records = stream(4000, per_ms=50)  # 80 ms of events
    config = logistic()
    spy = Spy(config)
    delayed = Delayed(spy, LabelDelay(ms=5), every=1000)
    for start in range(0, len(records), 500):
        part = records[start : start + 500]
        delayed.feed(part, decode(part, "binary", 3)[0])  # type: ignore[arg-type]
    delayed.finish()
    assert spy.applied == 4000 and delayed.served.events == 4000
    assert len(spy.log) <= 2 * (80 + 8)  # one of each per millisecond (and per chunk)


# -- times and delays read from the records ----------------------------------------


def test_row_times_read_event_times_batch_rows_and_recorded_delays() -> None:
    columns = samples.Columns(
        "s",
        ["a", "b", "c"],
        ["k"] * 3,
        np.array([T0 + 5, 0, T0 + 7], np.int64),  # the second row has no time
        np.zeros((3, 3), np.float32),
        np.array([1, 0, 1], np.int32),
        np.ones(3, np.float32),
    )
    records = [
        record(sample([0, 0, 0], 1, T0 + 1, "250"), 0, T0 + 100),
        record(sample([0, 0, 0], 1, None, None), 1, T0 + 101),  # no event time: Kafka's
        TimedMessage("t", 0, 2, b"k", samples.encode_batch(columns), BATCH_HEADERS, None, T0 + 102),
        record(b"\xff\xff not a sample", 3, T0 + 103),
        record(sample([0, 0, 0], 1, T0 + 4, "-5"), 4, T0 + 104),  # hostile: no delay, counted
        record(sample([0, 0, 0], 1, T0 + 5, "9" * 40), 5, T0 + 105),
        record(sample([0, 0, 0], 1, None, "12"), 6, -1),  # no time at all
    ]
    times = row_times(records, "binary", 3, None)  # type: ignore[arg-type]
    assert len(times.event_ms) == len(decode(records, "binary", 3)[0]) == 9  # type: ignore[arg-type]
    assert times.event_ms.tolist() == [
        T0 + 1, T0 + 101, T0 + 5, T0 + 102, T0 + 7, T0 + 103, T0 + 4, T0 + 5, UNKNOWN
    ]  # fmt: skip
    assert times.delay_ms.tolist() == [250, 0, 0, 0, 0, 0, 0, 0, 12]
    assert times.bad_delays == 2


def test_records_without_any_time_are_served_at_the_clock() -> None:
    rows: list[Row] = [
        (T0, T0, None),
        (-1, None, None),  # no time: now, i.e. T0; its label at T0 + 5
        (T0 + 5, T0 + 5, None),
    ]
    assert spied(rows, LabelDelay(ms=5)) == [
        ("predict", [0, 1]),
        ("learn", [0, 1]),
        ("predict", [2]),
        ("learn", [2]),
    ]


# -- parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [("30s", 30_000), ("5m", 300_000), ("2h", 7_200_000), ("250ms", 250), ("1.5", 1_500),
     ("0", 0), (" 45 ", 45_000), ("0.25s", 250), ("8760h", 8760 * 3_600_000)],
)  # fmt: skip
def test_durations_parse_to_milliseconds(text: str, ms: int) -> None:
    assert parse_duration(text) == ms
    assert parse_delay(text) == LabelDelay(ms=ms)


@pytest.mark.parametrize(
    "text", ["", "soon", "-5s", "5 minutes", "1e3", "30S", "5d", "nan", "inf", "1.2.3s", "99999h",
             "9" * 400, "recorded-ish"],
)  # fmt: skip
def test_bad_durations_are_a_clear_usage_error(text: str) -> None:
    with pytest.raises(InvalidArgument, match="--label-delay"):
        parse_delay(text)


def test_recorded_and_descriptions() -> None:
    assert parse_delay("recorded") == LabelDelay(recorded=True) == parse_delay(" Recorded ")
    assert [parse_delay(t).describe() for t in ("recorded", "90s", "2h", "250ms", "0", "1.5")] == [
        "recorded", "90s", "2h", "250ms", "0ms", "1500ms"
    ]  # fmt: skip


def test_the_cli_refuses_a_bad_delay_in_one_line_before_asking_the_broker(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(logistic().model_dump_json())
    cli = str(Path(sys.executable).parent / "streamlearn")
    env = os.environ | {"STREAMLEARN_KAFKA_BOOTSTRAP": "127.0.0.1:1"}  # nothing listens there
    done = subprocess.run(
        [cli, "replay", "backtest", "--config", str(config), "--label-delay", "5 minutes"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: --label-delay '5 minutes': expected a duration")
    assert "Traceback" not in done.stderr


# -- served losses are the trainer's --------------------------------------------------


@pytest.mark.parametrize(
    ("loss", "model", "outputs"),
    [("bce", "logistic", 1), ("mse", "linear", 1), ("huber", "linear", 1),
     ("cross_entropy", "softmax", 3)],
)  # fmt: skip
def test_served_losses_are_the_learners_own_per_event_losses(
    loss: Loss, model: Kind, outputs: int
) -> None:
    config = TrainerConfig(
        model=ModelSpec(kind=model, features=3, classes=3),
        loss=loss,
        huber_delta=0.5,
    )
    rng = np.random.default_rng(5)
    scores = torch.from_numpy(rng.normal(0, 3, size=(64, outputs)).astype(np.float32))
    if config.task == "multiclass":
        labels = torch.from_numpy(rng.integers(0, 3, 64))
        expected = torch.nn.CrossEntropyLoss(reduction="none")(scores, labels)
        predictions = torch.softmax(scores, dim=-1)
    elif config.task == "binary":
        labels = torch.from_numpy(rng.integers(0, 2, 64).astype(np.float32))
        expected = torch.nn.BCEWithLogitsLoss(reduction="none")(scores[:, 0], labels)
        predictions = torch.sigmoid(scores)
    else:
        labels = torch.from_numpy(rng.normal(0, 2, 64).astype(np.float32))
        fn = torch.nn.MSELoss if loss == "mse" else torch.nn.HuberLoss
        kwargs = {"delta": 0.5} if loss == "huber" else {}
        expected = fn(reduction="none", **kwargs)(scores[:, 0], labels)
        predictions = scores
    weights = rng.uniform(0.5, 2, 64).astype(np.float32)
    served = losses_of(config, predictions.numpy(), labels.numpy(), weights)
    assert served == pytest.approx(expected.numpy() * weights, rel=1e-4, abs=1e-6)


def test_a_confident_right_answer_scores_a_finite_loss() -> None:
    sure = np.array([[1.0], [0.0]], np.float32)  # float32 rounds 1 - 1e-12 up to 1
    losses = losses_of(logistic(), sure, np.array([1.0, 0.0]))
    assert np.isfinite(losses).all() and (losses < 1e-9).all()


def test_served_scores_of_joined_samples_survive_a_delayed_replay() -> None:
    records = stream(400)
    for i, timed in enumerate(records):  # every other record carries what was served
        if i % 2 == 0:
            parsed = sample_pb2.Sample.FromString(timed.value())
            parsed.served_score[:] = [0.9 if parsed.class_index else 0.1]
            records[i] = record(parsed, timed.offset(), timed.timestamp()[1])
    today = replayed(logistic(), records, None, chunk=100)
    # small segments released many at a time: rows gathered from several segments
    delayed = replayed(logistic(), records, LabelDelay(50), chunk=7)
    for run in (today, delayed):  # the served predictions are scored once each, either way
        scores = run.learner.scores()
        assert scores["served_events"] == 200 and scores["served_accuracy"] == 1.0

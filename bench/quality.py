"""Prequential quality of the default config beside River's standard pipeline (issue #14).

Each real dataset River ships without a download (binary Phishing and Bananas, multi-class
ImageSegments, regression TrumpApproval and ChickWeights) is read as River yields it: dicts
of raw named values. streamlearn featurizes every event with `shared.features.Featurizer`
under a `FeatureSpace` inferred from the value types (numbers -> numeric, text ->
categorical, hashed into 2**16 buckets), and learns it with the trainer's `Learner` under a
`TrainerConfig` that names only `model.kind`, `model.features`, `model.classes`
(multi-class) and `model.sparse_buckets` (when there are categorical fields): everything
else is the default. River learns the same events in the same order with
`StandardScaler | LogisticRegression` (`SoftmaxRegression` for multi-class,
`LinearRegression` for regression), all defaults, text fields one-hot encoded beside the
scaled numbers.

Figures, per dataset:

- quality: prequential accuracy (classification; ratio ours / River's) or MAE (regression;
  ratio River's / ours), so > 1 means streamlearn is better. Both sides predict each event
  before learning it, with the model as it was after the previous event: streamlearn's
  prediction is `Learner.predict` of the event just before `Learner.learn` of it, River's
  is `predict_one` before `learn_one` (neither moves the scaler's statistics), scored by
  `metrics.Accuracy` / `metrics.MAE`. Every event counts, also one the learner's guards
  refuse: its own window counts only the events it learned (and scores each after folding
  its features into the input statistics), so it could hide a divergence.
  `Outcome.window_metric` keeps that window beside ours, as a cross-check. Both sides are
  deterministic (seeded): one pass. The figure's name carries the learner's `skipped` and
  `diverging` counters and, for regression, whether it diverged (a non-finite MAE or one
  over 1e6).
- speed: events/s of a test-then-train pass, median of `ROUNDS` alternating rounds, each
  from a fresh model: streamlearn featurizes the events and learns them in one
  `Learner.learn` call (batch_size 1: every event is predicted, then learned, as the
  trainer does); River runs `predict_one` then `learn_one` per event. Compiled code is
  warmed up outside the timing.

A second streamlearn column (`measure_unscaled`, after the figures above): the same default
config with the input layer's standardisation off (`model.standardize: false`) and
`optimizer: {name: normalized}` (Vowpal Wabbit's scale-free update, its default rate), so
the raw values reach the linear layer unscaled; its prequential metric beside River's
pipeline on the same events, scored as above.

A dataset that cannot be loaded gives NaN figures whose name says why; none is left out.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal

import numpy as np
import torch
from river import base, compose, datasets, linear_model, metrics, preprocessing

from bench.core import BenchContext, Figure
from services.trainer.config import ModelSpec, OptimizerSpec, TrainerConfig
from services.trainer.learner import Batch, Learner
from shared.features import FeatureSpace, Featurizer, Value

Task = Literal["binary", "multiclass", "regression"]
Record = Mapping[str, Value]
Event = tuple[Record, Any]

BUCKETS = 2**16
ROUNDS = 3
DIVERGED_MAE = 1e6
_KIND: dict[Task, str] = {"binary": "logistic", "multiclass": "softmax", "regression": "linear"}
_RIVER_MODEL: dict[Task, Callable[[], base.Estimator]] = {
    "binary": linear_model.LogisticRegression,
    "multiclass": linear_model.SoftmaxRegression,
    "regression": linear_model.LinearRegression,
}


@dataclass(frozen=True)
class Dataset:
    """A named stream of (raw named values, label) events and what its labels are."""

    name: str
    task: Task
    load: Callable[[], Iterable[Event]]


DATASETS = (
    Dataset("Phishing", "binary", datasets.Phishing),
    Dataset("Bananas", "binary", datasets.Bananas),
    Dataset("ImageSegments", "multiclass", datasets.ImageSegments),
    Dataset("TrumpApproval", "regression", datasets.TrumpApproval),
    Dataset("ChickWeights", "regression", datasets.ChickWeights),
)


@dataclass(frozen=True)
class Outcome:
    """Both sides on one dataset, with the learner's own counters."""

    dataset: Dataset
    events: int
    space: FeatureSpace
    ours: float  # prequential accuracy or MAE
    river: float
    ours_rates: tuple[float, ...]  # events/s, one per round
    river_rates: tuple[float, ...]
    skipped: int
    diverging: int
    # The learner's own prequential window after a timed pass, and this bench's per-event
    # metric over the same last events: a cross-check. They differ by the events the learner
    # refused (not in its window) and those its input statistics, which fold each event in
    # before predicting it, put on the other side of the boundary.
    window_metric: float
    tail_metric: float

    @property
    def metric_name(self) -> str:
        """accuracy or MAE."""
        return "MAE" if self.dataset.task == "regression" else "accuracy"

    @property
    def diverged(self) -> bool:
        """A regression whose prequential MAE is not finite or is over DIVERGED_MAE."""
        finite = math.isfinite(self.ours) and self.ours <= DIVERGED_MAE
        return self.dataset.task == "regression" and not finite


def run(ctx: BenchContext) -> list[Figure]:
    """Every dataset: streamlearn's default learner vs River's pipeline, quality and speed."""
    limit = None if ctx.scale >= 1 else ctx.count(2000)
    return measure(DATASETS, limit=limit, rounds=ROUNDS, unscaled=True)


def measure(
    chosen: Sequence[Dataset],
    limit: int | None = None,
    rounds: int = ROUNDS,
    unscaled: bool = False,
) -> list[Figure]:
    """Figures for `chosen`, each on its first `limit` events (all of them when None).

    With `unscaled`, one more quality figure per dataset after all the others: raw values
    learned by `unscaled_config` (`normalized`), against the same River pass.
    """
    figures: list[Figure] = []
    raw: list[Figure] = []
    for dataset in chosen:
        events = _load(dataset, limit)
        if isinstance(events, str):
            figures += _unmeasured(dataset, events)
            raw += _unmeasured(dataset, events)[:1] if unscaled else []
            continue
        outcome = compare(dataset, events, rounds)
        figures += figures_of(outcome)
        if unscaled:
            raw.append(_unscaled_figure(outcome, events))
    return figures + raw


def _unscaled_figure(outcome: Outcome, events: Sequence[Event]) -> Figure:
    """`unscaled_config` on the events `outcome` measured, against its River figure."""
    task = outcome.dataset.task
    records, classes, labels = _prepared(task, events)
    config = unscaled_config(task, outcome.space, len(classes))
    scores, learner = _ours_quality(config, outcome.space, records, labels)
    counters = (learner.skipped, learner.diverging)
    return _quality_figure(
        outcome.dataset, outcome.events, _mean(scores), outcome.river, counters, True
    )


def _prepared(task: Task, events: Sequence[Event]) -> tuple[list[Record], list[Any], np.ndarray]:
    """The records, the classes (multi-class) and the labels of `events`."""
    records = [record for record, _ in events]
    classes = sorted({label for _, label in events}) if task == "multiclass" else []
    return records, classes, _labels(task, events, classes)


def _load(dataset: Dataset, limit: int | None) -> list[Event] | str:
    """The dataset's first `limit` events, or why there are none."""
    try:
        events = list(islice(dataset.load(), limit))
    except Exception as exc:  # whatever stops a dataset loading is reported, not raised
        return f"cannot load: {type(exc).__name__}: {exc}"
    return events or "no events"


def compare(dataset: Dataset, events: Sequence[Event], rounds: int = ROUNDS) -> Outcome:
    """Both sides on the same events in the same order: quality once, speed `rounds` times."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    task = dataset.task
    records, classes, labels = _prepared(task, events)
    space = infer_space(records)
    config = default_config(task, space, len(classes))
    scores, learner = _ours_quality(config, space, records, labels)
    river = _river_pass(river_pipeline(task, space), task, events)
    ours_rates, river_rates, timed = _speeds(config, space, events, labels, rounds)
    tail = min(len(events), config.metrics_window)
    return Outcome(
        dataset=dataset,
        events=len(events),
        space=space,
        ours=_mean(scores),
        river=river,
        ours_rates=tuple(ours_rates),
        river_rates=tuple(river_rates),
        skipped=learner.skipped,
        diverging=learner.diverging,
        window_metric=timed.metrics.snapshot().get(_metric_key(task), math.nan),
        tail_metric=_mean(scores[-tail:]),
    )


def _speeds(
    config: TrainerConfig,
    space: FeatureSpace,
    events: Sequence[Event],
    labels: np.ndarray,
    rounds: int,
) -> tuple[list[float], list[float], Learner]:
    """events/s of each side per round, and the last timed learner (for its own metrics)."""
    task: Task = config.task
    records = [record for record, _ in events]
    _ours_timed(Learner(config), space, records[:8], labels[:8])  # compile outside the timing
    ours: list[float] = []
    river: list[float] = []
    timed = Learner(config)
    for round_ in range(rounds):  # alternate which side goes first: no order bias
        for side in ("ours", "river")[:: 1 if round_ % 2 == 0 else -1]:
            if side == "ours":  # fresh models, built outside the timing
                timed = Learner(config)
                started = time.perf_counter()
                _ours_timed(timed, space, records, labels)
                ours.append(len(events) / (time.perf_counter() - started))
            else:
                model = river_pipeline(task, space)
                started = time.perf_counter()
                _river_pass(model, task, events)
                river.append(len(events) / (time.perf_counter() - started))
    return ours, river, timed


def infer_space(records: Iterable[Record]) -> FeatureSpace:
    """Fields in order of first appearance: numeric, or categorical if any value is text."""
    text: dict[str, bool] = {}
    for record in records:
        for name, value in record.items():
            text[name] = text.get(name, False) or isinstance(value, str)
    numeric = tuple(name for name, is_text in text.items() if not is_text)
    categorical = tuple(name for name, is_text in text.items() if is_text)
    return FeatureSpace(numeric, categorical, buckets=BUCKETS if categorical else 0)


def default_config(task: Task, space: FeatureSpace, classes: int) -> TrainerConfig:
    """Only what a stream must say: the kind, the feature counts, the classes."""
    spec: dict[str, Any] = {"kind": _KIND[task], "features": max(1, len(space.numeric))}
    if task == "multiclass":
        spec["classes"] = classes
    if space.sparse_slots:
        spec["sparse_buckets"] = space.buckets
    return TrainerConfig(model=ModelSpec(**spec))


def unscaled_config(task: Task, space: FeatureSpace, classes: int) -> TrainerConfig:
    """`default_config` learning raw values: no standardisation, VW's normalized update."""
    config = default_config(task, space, classes)
    model = config.model.model_copy(update={"standardize": False})
    return config.model_copy(update={"model": model, "optimizer": OptimizerSpec(name="normalized")})


def river_pipeline(task: Task, space: FeatureSpace) -> base.Estimator:
    """River's standard pipeline: scaled numbers (and one-hot text fields) -> linear model."""
    model = _RIVER_MODEL[task]()
    if not space.categorical:
        return preprocessing.StandardScaler() | model
    encoded = compose.Select(*space.categorical) | preprocessing.OneHotEncoder()
    if not space.numeric:
        return encoded | model
    scaled = compose.Select(*space.numeric) | preprocessing.StandardScaler()
    pipeline: base.Estimator = (scaled + encoded) | model
    return pipeline


def figures_of(outcome: Outcome) -> list[Figure]:
    """The quality figure (its name carrying the counters) and the speed figure."""
    name = outcome.dataset.name
    baseline = f"River StandardScaler | {_RIVER_MODEL[outcome.dataset.task].__name__}"
    return [
        _quality_figure(
            outcome.dataset,
            outcome.events,
            outcome.ours,
            outcome.river,
            (outcome.skipped, outcome.diverging),
            False,
        ),
        Figure(
            f"{name}: test-then-train (median of {len(outcome.ours_rates)})",
            statistics.median(outcome.ours_rates),
            "events/s",
            baseline,
            statistics.median(outcome.river_rates),
        ),
    ]


def _quality_figure(
    dataset: Dataset,
    events: int,
    ours: float,
    river: float,
    counters: tuple[int, int],
    unscaled: bool,
) -> Figure:
    """Ours vs River's prequential metric; the name carries the counters and the variant."""
    task = dataset.task
    skipped, diverging = counters
    notes = [f"{events} events", f"skipped {skipped}", f"diverging {diverging}"]
    if task == "regression":
        finite = math.isfinite(ours) and ours <= DIVERGED_MAE
        notes.append("did not diverge" if finite else "diverged")
    variant = "unscaled + normalized" if unscaled else "default"
    unit = "MAE" if task == "regression" else "accuracy"
    return Figure(
        f"{dataset.name}: prequential {unit}, {variant} {_KIND[task]} ({', '.join(notes)})",
        ours,
        unit,
        f"River StandardScaler | {_RIVER_MODEL[task].__name__}",
        river,
        higher_is_better=task != "regression",
    )


def _unmeasured(dataset: Dataset, why: str) -> list[Figure]:
    unit = "MAE" if dataset.task == "regression" else "accuracy"
    baseline = f"River StandardScaler | {_RIVER_MODEL[dataset.task].__name__}"
    return [
        Figure(f"{dataset.name}: not measured, {why}", math.nan, unit, baseline, math.nan),
        Figure(f"{dataset.name}: not measured, {why}", math.nan, "events/s", baseline, math.nan),
    ]


def _labels(task: Task, events: Sequence[Event], classes: list[Any]) -> np.ndarray:
    """Labels as the trainer decodes them: class indices (int64) or float32 values."""
    if task == "multiclass":
        index = {label: i for i, label in enumerate(classes)}
        return np.array([index[label] for _, label in events], dtype=np.int64)
    return np.array([float(label) for _, label in events], dtype=np.float32)


def _batch(space: FeatureSpace, records: Sequence[Record], labels: np.ndarray) -> Batch:
    """The events through the services' featurizer, as the trainer's learner takes them."""
    dense, ids = Featurizer(space).rows(records)
    sparse = torch.from_numpy(ids) if space.sparse_slots else None
    return Batch(torch.from_numpy(dense), torch.from_numpy(labels), sparse=sparse, named=True)


def _ours_quality(
    config: TrainerConfig, space: FeatureSpace, records: Sequence[Record], labels: np.ndarray
) -> tuple[list[float], Learner]:
    """Per event: the learner's prediction (before learning it), scored; then learn it.

    Scores are hits (1/0) for classification and absolute errors for regression.
    """
    batch = _batch(space, records, labels)
    learner = Learner(config)
    scores: list[float] = []
    for i in range(len(batch)):
        event = batch.slice(i, i + 1)
        predicted = learner.predict(event)[0]
        scores.append(_score(config.task, predicted, labels[i]))
        learner.learn(event)
    return scores, learner


def _ours_timed(
    learner: Learner, space: FeatureSpace, records: Sequence[Record], labels: np.ndarray
) -> None:
    """Featurize and learn the events in one call, as the trainer learns a consumed batch."""
    learner.learn(_batch(space, records, labels))


def _score(task: str, predicted: np.ndarray, label: float) -> float:
    if task == "multiclass":
        return float(int(np.argmax(predicted)) == int(label))
    value = float(np.asarray(predicted).reshape(-1)[0])
    if task == "binary":
        return float((value >= 0.5) == (label >= 0.5))
    return abs(value - float(label))


def _river_pass(model: Any, task: Task, events: Sequence[Event]) -> float:
    """A River pipeline predicts, then learns, each event; its prequential metric."""
    # River's metric constructors carry no annotations.
    metric: metrics.base.Metric = (
        metrics.MAE() if task == "regression" else metrics.Accuracy()  # type: ignore[no-untyped-call]
    )
    for record, label in events:
        target = _river_target(task, label)
        metric.update(target, model.predict_one(record))
        model.learn_one(record, target)
    return float(metric.get())


def _river_target(task: Task, label: Any) -> Any:
    """River's labels: booleans (binary), floats (regression), the class itself."""
    if task == "binary":
        return bool(label)
    if task == "regression":
        return float(label)
    return label


def _metric_key(task: Task) -> str:
    return "mae" if task == "regression" else "accuracy"


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan

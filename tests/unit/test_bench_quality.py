from __future__ import annotations

import math
from collections.abc import Iterator

from bench import quality
from bench.catalog import NAMES, WITHOUT_KAFKA
from bench.quality import DATASETS, Dataset, Event

LIMIT = 150


def _by_name(*names: str) -> list[Dataset]:
    return [d for d in DATASETS if d.name in names]


def test_quality_is_a_benchmark_that_needs_no_broker() -> None:
    assert "quality" in NAMES
    assert "quality" in WITHOUT_KAFKA


def test_each_dataset_gives_a_quality_and_a_speed_figure_with_both_sides_measured() -> None:
    chosen = _by_name("Phishing", "ImageSegments", "TrumpApproval")
    figures = quality.measure(chosen, limit=LIMIT, rounds=1)
    assert len(figures) == 2 * len(chosen)
    pairs = zip(figures[::2], figures[1::2], strict=True)
    for dataset, (metric, speed) in zip(chosen, pairs, strict=True):
        assert metric.name.startswith(f"{dataset.name}: prequential")
        assert f"{LIMIT} events" in metric.name
        assert "skipped" in metric.name and "diverging" in metric.name
        assert math.isfinite(metric.value)
        assert math.isfinite(metric.baseline_value)
        assert speed.unit == "events/s"
        assert speed.value > 0
        assert speed.baseline_value > 0
        assert speed.baseline == metric.baseline
    phishing, segments, trump = figures[::2]
    assert phishing.unit == "accuracy" and phishing.higher_is_better
    assert "LogisticRegression" in phishing.baseline
    assert "SoftmaxRegression" in segments.baseline
    # MAE: the ratio is River's / ours, so > 1 still means streamlearn is better.
    assert trump.unit == "MAE" and not trump.higher_is_better
    assert "LinearRegression" in trump.baseline
    assert "diverge" in trump.name
    assert 0 <= phishing.value <= 1 and 0 <= segments.value <= 1


def test_per_event_metric_agrees_with_the_learners_own_prequential_window() -> None:
    # The bench scores Learner.predict before Learner.learn, event by event; the trainer's
    # own window (learning the whole chunk at once) predicts after folding each event's
    # features into the input statistics, so a few events near the boundary may differ.
    for dataset in _by_name("Phishing", "ImageSegments"):
        events = list(dataset.load())[:LIMIT]
        outcome = quality.compare(dataset, events, rounds=1)
        assert outcome.skipped == 0 and outcome.diverging == 0
        assert abs(outcome.tail_metric - outcome.window_metric) <= 3 / LIMIT


def test_text_fields_are_categorical_on_both_sides() -> None:
    colours = ("red", "green", "blue")

    def load() -> Iterator[Event]:
        for i in range(60):
            yield {"size": float(i % 7), "colour": colours[i % 3]}, colours[i % 3] == "red"

    dataset = Dataset("colours", "binary", load)
    space = quality.infer_space(record for record, _ in load())
    assert space.numeric == ("size",)
    assert space.categorical == ("colour",)
    assert quality.default_config("binary", space, 0).model.sparse_buckets == quality.BUCKETS
    assert "OneHotEncoder" in repr(quality.river_pipeline("binary", space))
    outcome = quality.compare(dataset, list(load()), rounds=1)
    assert math.isfinite(outcome.ours) and math.isfinite(outcome.river)


def test_default_config_names_only_kind_features_and_classes() -> None:
    space = quality.infer_space([{"a": 1.0, "b": 2}])
    config = quality.default_config("multiclass", space, 7)
    assert config.model.model_dump(exclude_defaults=True) == {
        "kind": "softmax",
        "features": 2,
        "classes": 7,
    }
    assert config.model_dump(exclude_defaults=True).keys() == {"model"}


def test_a_dataset_that_cannot_load_is_reported_not_dropped() -> None:
    def broken() -> Iterator[Event]:
        raise FileNotFoundError("not downloaded")

    figures = quality.measure([Dataset("Elsewhere", "regression", broken)], rounds=1)
    assert len(figures) == 2
    assert all("Elsewhere: not measured" in f.name for f in figures)
    assert all("not downloaded" in f.name for f in figures)
    assert all(math.isnan(f.value) and math.isnan(f.baseline_value) for f in figures)

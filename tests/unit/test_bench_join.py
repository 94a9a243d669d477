from __future__ import annotations

import random

import pytest

from bench import join
from bench.catalog import BENCHMARKS, NAMES
from services.joiner.core import Joiner
from services.joiner.definitions import check_label
from services.joiner.outputs import Joined
from shared.feedback import decode_feedback, decode_prediction


def test_join_is_a_benchmark_that_needs_kafka() -> None:
    assert "join" in NAMES and "join" in BENCHMARKS


def test_events_are_valid_records_whose_feedback_joins_within_the_window() -> None:
    rng, base = random.Random(1), 1_700_000_000_000
    joiner = Joiner({})
    for i in range(50):
        prediction_bytes, feedback_bytes = join.event(i, base, rng)
        prediction, feedback = decode_prediction(prediction_bytes), decode_feedback(feedback_bytes)
        assert prediction.event_id == feedback.event_id == f"ev-{i:09d}"
        assert len(prediction.dense) == join.FEATURES and not prediction.sparse_ids
        assert 0 <= feedback.event_time_ms - prediction.timestamp_ms < join.MAX_DELAY_MS
        # Feedback first (it waits) or after its prediction (it joins at once): both join.
        if i % 2:
            assert joiner.on_feedback(feedback, base) == []
            (out,) = joiner.on_prediction(prediction, base)
        else:
            assert joiner.on_prediction(prediction, base) == []
            (out,) = joiner.on_feedback(feedback, base)
        assert isinstance(out, Joined)
        assert check_label(out.sample(), join.definition()) is None


def test_figures_are_medians_beside_their_baselines() -> None:
    runs = join._Run
    figures = join.figures(
        10,
        [runs(100.0), runs(300.0), runs(200.0)],
        [runs(400.0), runs(100.0), runs(50.0)],
        [runs(10.0, 1024, 2048), runs(30.0, 3072, 4096), runs(20.0, 2048, 8192)],
    )
    joined, copy, rss = figures
    assert (joined.value, joined.baseline_value) == (20.0, 200.0)
    assert joined.ratio == pytest.approx(0.1)
    assert (copy.value, copy.baseline_value) == (200.0, 100.0)
    assert (rss.value, rss.baseline_value) == (4.0, 2.0) and not rss.higher_is_better
    assert all("median of 3" in f.name for f in figures)


def test_the_language_model_bench_is_listed_and_its_corpus_is_seeded() -> None:
    from bench import lm

    assert "lm" in NAMES and "lm" in BENCHMARKS
    texts = lm.corpus(50)
    assert texts == lm.corpus(50) and len(set(texts)) > 40
    assert 60 < sum(map(len, texts)) / len(texts) < 200  # about 120 bytes a text

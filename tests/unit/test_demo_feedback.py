"""demo --feedback: the simulated user, the join counts the dashboard shows, row ids."""

from __future__ import annotations

import numpy as np
import pytest

from shared.errors import InvalidArgument
from streamlearn.client.datasets import Synthetic
from streamlearn.system.clicks import SimulatedUser
from streamlearn.system.summary import delay_text, join_text, served_metrics
from streamlearn.system.traffic import row_ids
from streamlearn.system.watch import Joins
from streamlearn.v1 import metrics_pb2, sample_pb2


def _rows(n: int, features: int = 8, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, features)).astype(np.float32)


@pytest.mark.parametrize("at", [0, 1000, 2500])
def test_the_probability_is_the_concept_of_the_synthetic_stream(at: int) -> None:
    """Above one half exactly where the dataset's own noise-free label is 1, drift included."""
    dataset = Synthetic("drift", features=8, drift_every=1000, seed=9)
    x, labels = dataset.holdout(500, at)
    p = SimulatedUser(dataset).probability(x, at)
    # holdout labels every row at position `at`; the user at `at + row`: stay in one era.
    same_era = (at + np.arange(500)) // 1000 == at // 1000
    assert np.array_equal((p > 0.5)[same_era], labels[same_era].astype(bool))
    binary = Synthetic("binary", features=8, seed=9)
    x, labels = binary.holdout(500, 0)
    assert np.array_equal(SimulatedUser(binary).probability(x, 0) > 0.5, labels.astype(bool))


def test_clicks_follow_the_probability_and_delays_stay_within_bounds() -> None:
    dataset = Synthetic("binary", features=8, seed=2)
    user = SimulatedUser(dataset, min_delay_s=0.5, max_delay_s=1.5, seed=7)
    x = _rows(40_000)
    p = user.probability(x, 0)
    ids = [f"r{i}" for i in range(len(x))]
    clicks = user.react(ids, x, 0)
    clicked = np.zeros(len(x), dtype=bool)
    clicked[[int(c.event_id[1:]) for c in clicks]] = True
    for low in np.arange(0.0, 1.0, 0.2):  # in each probability band, clicks at its rate
        band = (p >= low) & (p < low + 0.2)
        assert band.sum() > 1000
        assert abs(clicked[band].mean() - p[band].mean()) < 0.02, low
    delays = np.array([c.delay_s for c in clicks])
    assert delays.min() >= 0.5 and delays.max() <= 1.5
    assert delays.max() - delays.min() > 0.9  # spread over the interval, not one value
    assert len({c.event_id for c in clicks}) == len(clicks)


def test_the_same_seed_clicks_the_same_rows() -> None:
    dataset = Synthetic("drift", features=8, seed=1)
    x, ids = _rows(200), [str(i) for i in range(200)]
    first = SimulatedUser(dataset, seed=3).react(ids, x, 0)
    assert first == SimulatedUser(dataset, seed=3).react(ids, x, 0)
    assert first != SimulatedUser(dataset, seed=4).react(ids, x, 0)


@pytest.mark.parametrize(
    ("dataset", "delays"),
    [
        (Synthetic("regression"), (0.1, 1.0)),
        (Synthetic("multiclass"), (0.1, 1.0)),
        (Synthetic("binary"), (2.0, 1.0)),
        (Synthetic("binary"), (-1.0, 1.0)),
        (Synthetic("binary"), (0.0, float("inf"))),
        (Synthetic("binary"), (float("nan"), 1.0)),
    ],
)
def test_a_user_of_no_click_stream_or_no_delay_interval_is_refused(
    dataset: Synthetic, delays: tuple[float, float]
) -> None:
    with pytest.raises(InvalidArgument):
        SimulatedUser(dataset, *delays)


def test_rows_that_do_not_fit_are_refused_clearly() -> None:
    user = SimulatedUser(Synthetic("binary", features=8))
    with pytest.raises(InvalidArgument, match="8 features"):
        user.probability(_rows(3, features=5), 0)
    with pytest.raises(InvalidArgument, match="8 features"):
        user.probability(np.zeros(8), 0)
    with pytest.raises(InvalidArgument, match="2 event ids for 3 rows"):
        user.react(["a", "b"], _rows(3), 0)


def test_row_ids_are_the_request_id_or_one_per_row() -> None:
    assert row_ids("q", 1) == ("q",)
    assert row_ids("q", 3) == ("q/0", "q/1", "q/2")


def _sample(stream: str, outcome: str | None, delay: str = "0") -> sample_pb2.Sample:
    sample = sample_pb2.Sample(stream=stream, class_index=1)
    if outcome is not None:
        sample.attributes["streamlearn-outcome"] = outcome
        sample.attributes["streamlearn-label-delay-ms"] = delay
    return sample


def test_joins_count_the_joiners_outcomes_of_one_stream_and_the_label_delay() -> None:
    joins = Joins()
    assert joins.join_rate is None and joins.mean_delay_s is None
    assert delay_text(joins) == "-" and "none closed yet" in join_text(joins)
    for delay in ("1000", "3000"):
        joins.take_sample(_sample("demo", "joined", delay), "demo")
    joins.take_sample(_sample("demo", "joined", "not a number"), "demo")  # counted, no delay
    for _ in range(5):
        joins.take_sample(_sample("demo", "negative"), "demo")
    joins.take_sample(_sample("other", "joined"), "demo")  # another stream
    joins.take_sample(_sample("demo", None), "demo")  # a labelled sample, not joined
    for reason in (b"late", b"unknown", b"unknown", b"expired", b"wrong_dimension", None):
        joins.take_dead_letter(reason)
    assert (joins.joined, joins.negatives) == (3, 5)
    assert (joins.late, joins.unknown, joins.expired) == (1, 2, 1)
    assert joins.join_rate == pytest.approx(3 / 9)
    assert joins.mean_delay_s == pytest.approx(2.0)
    assert join_text(joins) == (
        "3 joined, 5 negatives (join rate 33.3%); late 1, unknown 2, expired 1"
    )
    assert delay_text(joins) == "mean 2.00s, max 3.00s (last 2 joined)"


def test_the_dashboard_shows_the_served_scores_once_joined_samples_arrive() -> None:
    trainer = metrics_pb2.TrainerMetrics(metrics={"accuracy": 0.9, "logloss": 0.3})
    assert served_metrics(trainer) is None  # nothing joined yet: no row
    trainer.metrics.update({"served_accuracy": 0.75, "served_logloss": 0.5, "served_events": 1200})
    assert served_metrics(trainer) == "logloss 0.500, accuracy 0.750 (1,200 joined predictions)"

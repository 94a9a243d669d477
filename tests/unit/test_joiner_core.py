"""The joiner's state machine: every rule, bounded memory, state round trips, and properties.

Properties (hypothesis): every prediction ends exactly once as joined, negative or expired;
how predictions and feedback interleave between two moves of the clock never changes the
outputs; a state saved and restored mid-stream continues with identical outputs.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.joiner.core import Joiner, JoinStateError
from services.joiner.metrics import DELAY_BUCKETS_S
from services.joiner.outputs import (
    DUPLICATE_FEEDBACK,
    DUPLICATE_PREDICTION,
    LABEL_DELAY_MS,
    MODEL,
    OUTCOME,
    OVERFLOW,
    VERSION,
    Duplicate,
    Expired,
    Joined,
    Late,
    Negative,
    Output,
    Unknown,
)
from services.joiner.policy import StreamPolicy
from shared.errors import ConfigError
from shared.feedback import Feedback, Label, PredictionRecord

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = 1_700_000_000_000
CLICKS = StreamPolicy(window_s=10, negative_after_s=5, negative_label=Label.class_index(0))
RATINGS = StreamPolicy(window_s=8, retention_s=100)
POLICIES = {"clicks": CLICKS, "ratings": RATINGS}


def pred(
    event_id: str, at: int = T0, stream: str = "clicks", dense: tuple[float, ...] = (1.0, 2.0)
) -> PredictionRecord:
    return PredictionRecord(event_id, stream, "ctr", 3, dense, (0, 9), (("score", (0.25,)),), at)


def fb(
    event_id: str, at: int, stream: str = "clicks", label: int = 1, weight: float = 1.0
) -> Feedback:
    return Feedback(event_id, stream, Label.class_index(label), at, weight)


def joiner(**policies: StreamPolicy) -> Joiner:
    return Joiner(policies or POLICIES)


def test_feedback_after_its_prediction_joins_into_a_sample_of_the_served_features() -> None:
    j = joiner()
    assert j.on_prediction(pred("a"), T0) == []
    [joined] = j.on_feedback(fb("a", T0 + 1500, weight=0.5), T0 + 2000)
    assert joined == Joined(pred("a"), fb("a", T0 + 1500, weight=0.5), 1500)
    sample = joined.sample()
    assert sample.event_id == sample.key == "a" and sample.stream == "clicks"
    assert list(sample.dense) == [1.0, 2.0] and list(sample.sparse.indices) == [0, 9]
    assert sample.class_index == 1 and sample.weight == 0.5
    assert sample.event_time.ToMilliseconds() == T0 + 1500
    assert dict(sample.attributes) == {
        MODEL: "ctr",
        VERSION: "3",
        OUTCOME: "joined",
        LABEL_DELAY_MS: "1500",
    }
    assert j.metrics.joined == 1 and j.pending() == 0
    assert j.advance(T0 + 60_000) == []  # a joined prediction never closes again


def test_feedback_before_its_prediction_joins_when_the_prediction_comes() -> None:
    j = joiner()
    assert j.on_feedback(fb("a", T0 + 100), T0 + 100) == []
    assert j.pending() == 1
    [joined] = j.on_prediction(pred("a"), T0 + 200)
    assert isinstance(joined, Joined) and joined.delay_ms == 100


def test_label_before_the_prediction_time_has_zero_delay() -> None:
    j = joiner()
    j.on_feedback(fb("a", T0 - 50), T0)
    [joined] = j.on_prediction(pred("a"), T0)
    assert isinstance(joined, Joined) and joined.delay_ms == 0


def test_silence_is_a_negative_when_the_stream_says_so() -> None:
    j = joiner()
    j.on_prediction(pred("a"), T0)
    assert j.advance(T0 + 4999) == []
    [negative] = j.advance(T0 + 5000)
    assert negative == Negative(pred("a"), Label.class_index(0), T0 + 5000)
    sample = negative.sample()
    assert sample.class_index == 0 and sample.attributes[OUTCOME] == "negative"
    assert sample.event_time.ToMilliseconds() == T0 + 5000 and negative.delay_ms == 5000
    assert j.metrics.negatives == 1


def test_silence_expires_without_a_negative_policy() -> None:
    j = joiner()
    j.on_prediction(pred("a", stream="ratings"), T0)
    assert j.advance(T0 + 7999) == []
    assert j.advance(T0 + 8000) == [Expired(pred("a", stream="ratings"))]
    assert j.metrics.expired == 1


def test_feedback_after_the_window_is_late_and_the_prediction_still_closes() -> None:
    j = joiner()
    j.on_prediction(pred("a"), T0)
    late = fb("a", T0 + 5001)
    assert j.on_feedback(late, T0 + 1000) == [Late(late, T0 + 5000)]
    assert j.on_feedback(late, T0 + 1000) == [Duplicate(late)]
    [negative] = j.advance(T0 + 5000)
    assert isinstance(negative, Negative)
    assert j.on_feedback(late, T0 + 6000) == [Duplicate(late)]
    assert (j.metrics.late, j.metrics.duplicates, j.metrics.negatives) == (1, 2, 1)


def test_early_feedback_beyond_the_window_is_late_when_the_prediction_comes() -> None:
    j = joiner()
    late = fb("a", T0 + 9000)
    j.on_feedback(late, T0)
    assert j.on_prediction(pred("a"), T0) == [Late(late, T0 + 5000)]
    assert isinstance(j.advance(T0 + 5000)[0], Negative)


def test_feedback_after_the_close_is_late_then_duplicate() -> None:
    j = joiner()
    j.on_prediction(pred("a"), T0)
    j.advance(T0 + 5000)
    first, second = fb("a", T0 + 100), fb("a", T0 + 200, label=0)
    assert j.on_feedback(first, T0 + 5001) == [Late(first, T0 + 5000)]
    assert j.on_feedback(second, T0 + 5002) == [Duplicate(second)]
    assert Duplicate(second).reason == DUPLICATE_FEEDBACK


def test_feedback_for_no_prediction_is_unknown_after_its_wait() -> None:
    j = joiner()
    orphan = fb("ghost", T0)
    assert j.on_feedback(orphan, T0) == []
    assert j.advance(T0 + 9999) == []
    assert j.advance(T0 + 10_000) == [Unknown(orphan)]
    assert j.metrics.unknown == 1 and j.pending() == 0


def test_streams_that_hold_nothing_are_dropped() -> None:
    j = joiner()
    for i in range(50):
        j.on_feedback(fb("x", T0, stream=f"made-up-{i}"), T0)
    assert len(j.to_dict()["streams"]) == 50
    assert len(j.advance(T0 + 10**9)) == 50
    assert j.to_dict()["streams"] == {} and j.pending() == 0


def test_feedback_naming_another_stream_does_not_join() -> None:
    j = joiner()
    j.on_prediction(pred("a"), T0)
    wrong = fb("a", T0 + 1, stream="ratings")
    assert j.on_feedback(wrong, T0 + 1) == []
    outputs = j.advance(T0 + 60_000)
    assert Unknown(wrong) in outputs and any(isinstance(o, Negative) for o in outputs)


def test_first_prediction_and_first_feedback_count_later_ones_are_duplicates() -> None:
    j = joiner()
    j.on_prediction(pred("a"), T0)
    again = pred("a", dense=(9.0, 9.0))
    assert j.on_prediction(again, T0) == [Duplicate(again)]
    assert Duplicate(again).reason == DUPLICATE_PREDICTION
    first, second = fb("a", T0 + 10), fb("a", T0 + 20, label=0)
    [joined] = j.on_feedback(first, T0 + 30)
    assert isinstance(joined, Joined) and joined.feedback == first
    assert joined.prediction.dense == (1.0, 2.0)
    assert j.on_feedback(second, T0 + 40) == [Duplicate(second)]
    assert j.on_prediction(again, T0 + 50) == [Duplicate(again)]
    assert j.metrics.duplicates == 3


def test_closed_ids_are_forgotten_after_the_retention() -> None:
    j = joiner()
    j.on_prediction(pred("a", stream="ratings"), T0)
    j.advance(T0 + 8000)
    j.advance(T0 + 8000 + 100_000)  # closed at +8 s, remembered for 100 s
    late = fb("a", T0 + 100, stream="ratings")
    assert j.on_feedback(late, T0 + 108_001) == []  # no longer known: waits ...
    assert j.advance(T0 + 200_000) == [Unknown(late)]  # ... and is unknown


def test_open_predictions_are_bounded_oldest_expired_first() -> None:
    tight = StreamPolicy(window_s=10, negative_after_s=5, max_pending=2)
    j = Joiner({"clicks": tight})
    j.on_prediction(pred("b", T0 + 1), T0)
    j.on_prediction(pred("c", T0 + 2), T0)
    assert j.on_prediction(pred("a", T0), T0) == [Expired(pred("a", T0), OVERFLOW)]
    assert j.on_prediction(pred("d", T0 + 3), T0) == [Expired(pred("b", T0 + 1), OVERFLOW)]
    assert (j.metrics.overflow, j.metrics.expired, j.pending()) == (2, 2, 2)
    late = fb("b", T0 + 5)
    assert j.on_feedback(late, T0) == [Late(late, T0 + 5001)]  # evicted: its id is known


def test_early_feedback_is_bounded_oldest_unknown_first() -> None:
    j = Joiner({"clicks": StreamPolicy(max_pending=1)})
    j.on_feedback(fb("x", T0 + 5), T0)
    assert j.on_feedback(fb("y", T0 + 9), T0) == [Unknown(fb("x", T0 + 5), OVERFLOW)]
    assert (j.metrics.unknown, j.metrics.overflow) == (1, 1)


def test_closed_ids_are_bounded_and_forgetting_is_counted() -> None:
    j = Joiner({"clicks": StreamPolicy(window_s=1, max_closed=2)})
    for i in range(4):
        j.on_prediction(pred(f"p{i}", T0 + i), T0)
    assert len(j.advance(T0 + 10_000)) == 4
    assert j.metrics.forgotten == 2
    assert j.on_feedback(fb("p0", T0), T0 + 10_001) == []  # forgotten: waits as unknown
    assert j.on_feedback(fb("p3", T0), T0 + 10_001) == [Late(fb("p3", T0), T0 + 1003)]


def test_the_clock_never_goes_back_and_outputs_come_in_time_order() -> None:
    j = joiner()
    j.on_prediction(pred("b", T0 + 10, stream="ratings"), T0)
    j.on_prediction(pred("a", T0 + 10), T0)
    j.on_prediction(pred("c", T0), T0)
    closed = j.advance(T0 + 60_000)
    order = [o.prediction.event_id for o in closed if isinstance(o, (Negative, Expired))]
    assert order == ["c", "a", "b"]  # +5000, +5010 (clicks), +8010 (ratings)
    j.on_prediction(pred("d"), T0 + 60_000)
    assert j.advance(T0) == [] and j.watermark_ms == T0 + 60_000


def test_delay_histogram_counts_each_join_in_its_bucket() -> None:
    j = Joiner({}, StreamPolicy(window_s=10 * 86400))
    for i, delay_s in enumerate((0.5, 1.0, 2.0, 3600.0, 2 * 86400)):
        j.on_prediction(pred(f"p{i}"), T0)
        j.on_feedback(fb(f"p{i}", T0 + int(delay_s * 1000)), T0)
    buckets = j.metrics.delay_buckets
    assert len(buckets) == len(DELAY_BUCKETS_S) + 1 and sum(buckets) == 5
    assert buckets[0] == 2 and buckets[1] == 1  # <= 1 s (inclusive), <= 5 s
    assert buckets[DELAY_BUCKETS_S.index(3600.0)] == 1 and buckets[-1] == 1
    assert j.metrics.delay_sum_ms == 500 + 1000 + 2000 + 3_600_000 + 172_800_000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_s": 0},
        {"window_s": float("nan")},
        {"retention_s": -1},
        {"window_s": 10, "negative_after_s": 11},
        {"negative_after_s": 0},
        {"max_pending": 0},
    ],
)
def test_impossible_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        StreamPolicy(**kwargs)  # type: ignore[arg-type]


def test_state_survives_json_and_malformed_state_is_refused() -> None:
    j = joiner()
    j.on_prediction(pred("a"), T0)
    j.on_feedback(fb("early", T0), T0)
    j.on_prediction(pred("b"), T0)
    j.on_feedback(fb("b", T0 + 1), T0 + 1)
    plain = json.loads(json.dumps(j.to_dict()))
    restored = Joiner.from_dict(plain, POLICIES)
    assert restored.to_dict() == j.to_dict()
    assert restored.metrics == j.metrics and restored.pending() == 2
    broken: list[object] = [
        None,
        {},
        {**plain, "format": 99},
        {**plain, "watermark_ms": "soon"},
        {**plain, "metrics": {"joined": 1}},
        {**plain, "streams": {"clicks": {"open": [["!!", 1, False]], "early": [], "closed": []}}},
        {
            **plain,
            "streams": {"clicks": {"open": [], "early": [], "closed": [["a", "won", 1, 2, True]]}},
        },
        {**plain, "streams": {"clicks": {"open": [[1, 2]], "early": [], "closed": []}}},
    ]
    for state in broken:
        with pytest.raises(JoinStateError):
            Joiner.from_dict(state, POLICIES)


def test_a_restored_state_remembers_which_feedback_it_has_seen() -> None:
    j = joiner()
    j.on_prediction(pred("open"), T0)
    j.on_prediction(pred("closed", T0 - 6000), T0)
    assert isinstance(j.advance(T0 + 1)[0], Negative)  # "closed" closes at T0 - 1000
    late_open, late_closed = fb("open", T0 + 6000), fb("closed", T0)
    assert j.on_feedback(late_open, T0 + 1) == [Late(late_open, T0 + 5000)]
    assert j.on_feedback(late_closed, T0 + 1) == [Late(late_closed, T0 - 1000)]
    restored = Joiner.from_dict(json.loads(json.dumps(j.to_dict())), POLICIES)
    assert restored.on_feedback(late_open, T0 + 1) == [Duplicate(late_open)]
    assert restored.on_feedback(late_closed, T0 + 1) == [Duplicate(late_closed)]


def test_feedback_at_the_close_itself_joins_in_either_order() -> None:
    j = joiner()
    j.on_prediction(pred("a"), T0)
    assert isinstance(j.on_feedback(fb("a", T0 + 5000), T0)[0], Joined)
    j.on_feedback(fb("b", T0 + 5000), T0)
    assert isinstance(j.on_prediction(pred("b"), T0)[0], Joined)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=20,
)


@PROPERTY
@given(json_values, st.sampled_from(["streams", "metrics", "watermark_ms", None]))
def test_any_state_restores_or_is_refused_clearly(value: object, where: str | None) -> None:
    j = joiner()
    j.on_prediction(pred("a"), T0)
    j.on_feedback(fb("b", T0), T0)
    state = value if where is None else {**j.to_dict(), where: value}
    try:
        Joiner.from_dict(state, POLICIES)
    except JoinStateError as exc:
        assert str(exc).startswith("joiner state")


# --- properties ---------------------------------------------------------------------------

STEP_MS = 2000


@dataclass(frozen=True)
class Arrival:
    """One record delivered in `epoch` (between two moves of the clock)."""

    epoch: int
    record: PredictionRecord | Feedback


def deliver(j: Joiner, arrivals: list[Arrival], epochs: int) -> list[Output]:
    """Feed arrivals epoch by epoch (clock T0 + epoch * STEP_MS), then close everything."""
    out: list[Output] = []
    for epoch in range(epochs):
        now = T0 + epoch * STEP_MS
        out += j.advance(now)
        for a in (a for a in arrivals if a.epoch == epoch):
            out += feed(j, a.record, now)
    return out + j.advance(T0 + 10**9)


def feed(j: Joiner, record: PredictionRecord | Feedback, now: int) -> list[Output]:
    if isinstance(record, PredictionRecord):
        return j.on_prediction(record, now)
    return j.on_feedback(record, now)


floats32 = st.floats(-1e6, 1e6, width=32, allow_nan=False)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Arrival], int]:
    """Predictions of two streams, feedback for some (early, in time, late, wrong id),
    identical redeliveries, each arriving in some epoch."""
    epochs = draw(st.integers(1, 12))
    arrivals = []
    for i in range(draw(st.integers(0, 25))):
        stream = draw(st.sampled_from(["clicks", "ratings"]))
        ts = T0 + draw(st.integers(-5000, epochs * STEP_MS))
        record = PredictionRecord(
            f"p{i}",
            stream,
            "m",
            draw(st.integers(1, 3)),
            tuple(draw(st.lists(floats32, max_size=3))),
            tuple(draw(st.lists(st.integers(0, 99), max_size=2))),
            (("score", (draw(floats32),)),),
            ts,
        )
        arrivals.append(Arrival(draw(st.integers(0, epochs - 1)), record))
        if draw(st.booleans()):
            label = draw(st.sampled_from([Label.class_index(1), Label.regression(0.5)]))
            weight = draw(st.sampled_from([1.0, 0.5, 2.0]))
            at = ts + draw(st.integers(-1000, 12_000))
            feedback = Feedback(f"p{i}", stream, label, at, weight)
            arrivals.append(Arrival(draw(st.integers(0, epochs - 1)), feedback))
    for i in range(draw(st.integers(0, 4))):
        ghost = Feedback(f"ghost{i}", "clicks", Label.class_index(1), T0 + 10 * i)
        arrivals.append(Arrival(draw(st.integers(0, epochs - 1)), ghost))
    redelivered = draw(st.lists(st.sampled_from(arrivals), max_size=8)) if arrivals else []
    arrivals += [Arrival(draw(st.integers(a.epoch, epochs - 1)), a.record) for a in redelivered]
    return draw(st.permutations(arrivals)), epochs


def ended(outputs: list[Output]) -> Counter[str]:
    """How many times each prediction ended as joined, negative or expired."""
    return Counter(
        o.prediction.event_id for o in outputs if isinstance(o, (Joined, Negative, Expired))
    )


@PROPERTY
@given(scenarios())
def test_every_prediction_ends_exactly_once(scenario: tuple[list[Arrival], int]) -> None:
    arrivals, epochs = scenario
    outputs = deliver(Joiner(POLICIES), arrivals, epochs)
    predictions = {a.record.event_id for a in arrivals if isinstance(a.record, PredictionRecord)}
    assert ended(outputs) == Counter(predictions)
    # Every record delivered is accounted for by exactly one output (joins carry two).
    carried = sum(2 if isinstance(o, Joined) else 1 for o in outputs)
    assert carried == len(arrivals)


@PROPERTY
@given(scenarios(), st.randoms(use_true_random=False))
def test_interleaving_between_clock_moves_never_changes_the_outputs(
    scenario: tuple[list[Arrival], int], rng: random.Random
) -> None:
    arrivals, epochs = scenario
    reordered = list(arrivals)
    rng.shuffle(reordered)  # deliver() keeps each arrival in its epoch
    first = deliver(Joiner(POLICIES), arrivals, epochs)
    second = deliver(Joiner(POLICIES), reordered, epochs)
    assert Counter(first) == Counter(second)


@PROPERTY
@given(scenarios(), st.integers(0, 100))
def test_a_restored_state_continues_exactly(
    scenario: tuple[list[Arrival], int], cut_at: int
) -> None:
    arrivals, epochs = scenario
    steps: list[tuple[int, PredictionRecord | Feedback | None]] = []
    for epoch in range(epochs):
        steps.append((T0 + epoch * STEP_MS, None))
        steps += [(T0 + epoch * STEP_MS, a.record) for a in arrivals if a.epoch == epoch]
    steps.append((T0 + 10**9, None))
    cut = min(cut_at, len(steps))

    def run(j: Joiner, part: list[tuple[int, PredictionRecord | Feedback | None]]) -> list[Output]:
        out: list[Output] = []
        for now, record in part:
            out += j.advance(now) if record is None else feed(j, record, now)
        return out

    whole = Joiner(POLICIES)
    expected = run(whole, steps)
    original = Joiner(POLICIES)
    head = run(original, steps[:cut])
    restored = Joiner.from_dict(json.loads(json.dumps(original.to_dict())), POLICIES)
    assert restored.to_dict() == original.to_dict()
    assert head + run(restored, steps[cut:]) == expected
    assert restored.to_dict() == whole.to_dict()

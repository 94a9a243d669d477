"""The joiner's changelog: the entry codec, and change tracking that a restore can rely on.

Properties (hypothesis): any bytes decode to an entry or a `ChangelogError` naming the key;
the changes a joiner reports, applied to a compacted table at any moments, restore a joiner
that is the original (same state) and continues with identical outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.joiner.changelog import (
    CLOCK_KEY,
    ChangelogError,
    ClockEntry,
    ClosedEntry,
    EarlyEntry,
    OpenEntry,
    Value,
    decode_entry,
    decode_key,
    encode_value,
    event_key,
)
from services.joiner.core import Joiner
from services.joiner.metrics import JoinMetrics
from services.joiner.outputs import Output
from shared.feedback import Feedback, Label, PredictionRecord
from tests.unit.test_joiner_core import (
    POLICIES,
    PROPERTY,
    STEP_MS,
    T0,
    Arrival,
    fb,
    feed,
    pred,
    scenarios,
)

Table = dict[bytes, bytes]


def metrics() -> JoinMetrics:
    m = JoinMetrics(joined=3, late=1)
    m.observe_delay(1500)
    return m


ENTRIES: list[tuple[bytes, Value]] = [
    (event_key("clicks", "a"), OpenEntry(pred("a"), T0 + 5000, False)),
    (event_key("clicks", "b"), OpenEntry(pred("b"), T0 + 5000, True)),
    (event_key("clicks", "c"), EarlyEntry(fb("c", T0 + 3), T0 + 10_003)),
    (event_key("ratings", "d"), ClosedEntry("joined", T0 + 8000, T0 + 108_000, True)),
    (event_key("ratings", "e"), ClosedEntry("expired", T0, T0 + 1, False)),
    (event_key("ünï:cödé", "é/1"), ClosedEntry("negative", 1, 2, False)),
    (CLOCK_KEY, ClockEntry(T0 + 42, metrics())),
]


@pytest.mark.parametrize(("key", "entry"), ENTRIES)
def test_every_kind_of_entry_round_trips(key: bytes, entry: Value) -> None:
    where, decoded = decode_entry(key, encode_value(entry))
    assert decoded == entry
    assert where == (None if key == CLOCK_KEY else decode_key(key))


def test_keys_carry_stream_and_id_unambiguously() -> None:
    assert decode_key(event_key("a:b", "c")) == ("a:b", "c")
    assert decode_key(event_key("a", "b:c")) == ("a", "b:c")
    assert event_key("a:b", "c") != event_key("a", "b:c")
    assert decode_key(CLOCK_KEY) is None


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        (None, b"C", "no key"),
        (b"", b"C", "not a joiner state key"),
        (b"x-other", b"C", "not a joiner state key"),
        (b"e\x00\x09clicks", b"C", "malformed stream"),  # length beyond the key
        (b"e\x00\x00a", b"C", "malformed stream"),  # empty stream
        (b"e\x00\x02\xff\xfea", b"C", "not UTF-8"),
        (event_key("s", "a"), b"", "is malformed"),
        (event_key("s", "a"), b"Cj\x00" + bytes(15), "is malformed"),  # short
        (event_key("s", "a"), b"Cq\x00" + bytes(16), "outcome"),
        (event_key("s", "a"), b"Cj\x07" + bytes(16), "flags"),
        (event_key("s", "a"), b"Cj\x00" + b"\xff" * 16, "negative"),
        (event_key("s", "a"), b"O\x00" + bytes(8) + b"\xff\xff", "not a prediction"),
        (event_key("s", "a"), b"E" + bytes(8), "is malformed"),  # feedback without anything
        (event_key("s", "a"), encode_value(ENTRIES[-1][1]), "under an event key"),
        (CLOCK_KEY, encode_value(ENTRIES[3][1]), "under the clock key"),
        (CLOCK_KEY, b"M" + bytes(8) + b"{not json", "is malformed"),
        (CLOCK_KEY, b"M" + bytes(8) + b'{"joined": 1}', "exactly the keys"),
        (CLOCK_KEY, b"M" + bytes(8) + b"[" * 100_000, "is malformed"),
        (event_key("clicks", "zzz"), encode_value(ENTRIES[0][1]), "another id"),
        (event_key("other", "a"), encode_value(ENTRIES[0][1]), "another id"),
    ],
)
def test_malformed_records_are_refused_naming_the_key(
    key: bytes | None, value: bytes, says: str
) -> None:
    with pytest.raises(ChangelogError, match=says) as raised:
        decode_entry(key, value)
    if key:
        assert repr(key[:20])[:-1] in str(raised.value)


@PROPERTY
@given(st.binary(max_size=64), st.binary(max_size=256))
def test_any_bytes_decode_or_are_refused_clearly(key: bytes, value: bytes) -> None:
    try:
        decode_entry(key, value)
    except ChangelogError as exc:
        assert "changelog" in str(exc)


@PROPERTY
@given(st.sampled_from(ENTRIES), st.data())
def test_damaged_entries_decode_or_are_refused_clearly(
    entry: tuple[bytes, Value], data: st.DataObject
) -> None:
    key, value = entry
    encoded = bytearray(encode_value(value))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(encoded) - 1))
        encoded[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    try:
        decode_entry(key, bytes(encoded[:cut]))
    except ChangelogError as exc:
        assert str(exc).startswith("changelog")


def test_a_restore_skips_bad_records_only_when_told_to() -> None:
    j = Joiner(POLICIES)
    j.on_prediction(pred("a"), T0)
    j.on_prediction(pred("b"), T0)
    records: list[tuple[bytes | None, bytes | None]] = list(j.changes())
    records.append((b"garbage-key", b"O"))
    with pytest.raises(ChangelogError, match="garbage-key"):
        Joiner.from_changelog(records, POLICIES)
    skipped: list[ChangelogError] = []
    restored = Joiner.from_changelog(records, POLICIES, on_error=skipped.append)
    assert len(skipped) == 1 and restored.to_dict() == j.to_dict()


def test_changes_report_each_id_once_with_tombstones_and_the_clock_last() -> None:
    j = Joiner(POLICIES)
    j.on_prediction(pred("a"), T0)
    j.on_feedback(fb("early", T0), T0)
    first = j.changes()
    assert [k for k, _ in first] == [
        event_key("clicks", "a"),
        event_key("clicks", "early"),
        CLOCK_KEY,
    ]
    assert j.changes() == []  # nothing moved since
    j.on_feedback(fb("a", T0 + 10), T0 + 10)  # joins: "a" becomes a closed id
    changed = dict(j.changes())
    value = changed[event_key("clicks", "a")]
    assert value is not None
    assert isinstance(decode_entry(event_key("clicks", "a"), value)[1], ClosedEntry)
    assert CLOCK_KEY in changed
    j.advance(T0 + 10**9)  # "early" is unknown, "a" is forgotten: both tombstones
    changed = dict(j.changes())
    assert changed[event_key("clicks", "a")] is None
    assert changed[event_key("clicks", "early")] is None


def test_feedback_marks_reach_the_changelog_on_their_own() -> None:
    j, table = Joiner(POLICIES), Table()
    j.on_prediction(pred("open"), T0)
    j.on_prediction(pred("closed", T0 - 6000), T0)
    j.advance(T0 + 1)  # "closed" is a negative
    table_of(j.changes(), table)
    j.on_feedback(fb("open", T0 + 6000), T0 + 1)  # late while open
    j.on_feedback(fb("closed", T0), T0 + 1)  # late once closed
    table_of(j.changes(), table)
    restored = Joiner.from_changelog(table.items(), POLICIES)
    assert restored.to_dict() == j.to_dict()


def table_of(records: list[tuple[bytes, bytes | None]], table: Table) -> None:
    """Apply records as compaction would: the last value of a key, tombstones remove it."""
    for key, value in records:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value


Step = tuple[int, PredictionRecord | Feedback | None]


def steps_of(arrivals: list[Arrival], epochs: int) -> list[Step]:
    steps: list[Step] = []
    for epoch in range(epochs):
        steps.append((T0 + epoch * STEP_MS, None))
        steps += [(T0 + epoch * STEP_MS, a.record) for a in arrivals if a.epoch == epoch]
    steps.append((T0 + 10**9, None))
    return steps


def run(
    j: Joiner, steps: list[Step], after: Callable[[int], None] = lambda _: None
) -> list[Output]:
    out: list[Output] = []
    for i, (now, record) in enumerate(steps):
        out += j.advance(now) if record is None else feed(j, record, now)
        after(i)
    return out


@PROPERTY
@given(scenarios(), st.integers(0, 100), st.data())
def test_a_joiner_restored_from_its_changelog_continues_exactly(
    scenario: tuple[list[Arrival], int], cut_at: int, data: st.DataObject
) -> None:
    arrivals, epochs = scenario
    steps = steps_of(arrivals, epochs)
    cut = min(cut_at, len(steps))
    # Changes are taken at random moments (a transaction's commit), and always at the cut.
    every = set(range(len(steps)))
    some = st.lists(st.integers(0, len(steps)), max_size=len(steps)).map(set)
    moments = data.draw(st.one_of(st.just(every), some))
    whole = Joiner(POLICIES)
    expected = run(whole, steps)

    original, table = Joiner(POLICIES), Table()

    def commit(i: int) -> None:
        if i in moments:  # after each commit, the table alone restores the joiner
            table_of(original.changes(), table)
            assert Joiner.from_changelog(table.items(), POLICIES).to_dict() == original.to_dict()

    head = run(original, steps[:cut], commit)
    table_of(original.changes(), table)
    restored = Joiner.from_changelog(table.items(), POLICIES)
    assert restored.to_dict() == original.to_dict()
    assert restored.changes() == []  # what it restored is already in the table
    tail_table = dict(table)

    def commit_tail(i: int) -> None:
        table_of(restored.changes(), tail_table)

    assert head + run(restored, steps[cut:], commit_tail) == expected
    assert restored.to_dict() == whole.to_dict()
    # The table never holds more than the joiner: every forgotten id left a tombstone.
    assert Joiner.from_changelog(tail_table.items(), POLICIES).to_dict() == whole.to_dict()


def test_policies_can_change_while_running() -> None:
    j = Joiner({})
    j.on_prediction(pred("a"), T0)  # default: an hour
    j.set_policies(POLICIES)
    j.on_prediction(pred("b"), T0)  # clicks: a negative after 5 s
    [negative] = j.advance(T0 + 6000)
    assert negative.prediction.event_id == "b"  # type: ignore[union-attr]
    assert Label.class_index(0) == POLICIES["clicks"].negative_label

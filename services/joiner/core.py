"""The online join of predictions and feedback: a deterministic state machine, no transport.

Fed with `on_prediction`, `on_feedback` and `advance`, each given the joiner's clock `now`
(milliseconds; a watermark: it only moves forward, and windows whose close is at or before
it are closed). Windows are in event time: a prediction's window closes
`StreamPolicy.close_after_ms` after its timestamp, and feedback joins when its event time
is at or before that close, whatever the order in which the two arrive. So the outputs
depend on the events and on the clock at which each arrives, never on how prediction-log
and feedback records interleave between two moves of the clock. Rules:

- feedback for an open prediction joins (`Joined`), or is `Late` when its event time lies
  after the close; the prediction stays open and closes in silence;
- feedback before its prediction waits (up to `window_s` from its event time, in the
  stream it names) and joins when the prediction comes; if none comes it is `Unknown`;
- a window that closes in silence is a `Negative` (policy `negative_after_s`) or `Expired`;
- feedback for a closed prediction is `Late`; for an id never seen (or forgotten after
  `retention_s`) it waits, then is `Unknown`;
- the first prediction and the first feedback of an id count; every further one is a
  `Duplicate` (so identical redeliveries never change the result);
- memory is bounded per stream: beyond `max_pending` the oldest open prediction expires
  (`Expired` with reason overflow), the oldest early feedback is `Unknown` (overflow).

The state is a plain dict (`to_dict` / `from_dict`) for a checkpoint, or a changelog
(`changes` / `from_changelog`, entries of `changelog`) for a compacted topic: `changes`
returns the entries changed since its last call (a tombstone for each id no longer held,
and the clock entry when the clock or the counters moved). A joiner restored either way
continues exactly as the original would have.
"""

from __future__ import annotations

import base64
import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.joiner.changelog import (
    CLOCK_KEY,
    ChangelogError,
    ClockEntry,
    ClosedEntry,
    EarlyEntry,
    Entry,
    OpenEntry,
    decode_entry,
    decode_key,
    encode_value,
    event_key,
)
from services.joiner.metrics import JoinMetrics
from services.joiner.outputs import (
    OVERFLOW,
    Duplicate,
    Expired,
    Joined,
    Late,
    Negative,
    Output,
    Unknown,
)
from services.joiner.policy import StreamPolicy
from shared.errors import InvalidArgument
from shared.feedback import (
    Feedback,
    FeedbackProblem,
    PredictionRecord,
    decode_feedback,
    decode_prediction,
    encode_feedback,
    encode_prediction,
)

STATE_FORMAT = 1
# Closed outcomes remembered per id.
_JOINED, _NEGATIVE, _EXPIRED = "joined", "negative", "expired"


class JoinStateError(InvalidArgument):
    """A state dict that `Joiner.from_dict` cannot restore."""


@dataclass
class _Open:
    record: PredictionRecord
    close_ms: int
    feedback_seen: bool = False  # a late feedback came: the next one is a duplicate


@dataclass
class _Closed:
    outcome: str
    close_ms: int
    forget_ms: int
    feedback_seen: bool


@dataclass
class _Stream:
    """One stream's open predictions, early feedback and closed ids, each with a heap.

    Heaps hold (time, id) and are cleaned lazily: an entry whose id has left its map (or
    came back with another time) is skipped when it surfaces.
    """

    open: dict[str, _Open] = field(default_factory=dict)
    open_heap: list[tuple[int, str]] = field(default_factory=list)
    early: dict[str, tuple[Feedback, int]] = field(default_factory=dict)
    early_heap: list[tuple[int, str]] = field(default_factory=list)
    closed: dict[str, _Closed] = field(default_factory=dict)
    closed_heap: list[tuple[int, str]] = field(default_factory=list)
    # Ids whose entry changed since the last `Joiner.changes` (every mutation adds its id).
    touched: set[str] = field(default_factory=set)

    def empty(self) -> bool:
        """Whether nothing of this stream is held."""
        return not (self.open or self.early or self.closed)

    def add_open(self, entry: _Open) -> None:
        self.open[entry.record.event_id] = entry
        self.touched.add(entry.record.event_id)
        heapq.heappush(self.open_heap, (entry.close_ms, entry.record.event_id))
        if _mostly_dead(self.open_heap, self.open):
            self.open_heap[:] = _heap((e.close_ms, i) for i, e in self.open.items())

    def add_early(self, feedback: Feedback, until_ms: int) -> None:
        self.early[feedback.event_id] = (feedback, until_ms)
        self.touched.add(feedback.event_id)
        heapq.heappush(self.early_heap, (until_ms, feedback.event_id))
        if _mostly_dead(self.early_heap, self.early):
            self.early_heap[:] = _heap((until, i) for i, (_, until) in self.early.items())

    def add_closed(self, event_id: str, closed: _Closed) -> None:
        self.closed[event_id] = closed
        self.touched.add(event_id)
        heapq.heappush(self.closed_heap, (closed.forget_ms, event_id))
        if _mostly_dead(self.closed_heap, self.closed):
            self.closed_heap[:] = _heap((c.forget_ms, i) for i, c in self.closed.items())

    def pop_open(self, before_ms: int | None) -> _Open | None:
        """The open prediction closing first, if it closes at or before `before_ms`."""
        while self.open_heap:
            close_ms, event_id = self.open_heap[0]
            entry = self.open.get(event_id)
            if entry is None or entry.close_ms != close_ms:
                heapq.heappop(self.open_heap)
                continue
            if before_ms is not None and close_ms > before_ms:
                return None
            heapq.heappop(self.open_heap)
            self.touched.add(event_id)
            return self.open.pop(event_id)
        return None

    def pop_early(self, before_ms: int | None) -> tuple[Feedback, int] | None:
        """The early feedback whose wait ends first, if it ends at or before `before_ms`."""
        while self.early_heap:
            until_ms, event_id = self.early_heap[0]
            entry = self.early.get(event_id)
            if entry is None or entry[1] != until_ms:
                heapq.heappop(self.early_heap)
                continue
            if before_ms is not None and until_ms > before_ms:
                return None
            heapq.heappop(self.early_heap)
            self.touched.add(event_id)
            return self.early.pop(event_id)
        return None

    def pop_closed(self, before_ms: int | None) -> bool:
        """Forget the closed id due first, if due at or before `before_ms`; True if one was."""
        while self.closed_heap:
            forget_ms, event_id = self.closed_heap[0]
            entry = self.closed.get(event_id)
            if entry is None or entry.forget_ms != forget_ms:
                heapq.heappop(self.closed_heap)
                continue
            if before_ms is not None and forget_ms > before_ms:
                return False
            heapq.heappop(self.closed_heap)
            del self.closed[event_id]
            self.touched.add(event_id)
            return True
        return False

    def entry(self, event_id: str) -> Entry | None:
        """The changelog entry of `event_id`; None when nothing of it is held."""
        if (entry := self.open.get(event_id)) is not None:
            return OpenEntry(entry.record, entry.close_ms, entry.feedback_seen)
        if (early := self.early.get(event_id)) is not None:
            return EarlyEntry(*early)
        if (closed := self.closed.get(event_id)) is not None:
            return ClosedEntry(
                closed.outcome, closed.close_ms, closed.forget_ms, closed.feedback_seen
            )
        return None

    def restore(self, event_id: str, entry: Entry) -> None:
        """Hold `entry` for `event_id` (a changelog entry read back)."""
        if isinstance(entry, OpenEntry):
            self.add_open(_Open(entry.record, entry.close_ms, entry.feedback_seen))
        elif isinstance(entry, EarlyEntry):
            self.add_early(entry.feedback, entry.until_ms)
        else:
            closed = _Closed(entry.outcome, entry.close_ms, entry.forget_ms, entry.feedback_seen)
            self.add_closed(event_id, closed)


def _mostly_dead(heap: list[tuple[int, str]], live: Mapping[str, object]) -> bool:
    """Whether most of a heap's entries are dead, so it is rebuilt from its map.

    Predictions joined long before their close leave dead entries; rebuilding keeps
    memory bounded by the maps' sizes.
    """
    return len(heap) > 2 * len(live) + 64


def _heap(entries: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
    heap = list(entries)
    heapq.heapify(heap)
    return heap


class Joiner:
    """Joins predictions and feedback per stream; see the module docstring for the rules."""

    def __init__(
        self, policies: Mapping[str, StreamPolicy], default: StreamPolicy | None = None
    ) -> None:
        """A joiner with nothing open.

        Args:
            policies: The policy of each stream by name.
            default: The policy of any other stream (None: `StreamPolicy()`).

        """
        self._policies = dict(policies)
        self._default = default or StreamPolicy()
        self._streams: dict[str, _Stream] = {}
        self.watermark_ms = 0
        self.metrics = JoinMetrics()
        # Changed ids of streams dropped (emptied) since the last `changes`.
        self._dropped: dict[str, set[str]] = {}
        self._last_clock: bytes | None = None  # the clock entry `changes` last returned

    def set_policies(
        self, policies: Mapping[str, StreamPolicy], default: StreamPolicy | None = None
    ) -> None:
        """Replace the policies (stream definitions changed).

        What is held keeps the close time it was given; the new policies decide what comes
        in from now on, and how windows that close from now on end.
        """
        self._policies = dict(policies)
        self._default = default or StreamPolicy()

    def policy(self, stream: str) -> StreamPolicy:
        """The policy of `stream`."""
        return self._policies.get(stream, self._default)

    def pending(self) -> int:
        """Open predictions and waiting feedback, over every stream."""
        return sum(len(s.open) + len(s.early) for s in self._streams.values())

    def advance(self, now: int) -> list[Output]:
        """Move the clock to `now` (ms) and close what closes at or before it.

        Returns outputs ordered by their time, then stream, then event id. A clock that
        does not move forward closes nothing.
        """
        if now <= self.watermark_ms:
            return []
        self.watermark_ms = now
        due: list[tuple[int, str, str, Output]] = []
        for name in sorted(self._streams):
            state, policy = self._streams[name], self.policy(name)
            while (entry := state.pop_open(now)) is not None:
                closed = self._close(entry, state, policy)
                due.append((entry.close_ms, name, entry.record.event_id, closed))
            while (early := state.pop_early(now)) is not None:
                self.metrics.unknown += 1
                due.append((early[1], name, early[0].event_id, Unknown(early[0])))
            while state.pop_closed(now):
                pass
            if state.empty():  # e.g. a stream named only by feedback that came to nothing
                self._dropped.setdefault(name, set()).update(state.touched)
                del self._streams[name]
        due.sort(key=lambda d: d[:3])
        return [d[3] for d in due]

    def on_prediction(self, record: PredictionRecord, now: int) -> list[Output]:
        """Take one prediction-log record arriving at `now` (ms); see `advance`."""
        out = self.advance(now)
        state, policy = self._state(record.stream), self.policy(record.stream)
        event_id = record.event_id
        if event_id in state.open or event_id in state.closed:
            self.metrics.duplicates += 1
            out.append(Duplicate(record))
            return out
        entry = _Open(record, record.timestamp_ms + policy.close_after_ms)
        early = state.early.pop(event_id, None)
        state.touched.add(event_id)
        if early is not None and early[0].event_time_ms <= entry.close_ms:
            out.append(self._join(entry, early[0], state, policy))
            return out
        if early is not None:
            self.metrics.late += 1
            out.append(Late(early[0], entry.close_ms))
            entry.feedback_seen = True
        state.add_open(entry)
        if len(state.open) > policy.max_pending:
            oldest = state.pop_open(None)
            if oldest is not None:  # always: the map is not empty
                out.append(self._close(oldest, state, policy, overflow=True))
        return out

    def on_feedback(self, feedback: Feedback, now: int) -> list[Output]:
        """Take one feedback record arriving at `now` (ms); see `advance`."""
        out = self.advance(now)
        state, policy = self._state(feedback.stream), self.policy(feedback.stream)
        event_id = feedback.event_id
        entry = state.open.get(event_id)
        closed = state.closed.get(event_id)
        if entry is not None and not entry.feedback_seen:
            if feedback.event_time_ms <= entry.close_ms:
                del state.open[event_id]  # its heap entry is skipped from now on
                state.touched.add(event_id)
                out.append(self._join(entry, feedback, state, policy))
            else:
                entry.feedback_seen = True
                state.touched.add(event_id)
                self.metrics.late += 1
                out.append(Late(feedback, entry.close_ms))
        elif closed is not None and closed.outcome != _JOINED and not closed.feedback_seen:
            closed.feedback_seen = True
            state.touched.add(event_id)
            self.metrics.late += 1
            out.append(Late(feedback, closed.close_ms))
        elif entry is not None or closed is not None or event_id in state.early:
            self.metrics.duplicates += 1
            out.append(Duplicate(feedback))
        else:
            state.add_early(feedback, feedback.event_time_ms + policy.window_ms)
            if len(state.early) > policy.max_pending:
                oldest = state.pop_early(None)
                if oldest is not None:  # always: the map is not empty
                    self.metrics.unknown += 1
                    self.metrics.overflow += 1
                    out.append(Unknown(oldest[0], OVERFLOW))
        return out

    def _state(self, stream: str) -> _Stream:
        state = self._streams.get(stream)
        if state is None:
            state = self._streams[stream] = _Stream()
        return state

    def _join(
        self, entry: _Open, feedback: Feedback, state: _Stream, policy: StreamPolicy
    ) -> Joined:
        delay = max(0, feedback.event_time_ms - entry.record.timestamp_ms)
        self.metrics.joined += 1
        self.metrics.observe_delay(delay)
        self._remember(state, policy, entry.record.event_id, _JOINED, entry.close_ms, True)
        return Joined(entry.record, feedback, delay)

    def _close(
        self, entry: _Open, state: _Stream, policy: StreamPolicy, overflow: bool = False
    ) -> Output:
        """A prediction's end in silence (or eviction): negative or expired."""
        record = entry.record
        negative = policy.negative_after_s is not None and not overflow
        outcome = _NEGATIVE if negative else _EXPIRED
        self._remember(state, policy, record.event_id, outcome, entry.close_ms, entry.feedback_seen)
        if negative:
            self.metrics.negatives += 1
            return Negative(record, policy.negative_label, entry.close_ms)
        self.metrics.expired += 1
        if overflow:
            self.metrics.overflow += 1
            return Expired(record, OVERFLOW)
        return Expired(record)

    def _remember(
        self,
        state: _Stream,
        policy: StreamPolicy,
        event_id: str,
        outcome: str,
        close_ms: int,
        feedback_seen: bool,
    ) -> None:
        state.add_closed(
            event_id, _Closed(outcome, close_ms, close_ms + policy.retention_ms, feedback_seen)
        )
        while len(state.closed) > policy.max_closed and state.pop_closed(None):
            self.metrics.forgotten += 1

    def changes(self) -> list[tuple[bytes, bytes | None]]:
        """The changelog entries changed since the last call, as (key, value) records.

        A value of None is a tombstone: the id is no longer held. The clock entry comes
        last, when the clock or a counter moved. Ids by stream, then id.
        """
        touched = {name: set(ids) for name, ids in self._dropped.items()}
        self._dropped.clear()
        for name, state in self._streams.items():
            if state.touched:
                touched.setdefault(name, set()).update(state.touched)
                state.touched.clear()
        out: list[tuple[bytes, bytes | None]] = []
        for name in sorted(touched):
            held = self._streams.get(name)
            for event_id in sorted(touched[name]):
                entry = held.entry(event_id) if held is not None else None
                value = None if entry is None else encode_value(entry)
                out.append((event_key(name, event_id), value))
        clock = encode_value(ClockEntry(self.watermark_ms, self.metrics))
        if clock != self._last_clock:
            out.append((CLOCK_KEY, clock))
            self._last_clock = clock
        return out

    @classmethod
    def from_changelog(
        cls,
        records: Iterable[tuple[bytes | None, bytes | None]],
        policies: Mapping[str, StreamPolicy],
        default: StreamPolicy | None = None,
        on_error: Callable[[ChangelogError], None] | None = None,
    ) -> Joiner:
        """A joiner holding the state a changelog's (key, value) records describe, in order.

        The last record of each key counts (a compacted topic may still hold older ones);
        a tombstone (value None) removes the key. `changes` then returns nothing until the
        joiner moves on.

        Args:
            records: The changelog's (key, value) records, oldest first.
            policies: The policy of each stream by name.
            default: The policy of any other stream.
            on_error: Called with each record that is no state entry, which is then left
                out (only that id's memory is lost); None: such a record raises.

        Raises:
            ChangelogError: A record is no state entry (its message names the key), and no
                `on_error` was given.

        """
        latest: dict[bytes | None, bytes | None] = {}
        for key, value in records:
            latest[key] = value
        joiner = cls(policies, default)
        for key, value in latest.items():
            try:
                if value is None:
                    decode_key(key)  # even a tombstone must have a state key
                    continue
                where, entry = decode_entry(key, value)
            except ChangelogError as exc:
                if on_error is None:
                    raise
                on_error(exc)
                continue
            if isinstance(entry, ClockEntry):
                joiner.watermark_ms, joiner.metrics = entry.watermark_ms, entry.metrics
            elif where is not None:
                joiner._state(where[0]).restore(where[1], entry)
        for state in joiner._streams.values():
            state.touched.clear()
        joiner._last_clock = encode_value(ClockEntry(joiner.watermark_ms, joiner.metrics))
        return joiner

    def to_dict(self) -> dict[str, Any]:
        """The whole state as plain, JSON-able values (records as base64 protobuf)."""
        streams = {}
        for name in sorted(self._streams):
            state = self._streams[name]
            if state.empty():
                continue
            streams[name] = {
                "open": [
                    [_b64(encode_prediction(e.record)), e.close_ms, e.feedback_seen]
                    for _, e in sorted(state.open.items())
                ],
                "early": [
                    [_b64(encode_feedback(f)), until]
                    for _, (f, until) in sorted(state.early.items())
                ],
                "closed": [
                    [i, c.outcome, c.close_ms, c.forget_ms, c.feedback_seen]
                    for i, c in sorted(state.closed.items())
                ],
            }
        return {
            "format": STATE_FORMAT,
            "watermark_ms": self.watermark_ms,
            "metrics": self.metrics.to_dict(),
            "streams": streams,
        }

    @classmethod
    def from_dict(
        cls,
        state: Any,
        policies: Mapping[str, StreamPolicy],
        default: StreamPolicy | None = None,
    ) -> Joiner:
        """A joiner continuing from `to_dict`'s output (policies are configuration).

        Raises:
            JoinStateError: `state` is not such a dict (its message says what is wrong).

        """
        joiner = cls(policies, default)
        try:
            if state.get("format") != STATE_FORMAT:
                raise JoinStateError(f"joiner state format {state.get('format')!r} is unknown")
            joiner.watermark_ms = _int(state["watermark_ms"])
            joiner.metrics = JoinMetrics.from_dict(state["metrics"])
            for name, plain in state["streams"].items():
                joiner._streams[str(name)] = _restore_stream(plain)
        except (FeedbackProblem, JoinStateError, InvalidArgument) as exc:
            raise JoinStateError(f"joiner state is malformed: {exc}") from None
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise JoinStateError(
                f"joiner state is malformed: {type(exc).__name__}: {exc}"
            ) from None
        return joiner


def _restore_stream(plain: Any) -> _Stream:
    state = _Stream()
    for encoded, close_ms, seen in plain["open"]:
        state.add_open(_Open(decode_prediction(_unb64(encoded)), _int(close_ms), _bool(seen)))
    for encoded, until in plain["early"]:
        state.add_early(decode_feedback(_unb64(encoded)), _int(until))
    for event_id, outcome, close_ms, forget_ms, seen in plain["closed"]:
        if outcome not in (_JOINED, _NEGATIVE, _EXPIRED) or not isinstance(event_id, str):
            raise JoinStateError(f"closed entry {event_id!r}: outcome {outcome!r} is unknown")
        state.add_closed(event_id, _Closed(outcome, _int(close_ms), _int(forget_ms), _bool(seen)))
    return state


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise JoinStateError(f"expected base64 text, got {type(text).__name__}")
    return base64.b64decode(text, validate=True)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise JoinStateError(f"expected an integer, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise JoinStateError(f"expected true or false, got {value!r}")
    return value

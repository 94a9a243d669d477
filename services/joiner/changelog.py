"""The joiner's state as changelog entries: one per (stream, event id), one per partition.

A compacted topic keyed like these entries holds a partition's state: the last value of each
key is what the joiner holds for it, and a tombstone (no value) means it holds nothing.

Keys:
- `b"e" + len(stream) (2 bytes, big-endian) + stream + event_id` (UTF-8): an event id;
- `b"w"`: the partition's clock (watermark) and counters.

Values (integers are signed 64-bit big-endian):
- open prediction: `b"O" + flags + close_ms + PredictionRecord protobuf`;
- early feedback: `b"E" + until_ms + Feedback protobuf`;
- closed id: `b"C" + outcome + flags + close_ms + forget_ms`;
- clock: `b"M" + watermark_ms + JSON counters` (`JoinMetrics.to_dict`).

`flags` bit 0: feedback was seen. Decoding is strict: anything else is a `ChangelogError`
naming the key, never another exception (a restore must fail clearly, not crash in a loop).
Transport-free.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from services.joiner.metrics import JoinMetrics
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

CLOCK_KEY = b"w"
_EVENT = b"e"
_I64 = struct.Struct(">q")
_LEN = struct.Struct(">H")
# Closed outcomes and their one-byte codes.
OUTCOMES = {"joined": b"j", "negative": b"n", "expired": b"x"}
_OUTCOME_OF = {code: name for name, code in OUTCOMES.items()}


class ChangelogError(InvalidArgument):
    """A changelog record that is not a joiner state entry; the message names its key."""


@dataclass(frozen=True)
class OpenEntry:
    """A prediction waiting for its feedback until `close_ms`."""

    record: PredictionRecord
    close_ms: int
    feedback_seen: bool


@dataclass(frozen=True)
class EarlyEntry:
    """Feedback waiting for its prediction until `until_ms`."""

    feedback: Feedback
    until_ms: int


@dataclass(frozen=True)
class ClosedEntry:
    """A closed prediction's id, remembered until `forget_ms`."""

    outcome: str
    close_ms: int
    forget_ms: int
    feedback_seen: bool


@dataclass(frozen=True)
class ClockEntry:
    """A partition's clock and counters."""

    watermark_ms: int
    metrics: JoinMetrics


Entry = OpenEntry | EarlyEntry | ClosedEntry
Value = Entry | ClockEntry


def event_key(stream: str, event_id: str) -> bytes:
    """The changelog key of an event id of `stream`."""
    name = stream.encode()
    return _EVENT + _LEN.pack(len(name)) + name + event_id.encode()


def decode_key(key: bytes | None) -> tuple[str, str] | None:
    """(stream, event id) of an event key; None for the clock key.

    Raises:
        ChangelogError: Neither kind of key.

    """
    if key is None:
        raise ChangelogError("a changelog record has no key")
    if key == CLOCK_KEY:
        return None
    if not key or key[:1] != _EVENT or len(key) < 3:
        raise ChangelogError(f"changelog key {_show(key)} is not a joiner state key")
    (size,) = _LEN.unpack_from(key, 1)
    stream_bytes, id_bytes = key[3 : 3 + size], key[3 + size :]
    if len(stream_bytes) != size or not size or not id_bytes:
        raise ChangelogError(f"changelog key {_show(key)} has a malformed stream or event id")
    try:
        return stream_bytes.decode(), id_bytes.decode()
    except UnicodeDecodeError:
        raise ChangelogError(f"changelog key {_show(key)} is not UTF-8") from None


def encode_value(value: Value) -> bytes:
    """The changelog value of an entry."""
    if isinstance(value, OpenEntry):
        flags = bytes([value.feedback_seen])
        return b"O" + flags + _I64.pack(value.close_ms) + encode_prediction(value.record)
    if isinstance(value, EarlyEntry):
        return b"E" + _I64.pack(value.until_ms) + encode_feedback(value.feedback)
    if isinstance(value, ClosedEntry):
        head = b"C" + OUTCOMES[value.outcome] + bytes([value.feedback_seen])
        return head + _I64.pack(value.close_ms) + _I64.pack(value.forget_ms)
    counters = json.dumps(value.metrics.to_dict(), separators=(",", ":")).encode()
    return b"M" + _I64.pack(value.watermark_ms) + counters


def decode_entry(key: bytes | None, value: bytes) -> tuple[tuple[str, str] | None, Value]:
    """The (stream, event id) (None: the clock) and the entry of a changelog record.

    Raises:
        ChangelogError: The record is no state entry, or its value does not belong to its
            key (its message names the key and what is wrong).

    """
    where = decode_key(key)
    try:
        decoded = _decode_value(value, clock=where is None)
    except (FeedbackProblem, InvalidArgument, RecursionError, ValueError, struct.error) as exc:
        raise ChangelogError(f"changelog entry {_show(key)} is malformed: {exc}") from None
    if where is not None and isinstance(decoded, (OpenEntry, EarlyEntry)):
        owner = decoded.record if isinstance(decoded, OpenEntry) else decoded.feedback
        if (owner.stream, owner.event_id) != where:
            raise ChangelogError(f"changelog entry {_show(key)} holds a record of another id")
    return where, decoded


def _decode_value(value: bytes, *, clock: bool) -> Value:
    tag, body = value[:1], value[1:]
    if clock != (tag == b"M"):
        raise ValueError(f"a {tag!r} value under {'the clock' if clock else 'an event'} key")
    if tag == b"O" and len(body) >= 9:
        return OpenEntry(decode_prediction(body[9:]), _time(body, 1), _flag(body[0]))
    if tag == b"E" and len(body) >= 8:
        return EarlyEntry(decode_feedback(body[8:]), _time(body, 0))
    if tag == b"C" and len(body) == 18:
        outcome = _OUTCOME_OF.get(body[:1])
        if outcome is None:
            raise ValueError(f"outcome {body[:1]!r} is unknown")
        return ClosedEntry(outcome, _time(body, 2), _time(body, 10), _flag(body[1]))
    if tag == b"M" and len(body) >= 8:
        plain = json.loads(body[8:].decode())
        return ClockEntry(_time(body, 0), JoinMetrics.from_dict(plain))
    raise ValueError(f"tag {tag!r} with {len(body)} bytes is no entry")


def _time(body: bytes, at: int) -> int:
    (value,) = _I64.unpack_from(body, at)
    if value < 0:
        raise ValueError(f"time {value} is negative")
    return int(value)


def _flag(byte: int) -> bool:
    if byte not in (0, 1):
        raise ValueError(f"flags {byte} are not 0 or 1")
    return bool(byte)


def _show(key: bytes | None) -> str:
    """A key as it can be logged: bounded, printable."""
    if key is None:
        return "None"
    return repr(key[:120]) + ("..." if len(key) > 120 else "")

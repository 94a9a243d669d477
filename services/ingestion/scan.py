"""A compiled scan of `Sample` wire bytes: what validation needs, with no Python object per field.

Parsing each record into a protobuf object and reading its fields back costs several times
more than validating it. `scan` reads a whole batch of serialized `Sample`s straight from
the protobuf wire format in one compiled call, like the trainer's decoder
(`services/trainer/wire.py`), into one row of integers per record (`Col` names the
columns): the envelope (schema version, where the event id and stream are), the dense
features (how many, whether any is NaN or infinite), the label (which, the class), whether
the weight or regression label is unusable, the event time and the length of the text.

The scan serves a fast path that only *accepts*: a record it can read simply and that passes
every rule goes to training at once; any other record (`Col.SIMPLE` 0) is routed by the
router as before, which names the reason. So the scan declines whatever it does not model
exactly as the protobuf library does: a field other than those below, a field with an
unexpected wire type, a nested message or map (sparse features, multi-labels, named
features, attributes), an event time given twice, a string that is not ASCII (the library
refuses invalid UTF-8), a varint of more than 9 bytes or a value the library would truncate.
Every length is checked against the record's end before it is used, so no input makes the
scan read out of bounds, loop or allocate.

numba is optional: without it (`AVAILABLE` False) every record takes the router's path.
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np

numba: Any
try:
    import numba
except ImportError:  # the slim runtime image: the router routes every record
    numba = None

AVAILABLE = numba is not None
MAX_SECONDS = 10**14  # event times beyond this are declined (no overflow in milliseconds)


class Col(enum.IntEnum):
    """The columns of a scanned row."""

    SIMPLE = 0  # 1: read in full by the scan; 0: declined, the router decides
    SCHEMA = 1
    EVENT_ID_START = 2
    EVENT_ID_STOP = 3
    STREAM_START = 4
    STREAM_STOP = 5
    DENSE = 6  # how many dense values
    NON_FINITE = 7  # 1: a dense value, the weight or the regression label is NaN or infinite
    LABEL = 8  # 0 none, 1 regression, 2 class_index (the last one given, as in a oneof)
    CLASS = 9
    EVENT_MS = 10  # 0: unset
    NEGATIVE_WEIGHT = 11
    TEXT = 12  # bytes of the text (the last one given, as the library keeps); ASCII only


COLUMNS = len(Col)
NO_LABEL, REGRESSION, CLASS_INDEX = 0, 1, 2


def _jit(function: Any) -> Any:
    return numba.njit(cache=True, nogil=True)(function) if numba is not None else function


@_jit
def _varint(buf: np.ndarray, pos: int, end: int) -> tuple[int, int]:
    """(value, next position); position -1 past `end` or beyond 9 bytes (63 bits)."""
    result, shift = 0, 0
    while pos < end and shift < 63:
        byte = buf[pos]
        result |= (int(byte) & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return result, pos
        shift += 7
    return 0, -1


@_jit
def _ascii(buf: np.ndarray, start: int, stop: int) -> bool:
    for i in range(start, stop):  # noqa: SIM110 - compiled: a loop, not a generator
        if buf[i] >= 0x80:
            return False
    return True


@_jit
def _finite32(buf: np.ndarray, pos: int) -> bool:
    # float32 little-endian: the exponent is all ones for NaN and infinities
    return not ((buf[pos + 3] & 0x7F) == 0x7F and (buf[pos + 2] & 0x80) == 0x80)


@_jit
def _finite64(buf: np.ndarray, pos: int) -> bool:
    return not ((buf[pos + 7] & 0x7F) == 0x7F and (buf[pos + 6] & 0xF0) == 0xF0)


@_jit
def _negative32(buf: np.ndarray, pos: int) -> bool:
    """A float32 below zero (-0.0 is not; NaN never reaches this test)."""
    if buf[pos + 3] < 0x80:
        return False
    magnitude = (buf[pos + 3] & 0x7F) | buf[pos + 2] | buf[pos + 1] | buf[pos]
    return bool(magnitude != 0)


@_jit
def _timestamp(buf: np.ndarray, pos: int, end: int) -> tuple[bool, int]:
    """(read simply, milliseconds) of a google.protobuf.Timestamp message."""
    seconds, nanos = 0, 0
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if pos < 0 or tag & 7 != 0:
            return False, 0
        value, pos = _varint(buf, pos, end)
        if pos < 0:
            return False, 0
        if tag >> 3 == 1:
            seconds = value
        elif tag >> 3 == 2:
            if value >= 2**31:
                return False, 0
            nanos = value
        else:
            return False, 0
    if seconds > MAX_SECONDS:
        return False, 0
    return True, seconds * 1000 + nanos // 1_000_000


@_jit
def _scan_one(buf: np.ndarray, pos: int, end: int, row: np.ndarray) -> bool:
    """Fill `row` from the record buf[pos:end]; False when it is declined."""
    label, klass, regression_ok, weight_ok, dense_ok, times = 0, 0, True, True, True, 0
    count, negative = 0, False
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if pos < 0:
            return False
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            if pos < 0:
                return False
            if field == 1:
                if value >= 2**32:
                    return False
                row[1] = value
            elif field == 9:
                if value >= 2**31:
                    return False
                label, klass = CLASS_INDEX, value
            else:
                return False
        elif wire == 1:
            if field != 8 or pos + 8 > end:
                return False
            regression_ok = _finite64(buf, pos)
            label = REGRESSION
            pos += 8
        elif wire == 5:
            if pos + 4 > end:
                return False
            if field == 11:
                weight_ok = _finite32(buf, pos)
                negative = weight_ok and _negative32(buf, pos)
            elif field == 6:  # an unpacked dense value
                dense_ok = dense_ok and _finite32(buf, pos)
                count += 1
            else:
                return False
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos < 0 or length > end - pos:
                return False
            stop = pos + length
            if field == 6:  # packed dense values
                if length % 4:
                    return False
                for at in range(pos, stop, 4):
                    dense_ok = dense_ok and _finite32(buf, at)
                count += length // 4
            elif field == 2 or field == 3 or field == 5 or field == 12:
                if not _ascii(buf, pos, stop):
                    return False
                if field == 2:
                    row[2], row[3] = pos, stop
                elif field == 5:
                    row[4], row[5] = pos, stop
                elif field == 12:
                    row[12] = length
            elif field == 4:
                times += 1
                ok, millis = _timestamp(buf, pos, stop)
                if not ok or times > 1:
                    return False
                row[10] = millis
            else:
                return False  # sparse, multi_label, attributes, named features, unknown
            pos = stop
        else:
            return False
    # A oneof keeps the last label given; the other reads as its default (finite).
    row[6] = count
    row[7] = 0 if dense_ok and weight_ok and (label != REGRESSION or regression_ok) else 1
    row[8] = label
    row[9] = klass if label == CLASS_INDEX else 0
    row[11] = 1 if negative else 0
    return True


@_jit
def scan_rows(buf: np.ndarray, ends: np.ndarray, rows: np.ndarray) -> None:
    """Scan record i (buf[ends[i-1]:ends[i]], the first from 0) into rows[i]."""
    start = 0
    for i in range(len(ends)):
        rows[i, :] = 0
        end = ends[i]
        if end > start and _scan_one(buf, start, end, rows[i]):
            rows[i, 0] = 1
        else:
            rows[i, :] = 0
        start = end


def scan(values: list[bytes]) -> tuple[bytes, np.ndarray]:
    """The records back to back and one row of `Col`s per record (positions into them).

    An empty record is declined (SIMPLE 0).
    """
    joined = b"".join(values)
    ends = np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=len(values)))
    rows = np.zeros((len(values), COLUMNS), dtype=np.int64)
    if values:
        scan_rows(np.frombuffer(joined, dtype=np.uint8), ends, rows)
    return joined, rows

"""A compiled decoder of `streamlearn.v1.Sample` wire bytes into feature/label arrays.

Decoding each record into a protobuf object, then copying its repeated floats into numpy,
costs more than learning from it. This scanner reads the few fields the trainer needs
straight from the protobuf wire format (packed `dense` floats, `regression`, `class_index`,
`weight`) and skips every other field by its wire type, as any protobuf parser must. Rows it
cannot read are flagged, and the caller decodes them with the protobuf library instead.
Field numbers are those of protos/streamlearn/v1/sample.proto (checked by the tests).
"""

from __future__ import annotations

import numba
import numpy as np

DENSE, REGRESSION, CLASS_INDEX, WEIGHT = 6, 8, 9, 11
OK, MALFORMED, WRONG_SHAPE = 0, 1, 2


@numba.njit(cache=True)
def _varint(buf: np.ndarray, pos: int, end: int) -> tuple[int, int]:
    """(value, next position); position -1 when the varint runs past `end`."""
    result, shift = 0, 0
    while pos < end and shift < 64:
        byte = buf[pos]
        result |= (int(byte) & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return result, pos
        shift += 7
    return 0, -1


@numba.njit(cache=True)
def _decode_one(
    buf: np.ndarray,
    pos: int,
    end: int,
    x: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    row: int,
) -> int:
    features = x.shape[1]
    count, seen = 0, 0  # seen: which label of the oneof arrived (1 regression, 2 class)
    regression, klass, weight = 0.0, 0, 0.0
    scratch = np.empty(8, np.uint8)
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if pos < 0:
            return MALFORMED
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            if pos < 0:
                return MALFORMED
            if field == CLASS_INDEX:
                klass = value  # int64 arithmetic wraps: a negative int32 reads back negative
                seen = 2
        elif wire == 1:
            if pos + 8 > end:
                return MALFORMED
            if field == REGRESSION:
                scratch[:8] = buf[pos : pos + 8]
                regression = scratch[:8].view(np.float64)[0]
                seen = 1
            pos += 8
        elif wire == 5:
            if pos + 4 > end:
                return MALFORMED
            scratch[:4] = buf[pos : pos + 4]
            value32 = scratch[:4].view(np.float32)[0]
            if field == WEIGHT:
                weight = value32
            elif field == DENSE:  # an unpacked repeated float
                if count < features:
                    x[row, count] = value32
                count += 1
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos < 0 or pos + length > end:
                return MALFORMED
            if field in (REGRESSION, CLASS_INDEX):
                return MALFORMED  # not a Sample (a SampleBatch has columns there)
            if field == DENSE:
                if length % 4:
                    return MALFORMED
                for k in range(length // 4):
                    if count < features:
                        scratch[:4] = buf[pos + 4 * k : pos + 4 * k + 4]
                        x[row, count] = scratch[:4].view(np.float32)[0]
                    count += 1
            pos += length
        else:
            return MALFORMED  # groups (wire types 3, 4) are not in this schema
    if count != features:
        return WRONG_SHAPE
    # No label at all: NaN, which the learner's guard refuses and counts.
    labels[row] = regression if seen == 1 else (float(klass) if seen == 2 else np.nan)
    weights[row] = weight if weight != 0.0 else 1.0
    return OK


@numba.njit(cache=True)
def decode_samples(
    buf: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    x: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    status: np.ndarray,
) -> None:
    """Decode record i (buf[starts[i]:ends[i]]) into row i; status[i] says how it went."""
    for i in range(len(starts)):
        status[i] = _decode_one(buf, starts[i], ends[i], x, labels, weights, i)

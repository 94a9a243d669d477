"""A compiled decoder of `streamlearn.v1.Sample` wire bytes into feature/label arrays.

Decoding each record into a protobuf object, then copying its repeated floats into numpy,
costs more than learning from it. This scanner reads the few fields the trainer needs
straight from the protobuf wire format (packed `dense` floats, `regression`, `class_index`,
`weight`, the joiner's `served_score`) and skips every other field by its wire type, as any
protobuf parser must. Rows it cannot read are flagged, and the caller decodes them with the
protobuf library instead; so
are rows carrying named `features` (a map the scanner does not read: the featurizer does).
Field numbers are those of protos/streamlearn/v1/sample.proto (checked by the tests).

Every length read from the wire is checked against the record's end before it is used, so
no input (random bytes, a declared length of 2**63) makes the scanner read out of bounds,
loop, or allocate: the cost of a record is bounded by its size.
"""

from __future__ import annotations

import numba
import numpy as np

DENSE, REGRESSION, CLASS_INDEX, WEIGHT, FEATURES, SERVED = 6, 8, 9, 11, 14, 15
SAMPLE_STREAM, BATCH_STREAM = 5, 2  # `stream` of a Sample, of a SampleBatch
OK, MALFORMED, WRONG_SHAPE = 0, 1, 2
FOREIGN, UNREADABLE = -1, -2  # match_streams: another stream; no stream could be read


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
def _copy_packed(
    buf: np.ndarray, pos: int, length: int, dest: np.ndarray, filled: int, capacity: int
) -> int:
    """Copy packed floats byte for byte into `dest` (a row's bytes), after `filled` values.

    At most `capacity` values are kept; returns the values counted, kept or not (the
    caller compares the count with the width it expects).
    """
    kept = min(length // 4, capacity - filled) if filled < capacity else 0
    for k in range(4 * kept):
        dest[4 * filled + k] = buf[pos + k]
    return filled + length // 4


@numba.njit(cache=True)
def _decode_one(
    buf: np.ndarray,
    pos: int,
    end: int,
    x: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    named: np.ndarray,
    served: np.ndarray,
    row: int,
    scratch: np.ndarray,
) -> int:
    # Floats are copied byte for byte: into the row's bytes (x_bytes, served_bytes: the
    # same memory as x and served) or into `scratch`, read through its float views.
    features, outputs = x.shape[1], served.shape[1]
    x_bytes, served_bytes = x[row].view(np.uint8), served[row].view(np.uint8)
    as_f32, as_f64 = scratch.view(np.float32), scratch.view(np.float64)
    count, seen, scores = 0, 0, 0  # seen: which label of the oneof arrived (1 regression, 2 class)
    regression, klass, weight = 0.0, 0, 0.0
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if pos < 0 or tag < 8 or tag > 0xFFFFFFFF:  # protobuf refuses field 0, >32 bits, < 0
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
                for k in range(8):
                    scratch[k] = buf[pos + k]
                regression = as_f64[0]
                seen = 1
            pos += 8
        elif wire == 5:
            if pos + 4 > end:
                return MALFORMED
            for k in range(4):
                scratch[k] = buf[pos + k]
            value32 = as_f32[0]
            if field == WEIGHT:
                weight = value32
            elif field == DENSE:  # an unpacked repeated float
                if count < features:
                    x[row, count] = value32
                count += 1
            elif field == SERVED:
                if scores < outputs:
                    served[row, scores] = value32
                scores += 1
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            # A length past 2**63 wraps negative: refuse it, or the scan would step backwards.
            if pos < 0 or length < 0 or length > end - pos:
                return MALFORMED
            if field in (REGRESSION, CLASS_INDEX):
                return MALFORMED  # not a Sample (a SampleBatch has columns there)
            if field == FEATURES:  # one entry of the named-features map
                named[row] = 1
            if field == DENSE:
                if length % 4:
                    return MALFORMED
                count = _copy_packed(buf, pos, length, x_bytes, count, features)
            if field == SERVED:
                if length % 4:
                    return MALFORMED
                scores = _copy_packed(buf, pos, length, served_bytes, scores, outputs)
            pos += length
        else:
            return MALFORMED  # groups (wire types 3, 4) are not in this schema
    if scores != outputs:  # none, or not the model's outputs: nothing served to score
        served[row, :] = np.nan
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
    named = np.zeros(len(starts), np.uint8)
    served = np.full((len(starts), 1), np.nan, np.float32)
    decode_rows(buf, starts, ends, x, labels, weights, status, named, served)


@numba.njit(cache=True)
def decode_rows(
    buf: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    x: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    status: np.ndarray,
    named: np.ndarray,
    served: np.ndarray,
) -> None:
    """`decode_samples`, also setting named[i] to 1 when record i carries named `features`.

    Such a record is the featurizer's to read: its status says only how the positional
    reading went (WRONG_SHAPE when it has no `dense`, as a named sample should not).
    served[i] (one column per model output, NaN beforehand) gets record i's `served_score`
    when it has exactly that many values, and stays NaN otherwise.
    """
    scratch = np.empty(8, np.uint8)
    for i in range(len(starts)):
        status[i] = _decode_one(
            buf, starts[i], ends[i], x, labels, weights, named, served, i, scratch
        )


@numba.njit(cache=True)
def _string_field(buf: np.ndarray, pos: int, end: int, wanted: int) -> tuple[int, int]:
    """(start, stop) of length-delimited field `wanted` (the last one wins, as in protobuf).

    An absent field reads as empty (start == stop); (-1, -1) when the record is malformed.
    """
    start, stop = pos, pos
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if pos < 0 or tag < 8 or tag > 0xFFFFFFFF:  # field 0, >32 bits, negative
            return -1, -1
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
            if pos < 0:
                return -1, -1
        elif wire == 1 or wire == 5:
            pos += 8 if wire == 1 else 4
            if pos > end:
                return -1, -1
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos < 0 or length < 0 or length > end - pos:
                return -1, -1
            if field == wanted:
                start, stop = pos, pos + length
            pos += length
        else:
            return -1, -1
    return start, stop


@numba.njit(cache=True)
def match_streams(
    buf: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    fields: np.ndarray,
    wanted: np.ndarray,
    wanted_ends: np.ndarray,
    found: np.ndarray,
    spans: np.ndarray,
) -> None:
    """Which wanted stream record i (its stream in field `fields[i]`) belongs to.

    `wanted` holds the wanted streams' UTF-8 bytes back to back, stream k ending at
    `wanted_ends[k]`. found[i] is k, FOREIGN or UNREADABLE; spans[i] is the stream's
    (start, stop) in `buf`.
    """
    for i in range(len(starts)):
        start, stop = _string_field(buf, starts[i], ends[i], fields[i])
        spans[i, 0], spans[i, 1] = start, stop
        found[i] = UNREADABLE if start < 0 else FOREIGN
        if start < 0:
            continue
        begin = 0
        for k in range(len(wanted_ends)):
            if wanted_ends[k] - begin == stop - start:
                same = True
                for j in range(stop - start):
                    if buf[start + j] != wanted[begin + j]:
                        same = False
                        break
                if same:
                    found[i] = k
                    break
            begin = wanted_ends[k]

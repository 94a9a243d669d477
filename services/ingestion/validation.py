"""Checks of samples against their stream's definition: transport-free, one rule per check.

`check_sample` judges one `Sample`; `check_rows` judges every row of a columnar batch with
array operations. The first failing check names the reason, in the order of the list below.

A `Sample` carrying named `features` is checked against its stream's feature schema by the
shared featurizer (`shared.features`), built once per schema revision: a field the schema
does not name is `unknown_feature`, text for a numeric feature `wrong_type`, a NaN or
infinite number `non_finite`, a category over the size limit `oversized_category`. A missing
field is valid (the trainer imputes a missing number; a missing category is no feature).
Named features on a stream without a schema are `no_feature_schema`; named features beside
`dense` or `sparse` ones `mixed_features`. Positional samples keep their rules on every
stream. Valid samples are forwarded as they are: featurizing is the trainer's job.

A text stream (`text.max_bytes` > 0) learns from the UTF-8 `text` of its samples: a sample
needs non-empty text (`missing_text`) of at most `text.max_bytes` bytes (`oversized_text`).
Its features are optional (none at all is valid; any given follow the rules above) and so
is its label: a stream with a label kind requires one as every stream does, one without
refuses a label (`unexpected_label`: nothing would learn from it). A columnar batch has no
text column, so a text stream refuses batches (`text_needs_single_samples`). On any other
stream text travels with the sample as before, bounded only by the record size limit:
capping it there would newly refuse samples valid until now, for bytes no model reads.

Text that is not UTF-8 never reaches these checks: protobuf refuses to parse it. The router
calls such a record `undecodable`; `invalid_utf8` names the field for the detail.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from services.ingestion.reasons import Reason, Rejection
from shared.errors import InvalidArgument
from shared.features import FeatureSpace, Featurizer, sample_values
from shared.samples import Columns
from streamlearn.v1 import sample_pb2, stream_pb2

KIND = stream_pb2.LabelKind
SUPPORTED_SCHEMAS = (0, 1)  # 0: producers that leave it unset mean the first version


@dataclass(frozen=True)
class TimeLimits:
    """How far an event time may lie ahead of or behind the ingestion clock."""

    max_future_ms: int
    max_age_ms: int

    def check(self, event_ms: int, now_ms: int) -> Rejection | None:
        """A rejection when a set (non-zero) event time is out of bounds."""
        if event_ms and event_ms > now_ms + self.max_future_ms:
            return Rejection(
                Reason.FUTURE_TIMESTAMP, f"event time {event_ms} ms is ahead of now ({now_ms})"
            )
        if event_ms and event_ms < now_ms - self.max_age_ms:
            return Rejection(
                Reason.ANCIENT_TIMESTAMP, f"event time {event_ms} ms is older than the max age"
            )
        return None


def check_sample(
    sample: sample_pb2.Sample,
    definition: stream_pb2.StreamDefinition,
    limits: TimeLimits,
    now_ms: int,
) -> Rejection | None:
    """The first rule `sample` breaks, or None when it is a valid sample of `definition`."""
    for check in (_identity, _text, _shape, _finite, _label):
        rejection = check(sample, definition)
        if rejection:
            return rejection
    stamp = sample.event_time
    return limits.check(stamp.seconds * 1000 + stamp.nanos // 1_000_000, now_ms)


def check_envelope(
    schema_version: int, stream: str, definition: stream_pb2.StreamDefinition | None
) -> Rejection | None:
    """A supported schema version and a defined stream (`definition` as looked up, or None)."""
    if schema_version not in SUPPORTED_SCHEMAS:
        return Rejection(
            Reason.UNSUPPORTED_SCHEMA, f"schema version {schema_version} is not supported"
        )
    if definition is None:
        return Rejection(Reason.UNKNOWN_STREAM, f"no stream named {stream!r} is defined")
    return None


def _identity(sample: sample_pb2.Sample, _: stream_pb2.StreamDefinition) -> Rejection | None:
    if not sample.event_id:
        return Rejection(Reason.MISSING_EVENT_ID, "event_id is empty")
    return None


def is_text_stream(definition: stream_pb2.StreamDefinition) -> bool:
    """Whether `definition` is a text stream: its samples carry text to learn from."""
    return definition.text.max_bytes > 0


def _text(sample: sample_pb2.Sample, definition: stream_pb2.StreamDefinition) -> Rejection | None:
    if not is_text_stream(definition):
        return None  # text travels with the sample, bounded by the record limit alone
    if not sample.text:
        return Rejection(Reason.MISSING_TEXT, f"text stream {definition.name!r} needs text")
    size = len(sample.text.encode())  # parsed, so valid UTF-8: encoding cannot fail
    limit = definition.text.max_bytes
    if size > limit:
        detail = f"text of {size} UTF-8 bytes, stream {definition.name!r} allows {limit}"
        return Rejection(Reason.OVERSIZED_TEXT, detail)
    return None


def _featureless(sample: sample_pb2.Sample) -> bool:
    """No dense, sparse or named feature at all."""
    return not (sample.features or sample.dense or sample.sparse.indices or sample.sparse.values)


def _shape(sample: sample_pb2.Sample, definition: stream_pb2.StreamDefinition) -> Rejection | None:
    if is_text_stream(definition) and _featureless(sample):
        return None  # the text is the input; features, when given, are checked as always
    if sample.features:
        return _named(sample, definition)
    if len(sample.dense) != definition.dense_dim:
        return Rejection(
            Reason.WRONG_DIMENSION,
            f"{len(sample.dense)} dense features, stream has {definition.dense_dim}",
        )
    sparse = sample.sparse
    if len(sparse.indices) != len(sparse.values):
        return Rejection(Reason.WRONG_DIMENSION, "sparse indices and values differ in length")
    if sparse.indices and not all(0 <= i < definition.sparse_buckets for i in sparse.indices):
        return Rejection(
            Reason.WRONG_DIMENSION, f"sparse index outside [0, {definition.sparse_buckets})"
        )
    return None


def _named(sample: sample_pb2.Sample, definition: stream_pb2.StreamDefinition) -> Rejection | None:
    """The first problem of a sample's named features under its stream's schema, or None."""
    if sample.dense or sample.sparse.indices or sample.sparse.values:
        return Rejection(
            Reason.MIXED_FEATURES,
            "the sample has named features and dense or sparse ones: send one form",
        )
    featurizer = _featurizer(
        definition.features.SerializeToString(deterministic=True),
        definition.sparse_buckets,
        definition.revision,
    )
    if featurizer is None:
        return Rejection(
            Reason.NO_FEATURE_SCHEMA,
            f"named features on stream {definition.name!r}, which has no feature schema "
            "(send dense features, or define the stream with --numeric/--categorical)",
        )
    if isinstance(featurizer, str):
        detail = f"stream {definition.name!r} has an unusable feature schema: {featurizer}"
        return Rejection(Reason.NO_FEATURE_SCHEMA, detail)
    problem = featurizer.check(sample_values(sample))
    if problem is None:
        return None
    return Rejection(_PROBLEM_REASONS.get(problem.kind, Reason.WRONG_TYPE), str(problem))


_PROBLEM_REASONS = {
    "unknown_feature": Reason.UNKNOWN_FEATURE,
    "wrong_type": Reason.WRONG_TYPE,
    "non_finite": Reason.NON_FINITE,
    "oversized": Reason.OVERSIZED_CATEGORY,
}


@functools.lru_cache(maxsize=1024)
def _featurizer(schema: bytes, buckets: int, revision: int) -> Featurizer | str | None:
    """The featurizer of one schema revision, built once; None without a schema; or why not.

    Keyed by the serialized schema with the buckets and revision rather than by the stream
    name: a cache hit is then cheaper than building the space from the definition (the
    dominant cost otherwise), and two definitions that disagree never share a featurizer.
    `check` leaves the featurizer unchanged, so sharing one is safe.
    """
    definition = stream_pb2.StreamDefinition(
        sparse_buckets=buckets,
        revision=revision,
        features=stream_pb2.FeatureSchema.FromString(schema),
    )
    space = FeatureSpace.from_definition(definition)
    if space is None:
        return None
    try:
        return Featurizer(space)
    except InvalidArgument as exc:  # a definition that bypassed `check_definition`
        return str(exc)


def _finite(sample: sample_pb2.Sample, _: stream_pb2.StreamDefinition) -> Rejection | None:
    # A float64 sum of float32 values cannot overflow: it is non-finite iff an element is.
    for field, values in (("dense", sample.dense), ("sparse", sample.sparse.values)):
        if not math.isfinite(sum(values)):
            return Rejection(Reason.NON_FINITE, f"{field} features hold NaN or infinity")
    if not math.isfinite(sample.regression) or not math.isfinite(sample.weight):
        return Rejection(Reason.NON_FINITE, "label or weight is NaN or infinity")
    if sample.weight < 0:
        return Rejection(Reason.INVALID_WEIGHT, f"weight {sample.weight} is negative")
    return None


def _label(sample: sample_pb2.Sample, definition: stream_pb2.StreamDefinition) -> Rejection | None:
    which = sample.WhichOneof("label")
    unlabelled = definition.label_kind == KIND.LABEL_KIND_UNSPECIFIED
    if unlabelled and is_text_stream(definition):
        if which is None:
            return None
        detail = f"{which} label on text stream {definition.name!r}, which has no label kind"
        return Rejection(Reason.UNEXPECTED_LABEL, detail)
    if which is None:
        return Rejection(Reason.MISSING_LABEL, "the sample has no label")
    expected = _LABEL_FIELD.get(definition.label_kind)
    if which != expected:
        return Rejection(
            Reason.LABEL_KIND, f"{which} label on a {KIND.Name(definition.label_kind)} stream"
        )
    classes = _class_count(definition)
    if which == "class_index" and not 0 <= sample.class_index < classes:
        return Rejection(
            Reason.LABEL_OUT_OF_RANGE, f"class {sample.class_index} outside [0, {classes})"
        )
    if which == "multi_label" and not all(0 <= c < classes for c in sample.multi_label.classes):
        return Rejection(Reason.LABEL_OUT_OF_RANGE, f"a class outside [0, {classes})")
    return None


_LABEL_FIELD = {
    KIND.LABEL_KIND_REGRESSION: "regression",
    KIND.LABEL_KIND_BINARY: "class_index",
    KIND.LABEL_KIND_MULTICLASS: "class_index",
    KIND.LABEL_KIND_MULTILABEL: "multi_label",
}


def _class_count(definition: stream_pb2.StreamDefinition) -> int:
    return 2 if definition.label_kind == KIND.LABEL_KIND_BINARY else definition.num_classes


def check_rows(
    columns: Columns, definition: stream_pb2.StreamDefinition, limits: TimeLimits, now_ms: int
) -> dict[int, Rejection]:
    """The rejected rows of a batch that passed `check_batch`; rows not in the result are valid."""
    found: dict[int, Rejection] = {}
    masks = _row_masks(columns, definition, limits, now_ms)
    for reason, (mask, detail) in masks.items():
        for row in np.flatnonzero(mask).tolist():
            found.setdefault(row, Rejection(reason, detail))
    return found


def check_batch(columns: Columns, definition: stream_pb2.StreamDefinition) -> Rejection | None:
    """Rules a batch breaks as a whole: its stream's kind, its shape or its label column."""
    if is_text_stream(definition):
        return Rejection(
            Reason.TEXT_NEEDS_SAMPLES,
            f"stream {definition.name!r} is a text stream and a SampleBatch has no text: "
            "send single Samples",
        )
    dim = columns.dense.shape[1]
    if dim != definition.dense_dim:
        return Rejection(
            Reason.WRONG_DIMENSION, f"{dim} dense features, stream has {definition.dense_dim}"
        )
    if len(columns.labels) == 0 and len(columns):
        return Rejection(Reason.MISSING_LABEL, "the batch has no label column")
    expected = _LABEL_FIELD.get(definition.label_kind)
    given = "regression" if columns.labels.dtype.kind == "f" else "class_index"
    if given != expected:
        return Rejection(
            Reason.LABEL_KIND, f"{given} labels on a {KIND.Name(definition.label_kind)} stream"
        )
    return None


def _row_masks(
    columns: Columns, definition: stream_pb2.StreamDefinition, limits: TimeLimits, now_ms: int
) -> dict[Reason, tuple[np.ndarray, str]]:
    """Per reason, which rows break it (dict order is the order of precedence)."""
    ids = np.array([not e for e in columns.event_ids], dtype=bool)
    finite = np.isfinite(columns.dense).all(axis=1) & np.isfinite(columns.weights)
    if columns.labels.dtype.kind == "f":
        finite &= np.isfinite(columns.labels)
        out_of_range = np.zeros(len(columns), dtype=bool)
    else:
        out_of_range = (columns.labels < 0) | (columns.labels >= _class_count(definition))
    times = columns.event_time_ms
    return {
        Reason.MISSING_EVENT_ID: (ids, "event_id is empty"),
        Reason.NON_FINITE: (~finite, "features, label or weight hold NaN or infinity"),
        Reason.INVALID_WEIGHT: (columns.weights < 0, "weight is negative"),
        Reason.LABEL_OUT_OF_RANGE: (out_of_range, f"class outside [0, {_class_count(definition)})"),
        Reason.FUTURE_TIMESTAMP: (
            (times != 0) & (times > now_ms + limits.max_future_ms),
            "event time is ahead of now",
        ),
        Reason.ANCIENT_TIMESTAMP: (
            (times != 0) & (times < now_ms - limits.max_age_ms),
            "event time is older than the max age",
        ),
    }


_MAX_DEPTH = 8  # deeper than any of our messages nest: no input can make the walk recurse far


def invalid_utf8(descriptor: Descriptor, data: bytes, depth: int = 0) -> str | None:
    """The field of `data` (a serialized `descriptor` message) holding invalid UTF-8, or None.

    Protobuf refuses such a message with a bare "Error parsing message"; this names the
    field (nested ones by path, e.g. `attributes.value`) so a dead letter says what to fix.
    Only asked of data that failed to parse: None also when the data is broken otherwise.
    """
    pos, end = 0, len(data)
    while pos < end and depth < _MAX_DEPTH:
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if pos < 0 or wire not in _WIRE_SKIP:
            return None
        if wire == 0:
            pos = _varint(data, pos)[1]
            if pos < 0:
                return None
            continue
        if wire != 2:
            pos += _WIRE_SKIP[wire]
            continue
        length, pos = _varint(data, pos)
        if pos < 0 or length > end - pos:
            return None
        found = _invalid_in(
            descriptor.fields_by_number.get(number), data[pos : pos + length], depth
        )
        if found:
            return found
        pos += length
    return None


_WIRE_SKIP = {0: 0, 1: 8, 2: 0, 5: 4}  # bytes after the tag, besides varints and lengths


def _invalid_in(field: FieldDescriptor | None, value: bytes, depth: int) -> str | None:
    """The invalid field within one length-delimited `value` of `field`, or None."""
    if field is None:
        return None
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            value.decode()
        except UnicodeDecodeError as exc:
            where = f"{exc.reason} at byte {exc.start}"
            return f"{field.name} (field {field.number}) is not valid UTF-8 ({where})"
        return None
    if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
        inner = invalid_utf8(field.message_type, value, depth + 1)
        return f"{field.name}.{inner}" if inner else None
    return None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the varint at `pos`; position -1 when it is cut or too long."""
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            return 0, -1
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
    return 0, -1

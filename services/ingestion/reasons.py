"""Why a record went to the dead-letter topic: stable codes for dashboards and redrive."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reason(enum.StrEnum):
    """The reason code written in the `streamlearn-reason` header of a dead letter."""

    EMPTY = "empty"  # no value (a tombstone), empty bytes or a batch of zero rows
    OVERSIZED = "oversized"
    UNDECODABLE = "undecodable"
    UNSUPPORTED_SCHEMA = "unsupported_schema"
    MISSING_EVENT_ID = "missing_event_id"
    UNKNOWN_STREAM = "unknown_stream"
    WRONG_DIMENSION = "wrong_dimension"
    NON_FINITE = "non_finite"
    # Text streams (`text.max_bytes` > 0): each sample carries UTF-8 text.
    MISSING_TEXT = "missing_text"  # a text stream's sample with empty text
    OVERSIZED_TEXT = "oversized_text"  # more UTF-8 bytes than the stream's `text.max_bytes`
    TEXT_NEEDS_SAMPLES = "text_needs_single_samples"  # a columnar batch: it has no text column
    # Named features (streams with a feature schema); the detail names the field.
    UNKNOWN_FEATURE = "unknown_feature"  # a field the stream's schema does not name
    WRONG_TYPE = "wrong_type"  # text for a numeric feature, or neither number nor text
    OVERSIZED_CATEGORY = "oversized_category"  # a category over MAX_CATEGORY_BYTES
    NO_FEATURE_SCHEMA = "no_feature_schema"  # named features on a stream without a schema
    MIXED_FEATURES = "mixed_features"  # named features beside dense or sparse ones
    MISSING_LABEL = "missing_label"
    UNEXPECTED_LABEL = "unexpected_label"  # a label on a text stream without a label kind
    LABEL_KIND = "label_kind_mismatch"
    LABEL_OUT_OF_RANGE = "label_out_of_range"
    INVALID_WEIGHT = "invalid_weight"
    FUTURE_TIMESTAMP = "future_timestamp"
    ANCIENT_TIMESTAMP = "ancient_timestamp"
    DUPLICATE = "duplicate"
    INTERNAL_ERROR = "internal_error"  # routing the record raised: a bug, the detail says what


@dataclass(frozen=True)
class Rejection:
    """A reason and a human-readable detail of what exactly was wrong."""

    reason: Reason
    detail: str

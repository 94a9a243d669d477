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
    MISSING_LABEL = "missing_label"
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

"""The joiner's counters: plain numbers, kept in its state so a restore continues them."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, fields
from typing import Any

from shared.errors import InvalidArgument

# Upper bounds (seconds) of the label-delay histogram; the last bucket is everything above.
DELAY_BUCKETS_S = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0)


@dataclass
class JoinMetrics:
    """Counts of every outcome, and a histogram of label delays of joined samples."""

    joined: int = 0
    negatives: int = 0
    expired: int = 0
    late: int = 0
    unknown: int = 0
    duplicates: int = 0
    # Predictions expired and feedback made unknown to bound memory (also in their counts).
    overflow: int = 0
    # Closed ids forgotten before their retention ended (max_closed).
    forgotten: int = 0
    # Non-cumulative counts per bucket of DELAY_BUCKETS_S, plus one above the last bound.
    delay_buckets: list[int] = field(default_factory=lambda: [0] * (len(DELAY_BUCKETS_S) + 1))
    delay_sum_ms: int = 0

    def observe_delay(self, delay_ms: int) -> None:
        """Count one joined sample's label delay."""
        self.delay_buckets[bisect.bisect_left(DELAY_BUCKETS_S, delay_ms / 1000)] += 1
        self.delay_sum_ms += delay_ms

    def to_dict(self) -> dict[str, Any]:
        """Plain values."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), list) else v
            for f in fields(self)
        }

    @classmethod
    def from_dict(cls, plain: Any) -> JoinMetrics:
        """The inverse of `to_dict`.

        Raises:
            InvalidArgument: `plain` is not such a dict.

        """
        names = {f.name for f in fields(cls)}
        if not isinstance(plain, dict) or set(plain) != names:
            raise InvalidArgument(f"joiner metrics must have exactly the keys {sorted(names)}")
        buckets = plain["delay_buckets"]
        counts = [v for k, v in plain.items() if k != "delay_buckets"]
        if (
            not isinstance(buckets, list)
            or len(buckets) != len(DELAY_BUCKETS_S) + 1
            or any(not isinstance(v, int) or v < 0 for v in [*buckets, *counts])
        ):
            raise InvalidArgument("joiner metrics hold something else than counts")
        return cls(**{**plain, "delay_buckets": list(buckets)})

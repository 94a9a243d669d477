"""How long a stream's predictions wait for their feedback, and what silence means."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from shared.errors import ConfigError
from shared.feedback import Label


@dataclass(frozen=True)
class StreamPolicy:
    """The join policy of one stream.

    A prediction's window opens at its timestamp (event time) and closes `window_s` later,
    or `negative_after_s` later when that is set: silence until then is a negative, labelled
    `negative_label` (a click model: no click within 30 minutes). Feedback whose event time
    lies after the close is late, since a negative may already have been learned. Without
    `negative_after_s` a prediction without feedback expires. Feedback that comes before its
    prediction waits `window_s` (from its event time) for it, then is unknown.

    Attributes:
        window_s: How long a label may take, and how long early feedback waits.
        negative_after_s: Silence after which a prediction is a negative (<= window_s);
            None: it expires instead.
        negative_label: The label of a negative.
        retention_s: How long the ids of closed predictions are remembered after their
            close, so later feedback is told late (or duplicate) rather than unknown.
        max_pending: Open predictions kept (and, separately, early feedback); beyond it the
            oldest is expired (or, for feedback, made unknown), counted as overflow.
        max_closed: Closed ids remembered; beyond it the oldest are forgotten early.

    """

    window_s: float = 3600.0
    negative_after_s: float | None = None
    negative_label: Label = field(default_factory=lambda: Label.class_index(0))
    retention_s: float = 86400.0
    max_pending: int = 100_000
    max_closed: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("window_s", "retention_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value}")
        after = self.negative_after_s
        if after is not None and not (math.isfinite(after) and 0 < after <= self.window_s):
            raise ConfigError(
                f"negative_after_s must be in (0, window_s={self.window_s}], got {after}: "
                "a negative cannot be decided after the window closes"
            )
        if self.max_pending < 1 or self.max_closed < 1:
            raise ConfigError("max_pending and max_closed must be at least 1")

    @property
    def window_ms(self) -> int:
        """`window_s` in milliseconds."""
        return round(self.window_s * 1000)

    @property
    def close_after_ms(self) -> int:
        """How long after its timestamp a prediction closes."""
        after = self.window_s if self.negative_after_s is None else self.negative_after_s
        return round(after * 1000)

    @property
    def retention_ms(self) -> int:
        """`retention_s` in milliseconds."""
        return round(self.retention_s * 1000)

"""What one source partition has already routed: the de-duplication memory of ingestion.

Two questions are asked of it for every input row:
- was this very input (raw offset, row) routed by an earlier run? Then it is a redelivery
  after a crash or rebalance and is skipped silently: its outputs exist already.
- was another input with the same event id accepted within the window? Then it is a
  duplicate sent by a producer and goes to the dead-letter topic.
The memory is rebuilt from the output topics themselves when a partition is assigned (see
`recovery`), so it can never disagree with what was actually written.
"""

from __future__ import annotations

from collections import deque


class PartitionMemory:
    """Accepted event ids within a time window, plus positions routed by an earlier run."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._accepted: dict[str, int] = {}  # event id -> raw offset that carried it
        self._expiry: deque[tuple[float, str]] = deque()
        self._routed_before: set[tuple[int, int]] = set()

    def __len__(self) -> int:
        return len(self._accepted)

    def routed_before(self, offset: int, row: int) -> bool:
        """Whether an earlier run already routed this input row (asked once per redelivery)."""
        try:
            self._routed_before.remove((offset, row))
        except KeyError:
            return False
        return True

    def mark_routed_before(self, offset: int, row: int) -> None:
        """Record an input row found in the outputs (recovery)."""
        self._routed_before.add((offset, row))

    def accepted_at(self, event_id: str) -> int | None:
        """The raw offset of the accepted input with this event id, if within the window."""
        return self._accepted.get(event_id)

    def accept(self, event_id: str, offset: int, at_s: float) -> None:
        """Remember an accepted event id (the first one wins)."""
        if event_id not in self._accepted:
            self._accepted[event_id] = offset
            self._expiry.append((at_s, event_id))

    def forget_before(self, now_s: float) -> int:
        """Drop event ids accepted longer than the window ago; returns how many."""
        horizon, dropped = now_s - self._window_s, 0
        while self._expiry and self._expiry[0][0] < horizon:
            _, event_id = self._expiry.popleft()
            del self._accepted[event_id]
            dropped += 1
        return dropped

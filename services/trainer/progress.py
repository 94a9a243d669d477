"""What a trainer has applied: per-partition offsets, and when to checkpoint or publish next."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import Message

from services.trainer.batching import partition_key


@dataclass
class Positions:
    """First and next offsets of the events applied, per `topic:partition`."""

    next: dict[str, int] = field(default_factory=dict)
    first: dict[str, int] = field(default_factory=dict)

    def advance(self, applied: Sequence[Message]) -> None:
        """Record that these records of one partition (in offset order) were applied.

        `Batcher` cuts segments per partition: only the first and the last record move the
        positions, so a segment costs the same whatever its length.
        """
        if not applied:
            return
        head, tail = applied[0], applied[-1]
        key = partition_key(head)
        if key != partition_key(tail):
            raise ValueError(f"a segment spans partitions: {key} and {partition_key(tail)}")
        self.first.setdefault(key, int(head.offset() or 0))
        self.next[key] = int(tail.offset() or 0) + 1

    def pass_over(self, read_to: dict[str, int]) -> int:
        """Move positions past records read and not to be learned; returns how many.

        `read_to` maps `topic:partition` to the offset after the last record read, for
        partitions with nothing held back (so nothing before that offset is still owed).
        """
        passed = 0
        for key, offset in read_to.items():
            now = self.next.get(key)
            if now is None or offset > now:
                passed += offset - (now if now is not None else offset - 1)
                self.next[key] = offset
        return passed

    def resume_at(self, topic: str, partition: int) -> int | None:
        """Where to continue reading a partition (None: never read, start at the beginning)."""
        return self.next.get(f"{topic}:{partition}")

    def as_dict(self) -> dict[str, dict[str, int]]:
        """Plain data for checkpoints."""
        return {"next": dict(self.next), "first": dict(self.first)}

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, int]]) -> Positions:
        """Back from `as_dict()`."""
        return cls(dict(data["next"]), dict(data["first"]))


@dataclass
class Every:
    """Due every `events` events or `seconds` seconds, whichever comes first."""

    events: int
    seconds: float
    _since_events: int = 0
    _since: float = field(default_factory=time.monotonic)

    def count(self, n: int) -> None:
        """`n` more events happened."""
        self._since_events += n

    def due(self) -> bool:
        """True when enough events or time passed (and at least one event)."""
        return self._since_events > 0 and (
            self._since_events >= self.events or time.monotonic() - self._since >= self.seconds
        )

    def reset(self) -> None:
        """Start counting again."""
        self._since_events, self._since = 0, time.monotonic()

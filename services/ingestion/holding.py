"""Raw partitions the worker cannot route yet, held without holding up the others (transport-free).

A raw partition is prepared on its first record after each assignment: its outputs must have
the partition, the producer must know it, and its de-duplication memory is recovered. When
that fails (a Kafka time-out, outputs lacking the partition), the worker pauses that partition
only and keeps the records of it already fetched, in order, neither routed nor acked
(`Holds.keep`); `Holds.due` says when to try again (backoff, `first_s` doubling up to `max_s`).
Once prepared, the kept records are routed first and the partition is resumed, so its order
holds. A partition revoked meanwhile is forgotten: its records were never acked, so its next
owner routes them from the committed offset.

Waiting for a preparation never blocks a rebalance or a stop: `unless` gives up waiting as
soon as the partition is no longer wanted (revoked, rebalancing, stopping).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
Event = TypeVar("Event")


async def unless(work: Awaitable[T], wanted: Callable[[], bool], poll_s: float = 0.1) -> T | None:
    """The result of `work`, or None (and `work` cancelled) once `wanted()` turns false.

    Raises:
        Exception: whatever `work` raised.

    """
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            if not wanted():
                task.cancel()
                return None
            await asyncio.wait([task], timeout=poll_s)
        return task.result()
    finally:
        if not task.done():
            task.cancel()


@dataclass
class _Held(Generic[Event]):
    events: list[Event] = field(default_factory=list)
    delay_s: float = 0.0
    retry_at: float = 0.0
    attempts: int = 0


class Holds(Generic[Event]):
    """The held partitions: their kept events and when to try each again."""

    def __init__(
        self, first_s: float, max_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Retry after `first_s`, doubling up to `max_s`, measured by `clock`."""
        self._first_s = first_s
        self._max_s = max_s
        self._clock = clock
        self._held: dict[int, _Held[Event]] = {}

    def __contains__(self, partition: object) -> bool:
        return partition in self._held

    def failed(self, partition: int) -> float:
        """A preparation of `partition` failed: hold it; returns the seconds until the next try."""
        held = self._held.setdefault(partition, _Held())
        held.delay_s = self._first_s if not held.attempts else min(held.delay_s * 2, self._max_s)
        held.attempts += 1
        held.retry_at = self._clock() + held.delay_s
        return held.delay_s

    def keep(self, partition: int, event: Event) -> None:
        """Keep an event of a held partition, after those kept before it."""
        self._held[partition].events.append(event)

    def due(self) -> list[int]:
        """The held partitions whose next try is due."""
        now = self._clock()
        return [p for p, held in self._held.items() if held.retry_at <= now]

    def take(self, partition: int) -> list[Event]:
        """The events kept so far (in order), still holding `partition`."""
        held = self._held.get(partition)
        if held is None:
            return []
        events, held.events = held.events, []
        return events

    def release(self, partition: int) -> list[Event]:
        """Stop holding `partition`; returns its kept events, in order, to route now."""
        held = self._held.pop(partition, None)
        return held.events if held else []

    def forget(self, partition: int) -> list[Event]:
        """`partition` was revoked: drop it (its kept events are redelivered to its owner)."""
        return self.release(partition)

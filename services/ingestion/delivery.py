"""When a raw record may be acked: only after every one of its outputs was acknowledged.

Transport-free: the worker hands the delivery futures of each input's sends and a way to ack
the input. Inputs are acked in order and nothing after the first failed delivery is acked,
so the committed raw offset never passes an input whose outputs are not all written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

Event = TypeVar("Event")


async def settle(
    pending: Sequence[tuple[Event, Sequence[Awaitable[Any]]]],
    ack: Callable[[Event], Awaitable[Any]],
) -> BaseException | None:
    """Ack each input, in order, once all its deliveries succeeded.

    Returns:
        The error of the first failed delivery (its input and all later ones are not acked),
        or None when every input was acked.

    """
    for event, deliveries in pending:
        for delivery in deliveries:
            try:
                await delivery
            except Exception as exc:  # any failure means "not written"
                return exc
        await ack(event)
    return None

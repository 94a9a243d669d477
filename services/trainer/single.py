"""One live trainer per model: a second instance refuses to join the model's consumer group.

A second trainer of one model (a second replica, or a second `python -m services.trainer`)
would take partitions without the checkpoint (weights, optimizer state and offsets live in
the first one's) and both would publish versions of the model. So a trainer, before it
subscribes, describes its group (`streamlearn-trainer-<model>`) and refuses to start when
a member other than itself is in it. "Itself" is its static membership id
(`group.instance.id` = TRAINER_TRAINER_ID): a restart of the same instance, whose previous
member the broker still lists until its session times out, is accepted (and replaces it).

Two instances starting at once may both find the group empty. So each checks again at its
first assignment, once it is a member itself and before it positions or reads a partition:
one that finds another member there stops as after a fatal consumer error, without writing
its checkpoint (`loop.py`). A trainer alone at its first assignment is never stopped by a
later one (the later one finds it, at start-up or at its own first assignment). What remains:
two that join in the same rebalance both stop, and their restarts (supervisor back-off)
settle which runs; a refused static member stays listed in the group until its session times
out (10 s), holding the partitions it was given, so the survivor resumes those from its
checkpoint that much later. Two instances with the same TRAINER_TRAINER_ID are not told apart
here: the broker fences the older one (`loop.py`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from shared.errors import Conflict, Unavailable

DESCRIBE_TIMEOUT_S = 60.0  # in all: a broker that just started loads its group metadata first
REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Member:
    """A member of a consumer group, as the broker describes it."""

    instance_id: str | None  # group.instance.id: the trainer id of a static member
    client_id: str
    host: str

    def __str__(self) -> str:
        return f"{self.instance_id or '(dynamic member)'} ({self.client_id} at {self.host})"


def others(members: Iterable[Member], trainer_id: str) -> list[Member]:
    """The members that are not this trainer (another static id, or none)."""
    return [m for m in members if m.instance_id != trainer_id]


def refuse_if_shared(members: Iterable[Member], group: str, model: str, trainer_id: str) -> None:
    """Raise Conflict when anyone but `trainer_id` is a member of the model's group.

    Args:
        members: The group's members.
        group: The consumer group (for the message).
        model: The model (for the message).
        trainer_id: This trainer's id, its static membership id.

    Raises:
        Conflict: Another trainer is live in the group.

    """
    foreign = others(members, trainer_id)
    if foreign:
        listed = ", ".join(str(m) for m in foreign)
        raise Conflict(
            f"model {model!r} already has a live trainer in consumer group {group!r}: "
            f"{listed}; this trainer ({trainer_id}) refuses to run as a second instance "
            "(one trainer per model: stop the other, or give this one its TRAINER_TRAINER_ID)"
        )


def group_members(
    admin: Any, group: str, timeout: float = DESCRIBE_TIMEOUT_S, pause: float = 0.5
) -> list[Member]:
    """The members of `group`, described by an AdminClient (none for an unknown group).

    A coordinator still loading or moving (a broker just started) is waited for, up to
    `timeout` seconds in all.

    Raises:
        Unavailable: The broker did not answer, or the coordinator stayed unavailable.

    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            wait = max(0.1, min(REQUEST_TIMEOUT_S, deadline - time.monotonic()))
            future = admin.describe_consumer_groups([group], request_timeout=wait)[group]
            description = future.result(timeout=wait + 5)
            break
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code == KafkaError.GROUP_ID_NOT_FOUND:
                return []
            retry = code in _COORDINATOR_MOVING or (
                isinstance(error, KafkaError) and error.retriable()
            )
            if not retry or time.monotonic() + pause > deadline:
                raise Unavailable(f"cannot describe consumer group {group!r}: {exc}") from exc
            time.sleep(pause)
        except TimeoutError as exc:
            raise Unavailable(f"cannot describe consumer group {group!r}: timed out") from exc
    return [Member(m.group_instance_id or None, m.client_id, m.host) for m in description.members]


_COORDINATOR_MOVING = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._TIMED_OUT,
    }
)

"""The registry's domain objects: plain, immutable, free of protobuf and SQL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

PRODUCTION = "production"
CANDIDATE = "candidate"


@dataclass(frozen=True)
class OffsetRange:
    """Offsets [first_offset, next_offset) of one topic partition a version learned from."""

    topic: str
    partition: int
    first_offset: int
    next_offset: int


@dataclass(frozen=True)
class Lineage:
    """Where a version came from: the trainer's stream, offsets, metrics and config."""

    stream: str = ""
    offsets: tuple[OffsetRange, ...] = ()
    events_seen: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    config_hash: str = ""
    config_json: str = ""
    parent_version: int = 0
    trainer_id: str = ""
    # The stream definition the version was trained on (feature schema, buckets, revision),
    # as protobuf JSON: inference featurizes named inputs with exactly this. "" when unset.
    stream_definition_json: str = ""
    teacher: str = ""  # the version a distilled model learned from ("model:vN"), or ""


@dataclass(frozen=True)
class ModelInfo:
    """A registered model and where its aliases point."""

    name: str
    description: str
    created_at: float
    latest_version: int
    aliases: Mapping[str, int]


@dataclass(frozen=True)
class Version:
    """One immutable version of a model; its artifact is addressed by sha256."""

    model: str
    version: int
    sha256: str
    size_bytes: int
    format: str
    lineage: Lineage
    tags: Mapping[str, str]
    created_at: float
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class VersionRef:
    """A version by number, else by alias, else the newest."""

    model: str
    version: int = 0
    alias: str = ""


@dataclass(frozen=True)
class Audit:
    """Who moved which alias from where to where, when and why."""

    id: int
    model: str
    action: str
    alias: str
    from_version: int
    to_version: int
    actor: str
    reason: str
    time: float


@dataclass(frozen=True)
class Event:
    """A registry change, numbered by a sequence that only grows."""

    sequence: int
    type: str
    model: str
    version: int = 0
    alias: str = ""
    previous_version: int = 0
    actor: str = ""
    reason: str = ""
    time: float = 0.0
    sha256: str = ""


@dataclass(frozen=True)
class VersionFilter:
    """Which versions a listing returns."""

    tags: Mapping[str, str] = field(default_factory=dict)
    metric: str = ""
    min_metric: float = 0.0
    lower_is_better: bool = False

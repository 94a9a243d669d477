"""Protobuf <-> domain conversion, at the edge of the registry."""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from services.registry.model import (
    Audit,
    Event,
    Lineage,
    ModelInfo,
    OffsetRange,
    Version,
    VersionFilter,
    VersionRef,
)
from streamlearn.v1 import events_pb2, registry_pb2, stream_pb2


def timestamp(seconds: float) -> Timestamp:
    """A protobuf Timestamp from epoch seconds."""
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def lineage_from_pb(pb: registry_pb2.Lineage) -> Lineage:
    """Domain lineage from its message."""
    offsets = tuple(
        OffsetRange(o.topic, o.partition, o.first_offset, o.next_offset) for o in pb.offsets
    )
    return Lineage(
        pb.stream,
        offsets,
        pb.events_seen,
        dict(pb.metrics),
        pb.config_hash,
        pb.config_json,
        pb.parent_version,
        pb.trainer_id,
        _definition_json(pb),
        pb.teacher,
    )


def _definition_json(pb: registry_pb2.Lineage) -> str:
    if not pb.HasField("stream_definition"):
        return ""
    return json_format.MessageToJson(pb.stream_definition, indent=None, sort_keys=True)


def lineage_to_pb(lineage: Lineage) -> registry_pb2.Lineage:
    """The message of a domain lineage."""
    return registry_pb2.Lineage(
        stream=lineage.stream,
        offsets=[
            registry_pb2.OffsetRange(
                topic=o.topic,
                partition=o.partition,
                first_offset=o.first_offset,
                next_offset=o.next_offset,
            )
            for o in lineage.offsets
        ],
        events_seen=lineage.events_seen,
        metrics=dict(lineage.metrics),
        config_hash=lineage.config_hash,
        config_json=lineage.config_json,
        parent_version=lineage.parent_version,
        trainer_id=lineage.trainer_id,
        stream_definition=_definition(lineage.stream_definition_json),
        teacher=lineage.teacher,
    )


def _definition(text: str) -> stream_pb2.StreamDefinition | None:
    if not text:
        return None
    return json_format.Parse(text, stream_pb2.StreamDefinition(), ignore_unknown_fields=True)


def model_to_pb(model: ModelInfo) -> registry_pb2.Model:
    """The message of a model."""
    return registry_pb2.Model(
        name=model.name,
        description=model.description,
        created_at=timestamp(model.created_at),
        latest_version=model.latest_version,
        aliases=dict(model.aliases),
    )


def version_to_pb(v: Version) -> registry_pb2.ModelVersion:
    """The message of a version."""
    return registry_pb2.ModelVersion(
        model=v.model,
        version=v.version,
        artifact=registry_pb2.Artifact(sha256=v.sha256, size_bytes=v.size_bytes, format=v.format),
        lineage=lineage_to_pb(v.lineage),
        tags=dict(v.tags),
        created_at=timestamp(v.created_at),
        aliases=list(v.aliases),
    )


def ref_from_pb(pb: registry_pb2.VersionRef) -> VersionRef:
    """A domain reference from its message."""
    return VersionRef(pb.model, pb.version, pb.alias)


def filter_from_pb(pb: registry_pb2.ListVersionsRequest) -> VersionFilter:
    """The filter part of a listing request."""
    return VersionFilter(dict(pb.tags), pb.metric, pb.min_metric, pb.lower_is_better)


def audit_to_pb(a: Audit) -> registry_pb2.AuditRecord:
    """The message of an audit record."""
    return registry_pb2.AuditRecord(
        id=a.id,
        model=a.model,
        action=a.action,
        alias=a.alias,
        from_version=a.from_version,
        to_version=a.to_version,
        actor=a.actor,
        reason=a.reason,
        time=timestamp(a.time),
    )


def event_to_pb(e: Event) -> events_pb2.ModelEvent:
    """The message of an event (also the Kafka payload)."""
    return events_pb2.ModelEvent(
        schema_version=1,
        sequence=e.sequence,
        type=f"MODEL_EVENT_TYPE_{e.type}",
        model=e.model,
        version=e.version,
        alias=e.alias,
        previous_version=e.previous_version,
        actor=e.actor,
        reason=e.reason,
        time=timestamp(e.time),
        artifact_sha256=e.sha256,
    )

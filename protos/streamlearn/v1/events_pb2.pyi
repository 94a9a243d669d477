import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_EVENT_TYPE_UNSPECIFIED: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_MODEL_CREATED: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_VERSION_REGISTERED: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_ALIAS_SET: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_ALIAS_DELETED: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_PROMOTED: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_ROLLED_BACK: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_VERSION_DELETED: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_TAGS_CHANGED: _ClassVar[ModelEventType]
MODEL_EVENT_TYPE_UNSPECIFIED: ModelEventType
MODEL_EVENT_TYPE_MODEL_CREATED: ModelEventType
MODEL_EVENT_TYPE_VERSION_REGISTERED: ModelEventType
MODEL_EVENT_TYPE_ALIAS_SET: ModelEventType
MODEL_EVENT_TYPE_ALIAS_DELETED: ModelEventType
MODEL_EVENT_TYPE_PROMOTED: ModelEventType
MODEL_EVENT_TYPE_ROLLED_BACK: ModelEventType
MODEL_EVENT_TYPE_VERSION_DELETED: ModelEventType
MODEL_EVENT_TYPE_TAGS_CHANGED: ModelEventType

class ModelEvent(_message.Message):
    __slots__ = ("schema_version", "sequence", "type", "model", "version", "alias", "previous_version", "actor", "reason", "time", "artifact_sha256")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    sequence: int
    type: ModelEventType
    model: str
    version: int
    alias: str
    previous_version: int
    actor: str
    reason: str
    time: _timestamp_pb2.Timestamp
    artifact_sha256: str
    def __init__(self, schema_version: _Optional[int] = ..., sequence: _Optional[int] = ..., type: _Optional[_Union[ModelEventType, str]] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., alias: _Optional[str] = ..., previous_version: _Optional[int] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., artifact_sha256: _Optional[str] = ...) -> None: ...

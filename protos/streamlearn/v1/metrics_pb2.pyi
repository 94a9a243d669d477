import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainerMetrics(_message.Message):
    __slots__ = ("schema_version", "trainer_id", "model", "stream", "events_applied", "events_skipped", "metrics", "model_version", "time")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    EVENTS_APPLIED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    trainer_id: str
    model: str
    stream: str
    events_applied: int
    events_skipped: int
    metrics: _containers.ScalarMap[str, float]
    model_version: int
    time: _timestamp_pb2.Timestamp
    def __init__(self, schema_version: _Optional[int] = ..., trainer_id: _Optional[str] = ..., model: _Optional[str] = ..., stream: _Optional[str] = ..., events_applied: _Optional[int] = ..., events_skipped: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., model_version: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

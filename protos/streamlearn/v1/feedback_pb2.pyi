import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from streamlearn.v1 import sample_pb2 as _sample_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Feedback(_message.Message):
    __slots__ = ("schema_version", "event_id", "stream", "regression", "class_index", "multi_label", "event_time", "weight")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    MULTI_LABEL_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    event_id: str
    stream: str
    regression: float
    class_index: int
    multi_label: _sample_pb2.MultiLabel
    event_time: _timestamp_pb2.Timestamp
    weight: float
    def __init__(self, schema_version: _Optional[int] = ..., event_id: _Optional[str] = ..., stream: _Optional[str] = ..., regression: _Optional[float] = ..., class_index: _Optional[int] = ..., multi_label: _Optional[_Union[_sample_pb2.MultiLabel, _Mapping]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., weight: _Optional[float] = ...) -> None: ...

class PredictionOutput(_message.Message):
    __slots__ = ("name", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class PredictionRecord(_message.Message):
    __slots__ = ("schema_version", "event_id", "stream", "model", "version", "dense", "sparse_ids", "outputs", "timestamp")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DENSE_FIELD_NUMBER: _ClassVar[int]
    SPARSE_IDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    event_id: str
    stream: str
    model: str
    version: int
    dense: _containers.RepeatedScalarFieldContainer[float]
    sparse_ids: _containers.RepeatedScalarFieldContainer[int]
    outputs: _containers.RepeatedCompositeFieldContainer[PredictionOutput]
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, schema_version: _Optional[int] = ..., event_id: _Optional[str] = ..., stream: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., dense: _Optional[_Iterable[float]] = ..., sparse_ids: _Optional[_Iterable[int]] = ..., outputs: _Optional[_Iterable[_Union[PredictionOutput, _Mapping]]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

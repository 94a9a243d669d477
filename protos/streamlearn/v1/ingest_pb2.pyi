from streamlearn.v1 import feedback_pb2 as _feedback_pb2
from streamlearn.v1 import sample_pb2 as _sample_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestRequest(_message.Message):
    __slots__ = ("samples", "batch", "feedback")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[_sample_pb2.Sample]
    batch: _sample_pb2.SampleBatch
    feedback: _containers.RepeatedCompositeFieldContainer[_feedback_pb2.Feedback]
    def __init__(self, samples: _Optional[_Iterable[_Union[_sample_pb2.Sample, _Mapping]]] = ..., batch: _Optional[_Union[_sample_pb2.SampleBatch, _Mapping]] = ..., feedback: _Optional[_Iterable[_Union[_feedback_pb2.Feedback, _Mapping]]] = ...) -> None: ...

class RecordPosition(_message.Message):
    __slots__ = ("topic", "partition", "offset")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    offset: int
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("accepted", "records", "last_positions", "feedback")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    LAST_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    records: int
    last_positions: _containers.RepeatedCompositeFieldContainer[RecordPosition]
    feedback: int
    def __init__(self, accepted: _Optional[int] = ..., records: _Optional[int] = ..., last_positions: _Optional[_Iterable[_Union[RecordPosition, _Mapping]]] = ..., feedback: _Optional[int] = ...) -> None: ...

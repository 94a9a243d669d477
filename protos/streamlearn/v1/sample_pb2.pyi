import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SchemaVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCHEMA_VERSION_UNSPECIFIED: _ClassVar[SchemaVersion]
    SCHEMA_VERSION_1: _ClassVar[SchemaVersion]
SCHEMA_VERSION_UNSPECIFIED: SchemaVersion
SCHEMA_VERSION_1: SchemaVersion

class SparseFeatures(_message.Message):
    __slots__ = ("indices", "values")
    INDICES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    indices: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, indices: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class MultiLabel(_message.Message):
    __slots__ = ("classes",)
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    classes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, classes: _Optional[_Iterable[int]] = ...) -> None: ...

class FeatureValue(_message.Message):
    __slots__ = ("number", "category", "integer", "flag")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    number: float
    category: str
    integer: int
    flag: bool
    def __init__(self, number: _Optional[float] = ..., category: _Optional[str] = ..., integer: _Optional[int] = ..., flag: _Optional[bool] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("schema_version", "event_id", "key", "event_time", "stream", "dense", "sparse", "regression", "class_index", "multi_label", "weight", "text", "attributes", "features", "served_score")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FeatureValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FeatureValue, _Mapping]] = ...) -> None: ...
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DENSE_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    MULTI_LABEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SERVED_SCORE_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    event_id: str
    key: str
    event_time: _timestamp_pb2.Timestamp
    stream: str
    dense: _containers.RepeatedScalarFieldContainer[float]
    sparse: SparseFeatures
    regression: float
    class_index: int
    multi_label: MultiLabel
    weight: float
    text: str
    attributes: _containers.ScalarMap[str, str]
    features: _containers.MessageMap[str, FeatureValue]
    served_score: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, schema_version: _Optional[int] = ..., event_id: _Optional[str] = ..., key: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stream: _Optional[str] = ..., dense: _Optional[_Iterable[float]] = ..., sparse: _Optional[_Union[SparseFeatures, _Mapping]] = ..., regression: _Optional[float] = ..., class_index: _Optional[int] = ..., multi_label: _Optional[_Union[MultiLabel, _Mapping]] = ..., weight: _Optional[float] = ..., text: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., features: _Optional[_Mapping[str, FeatureValue]] = ..., served_score: _Optional[_Iterable[float]] = ...) -> None: ...

class SampleBatch(_message.Message):
    __slots__ = ("schema_version", "stream", "dense_dim", "event_ids", "keys", "event_time_unix_ms", "dense", "regression", "class_index", "weights")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DENSE_DIM_FIELD_NUMBER: _ClassVar[int]
    EVENT_IDS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DENSE_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    stream: str
    dense_dim: int
    event_ids: _containers.RepeatedScalarFieldContainer[str]
    keys: _containers.RepeatedScalarFieldContainer[str]
    event_time_unix_ms: _containers.RepeatedScalarFieldContainer[int]
    dense: bytes
    regression: bytes
    class_index: bytes
    weights: bytes
    def __init__(self, schema_version: _Optional[int] = ..., stream: _Optional[str] = ..., dense_dim: _Optional[int] = ..., event_ids: _Optional[_Iterable[str]] = ..., keys: _Optional[_Iterable[str]] = ..., event_time_unix_ms: _Optional[_Iterable[int]] = ..., dense: _Optional[bytes] = ..., regression: _Optional[bytes] = ..., class_index: _Optional[bytes] = ..., weights: _Optional[bytes] = ...) -> None: ...

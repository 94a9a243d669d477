from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LabelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LABEL_KIND_UNSPECIFIED: _ClassVar[LabelKind]
    LABEL_KIND_REGRESSION: _ClassVar[LabelKind]
    LABEL_KIND_BINARY: _ClassVar[LabelKind]
    LABEL_KIND_MULTICLASS: _ClassVar[LabelKind]
    LABEL_KIND_MULTILABEL: _ClassVar[LabelKind]
LABEL_KIND_UNSPECIFIED: LabelKind
LABEL_KIND_REGRESSION: LabelKind
LABEL_KIND_BINARY: LabelKind
LABEL_KIND_MULTICLASS: LabelKind
LABEL_KIND_MULTILABEL: LabelKind

class FeatureCross(_message.Message):
    __slots__ = ("left", "right")
    LEFT_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    left: str
    right: str
    def __init__(self, left: _Optional[str] = ..., right: _Optional[str] = ...) -> None: ...

class FeatureSchema(_message.Message):
    __slots__ = ("numeric", "categorical", "crosses")
    NUMERIC_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    CROSSES_FIELD_NUMBER: _ClassVar[int]
    numeric: _containers.RepeatedScalarFieldContainer[str]
    categorical: _containers.RepeatedScalarFieldContainer[str]
    crosses: _containers.RepeatedCompositeFieldContainer[FeatureCross]
    def __init__(self, numeric: _Optional[_Iterable[str]] = ..., categorical: _Optional[_Iterable[str]] = ..., crosses: _Optional[_Iterable[_Union[FeatureCross, _Mapping]]] = ...) -> None: ...

class StreamDefinition(_message.Message):
    __slots__ = ("name", "dense_dim", "sparse_buckets", "label_kind", "num_classes", "class_names", "revision", "description", "features", "join", "text")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DENSE_DIM_FIELD_NUMBER: _ClassVar[int]
    SPARSE_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    LABEL_KIND_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    JOIN_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    name: str
    dense_dim: int
    sparse_buckets: int
    label_kind: LabelKind
    num_classes: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    revision: int
    description: str
    features: FeatureSchema
    join: JoinPolicy
    text: TextSpec
    def __init__(self, name: _Optional[str] = ..., dense_dim: _Optional[int] = ..., sparse_buckets: _Optional[int] = ..., label_kind: _Optional[_Union[LabelKind, str]] = ..., num_classes: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., revision: _Optional[int] = ..., description: _Optional[str] = ..., features: _Optional[_Union[FeatureSchema, _Mapping]] = ..., join: _Optional[_Union[JoinPolicy, _Mapping]] = ..., text: _Optional[_Union[TextSpec, _Mapping]] = ...) -> None: ...

class TextSpec(_message.Message):
    __slots__ = ("max_bytes",)
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_bytes: int
    def __init__(self, max_bytes: _Optional[int] = ...) -> None: ...

class JoinPolicy(_message.Message):
    __slots__ = ("window_s", "negative_after_s", "negative_value")
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_VALUE_FIELD_NUMBER: _ClassVar[int]
    window_s: float
    negative_after_s: float
    negative_value: float
    def __init__(self, window_s: _Optional[float] = ..., negative_after_s: _Optional[float] = ..., negative_value: _Optional[float] = ...) -> None: ...

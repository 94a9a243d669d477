"""What a stream definition means to the joiner: its join policy and which labels it takes.

Transport-free: definitions in, policies and rejections out.
"""

from __future__ import annotations

import dataclasses
import math

from services.joiner.policy import StreamPolicy
from shared.errors import ConfigError
from shared.feedback import FeedbackProblem, Label
from streamlearn.v1 import sample_pb2, stream_pb2

KIND = stream_pb2.LabelKind
# Dead-letter reasons of samples a definition refuses (ingestion's codes, for one vocabulary).
UNKNOWN_STREAM = "unknown_stream"
LABEL_KIND = "label_kind_mismatch"
LABEL_OUT_OF_RANGE = "label_out_of_range"

_LABEL_FIELD = {
    KIND.LABEL_KIND_REGRESSION: "regression",
    KIND.LABEL_KIND_BINARY: "class_index",
    KIND.LABEL_KIND_MULTICLASS: "class_index",
    KIND.LABEL_KIND_MULTILABEL: "multi_label",
}


def negative_label(definition: stream_pb2.StreamDefinition) -> Label:
    """The label of a negative, read by the stream's label kind.

    Raises:
        ConfigError: `negative_value` is no label of that kind (a fractional or negative
            class index, an infinite target).

    """
    value = definition.join.negative_value
    try:
        if definition.label_kind == KIND.LABEL_KIND_REGRESSION:
            return Label.regression(value)
        if definition.label_kind == KIND.LABEL_KIND_MULTILABEL:
            return Label.multi_label(())
        if not math.isfinite(value) or value != int(value):
            raise ConfigError(f"negative_value {value} is not a class index")
        return Label.class_index(int(value))
    except FeedbackProblem as exc:
        raise ConfigError(f"negative_value {value}: {exc}") from None


def policy_of(definition: stream_pb2.StreamDefinition, default: StreamPolicy) -> StreamPolicy:
    """The join policy of a stream: its `join` fields, `default` where they are 0.

    Raises:
        ConfigError: The fields describe no policy (a negative after the window closes, a
            negative label that the stream cannot take).

    """
    join = definition.join
    window = join.window_s or default.window_s
    if not join.negative_after_s:
        return dataclasses.replace(default, window_s=window, negative_after_s=None)
    return dataclasses.replace(
        default,
        window_s=window,
        negative_after_s=join.negative_after_s,
        negative_label=negative_label(definition),
    )


def check_label(
    sample: sample_pb2.Sample, definition: stream_pb2.StreamDefinition | None
) -> tuple[str, str] | None:
    """Why a joined sample cannot be trained on its stream, as (reason, detail); None if it can."""
    if definition is None:
        return UNKNOWN_STREAM, f"stream {sample.stream!r} is not defined"
    which = sample.WhichOneof("label")
    expected = _LABEL_FIELD.get(definition.label_kind)
    if which != expected:
        kind = KIND.Name(definition.label_kind)
        return LABEL_KIND, f"{which} label on a {kind} stream {sample.stream!r}"
    classes = 2 if definition.label_kind == KIND.LABEL_KIND_BINARY else definition.num_classes
    if which == "class_index" and not 0 <= sample.class_index < classes:
        return LABEL_OUT_OF_RANGE, f"class {sample.class_index} outside [0, {classes})"
    if which == "multi_label" and not all(0 <= c < classes for c in sample.multi_label.classes):
        return LABEL_OUT_OF_RANGE, f"a class outside [0, {classes})"
    return None

"""Byte-level language models: recognising their graphs, scoring texts, generating bytes.

A version is a language model when its graph takes `text` (uint8 byte ids, batch x seq)
and gives `logprobs` (float32 batch x seq x 256: natural-log probabilities of the byte
after each position); its metadata property `streamlearn.text.context` says how many bytes
one run may take (the trainer's `services.trainer.text.export` writes such graphs). On the
wire it takes texts, not ids (see `text_requests`):

- scoring: each text is cut into context-sized chunks exactly as the trainer scores it
  (`shared.text_windows`), the chunks run padded on the right, and the rows are put back
  together: `logprobs` (batch, longest, 256), zeros past a text's end, and `lengths`.
- generation: bytes chosen one at a time by `shared.text_generation`, each from the last
  `context` bytes.

Transport-free and torch-free: numpy over the version's ONNX Runtime session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from shared.errors import InferenceFailed, InvalidArgument
from shared.serving import CLASS_LOGPROBS_OUTPUT, LOGPROBS_OUTPUT, TEXT_CONTEXT_KEY, TEXT_INPUT
from shared.text_generation import VOCAB, Decoding, continue_bytes
from shared.text_windows import input_chunks, pad_chunks, spans

if TYPE_CHECKING:
    from services.inference.model import LoadedModel

LOGPROBS = LOGPROBS_OUTPUT
LENGTHS = "lengths"
CLASSES = "classes"  # a multi-task model's class log-probabilities of each whole text
GENERATED = "generated"
CONTEXT_KEY = TEXT_CONTEXT_KEY
# Far above any context the trainer allows (1024): a claim beyond it is no real model.
MAX_CONTEXT = 1 << 16
# Padded byte positions per session run: attention's memory grows with rows x seq^2, so a
# long context runs fewer chunks at a time (always at least one).
RUN_POSITIONS = 16_384
SCORE_OUTPUTS = (LOGPROBS, LENGTHS)
CLASS_SCORE_OUTPUTS = (LOGPROBS, LENGTHS, CLASSES)
GENERATE_OUTPUTS = (GENERATED,)


@dataclass(frozen=True)
class WireTensor:
    """A tensor as ModelMetadata and ModelConfig list it: V2 datatype, -1 for free dims."""

    name: str
    datatype: str
    shape: tuple[int, ...]


# What a client sends and gets, whatever the graph's own signature.
WIRE_INPUTS = (WireTensor(TEXT_INPUT, "BYTES", (-1,)),)
WIRE_OUTPUTS = (
    WireTensor(LOGPROBS, "FP32", (-1, -1, VOCAB)),
    WireTensor(LENGTHS, "INT64", (-1,)),
    WireTensor(GENERATED, "BYTES", (-1,)),
)


def wire_outputs(graph: TextGraph) -> tuple[WireTensor, ...]:
    """The outputs a client may ask of `graph`: `classes` too when it has a class head."""
    if not graph.classes:
        return WIRE_OUTPUTS
    return (*WIRE_OUTPUTS, WireTensor(CLASSES, "FP32", (-1, graph.classes)))


@dataclass(frozen=True)
class TextGraph:
    """A loaded language model's contract.

    `context`: the most bytes one session run may take; `classes`: the width of its class
    head (0: none).
    """

    context: int
    classes: int = 0

    @property
    def score_outputs(self) -> tuple[str, ...]:
        """What scoring gives: `classes` too for a multi-task model."""
        return CLASS_SCORE_OUTPUTS if self.classes else SCORE_OUTPUTS

    @classmethod
    def detect(
        cls,
        label: str,
        inputs: Mapping[str, tuple[str, tuple[int, ...]]],
        outputs: Mapping[str, tuple[str, tuple[int, ...]]],
        properties: Mapping[str, str],
    ) -> TextGraph | None:
        """The graph's text contract, or None for a tabular graph.

        Args:
            label: `name vN`, for errors.
            inputs: The graph's inputs: name -> (V2 datatype, shape).
            outputs: The graph's outputs, likewise.
            properties: The model's metadata properties.

        Raises:
            InvalidArgument: A `text` uint8 -> `logprobs` graph that breaks the contract:
                other inputs, wrong ranks, fixed batch or seq, wrong vocabulary, or no
                valid context.

        """
        text, logprobs = inputs.get(TEXT_INPUT), outputs.get(LOGPROBS)
        if text is None or text[0] != "UINT8" or logprobs is None:
            return None
        if len(inputs) != 1 or len(text[1]) != 2:
            raise InvalidArgument(
                f"{label}: a text model takes one input {TEXT_INPUT!r} UINT8 [batch, seq]; "
                f"the graph has {dict(inputs)}"
            )
        if list(text[1]) != [-1, -1]:  # requests come in any number of texts and lengths
            raise InvalidArgument(
                f"{label}: a text model's input {TEXT_INPUT!r} needs free batch and seq "
                f"dimensions; the graph fixes them to {list(text[1])}"
            )
        datatype, shape = logprobs
        if datatype != "FP32" or len(shape) != 3 or shape[2] not in (-1, VOCAB):
            raise InvalidArgument(
                f"{label}: a text model gives {LOGPROBS!r} FP32 [batch, seq, {VOCAB}]; "
                f"the graph gives {datatype} {list(shape)}"
            )
        return cls(_context(label, properties.get(CONTEXT_KEY)), _classes(label, outputs))

    def warm_up_ids(self) -> np.ndarray:
        """One full-context window of zeros: warming up on it proves the context is real."""
        return np.zeros((1, self.context), dtype=np.uint8)


def _classes(label: str, outputs: Mapping[str, tuple[str, tuple[int, ...]]]) -> int:
    """The class head's width (0 without `class_logprobs`), refused unless fixed."""
    found = outputs.get(CLASS_LOGPROBS_OUTPUT)
    if found is None:
        return 0
    datatype, shape = found
    if datatype != "FP32" or len(shape) != 3 or not 1 <= shape[2] <= 1024:
        raise InvalidArgument(
            f"{label}: a class head gives {CLASS_LOGPROBS_OUTPUT!r} FP32 [batch, seq, classes] "
            f"with a fixed number of classes; the graph gives {datatype} {list(shape)}"
        )
    return int(shape[2])


def _context(label: str, value: str | None) -> int:
    """The context recorded in the metadata, refused unless a whole number in range."""
    if value is None:
        raise InvalidArgument(f"{label}: a text model must record {CONTEXT_KEY!r}; it has none")
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_CONTEXT:
        raise InvalidArgument(
            f"{label}: {CONTEXT_KEY} must be a whole number in [1, {MAX_CONTEXT}], "
            f"not {value[:40]!r}"
        )
    return int(text)


def graph(model: LoadedModel) -> TextGraph:
    """The text contract of `model`; InvalidArgument when it is a tabular model."""
    if model.text is None:
        raise InvalidArgument(f"{model.name} is not a language model: it takes no texts")
    return model.text


def run_logprobs(model: LoadedModel, ids: np.ndarray) -> np.ndarray:
    """`logprobs` of a (rows, seq) uint8 batch, checked to be (rows, seq, 256).

    Raises:
        InferenceFailed: The runtime failed, or the graph gave another shape.

    """
    return run_outputs(model, ids, [LOGPROBS])[LOGPROBS]


def lengths_of(texts: Sequence[bytes]) -> np.ndarray:
    """Each text's length in bytes (int64): the `lengths` output."""
    return np.array([len(t) for t in texts], dtype=np.int64)


def score(
    model: LoadedModel, texts: Sequence[bytes], classes: bool = False
) -> dict[str, np.ndarray]:
    """Per text, the log-probabilities of the byte after each of its bytes (and its class).

    Returns:
        `logprobs` (batch, longest, 256) float32, zero rows past each text's end;
        `lengths` (batch,) int64; with `classes`, `classes` (batch, classes) float32: the
        class log-probabilities read at each text's last byte (the trainer learns them
        there). Texts are non-empty and already bounded by the caller.

    """
    context = graph(model).context
    lengths = lengths_of(texts)
    out = np.zeros((len(texts), int(lengths.max(initial=0)), VOCAB), dtype=np.float32)
    found = np.zeros((len(texts), graph(model).classes), dtype=np.float32)
    names = [LOGPROBS, CLASS_LOGPROBS_OUTPUT] if classes else [LOGPROBS]
    # (text, start, chunk) for every chunk of every text, run a group at a time
    pieces = [
        (row, start, chunk)
        for row, text in enumerate(texts)
        for (start, _), chunk in zip(
            spans(len(text), context), input_chunks(text, context), strict=True
        )
    ]
    per_run = max(1, RUN_POSITIONS // context)
    for first in range(0, len(pieces), per_run):
        group = pieces[first : first + per_run]
        batch, sizes = pad_chunks([chunk for _, _, chunk in group])
        ran = run_outputs(model, batch, names)
        for i, ((row, start, _), size) in enumerate(zip(group, sizes, strict=True)):
            out[row, start : start + size] = ran[LOGPROBS][i, :size]
            if classes and start + size == lengths[row]:  # the chunk of the text's last byte
                found[row] = ran[CLASS_LOGPROBS_OUTPUT][i, size - 1]
    arrays = {LOGPROBS: out, LENGTHS: lengths}
    return arrays | ({CLASSES: found} if classes else {})


def run_outputs(model: LoadedModel, ids: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """The named outputs of a (rows, seq) uint8 batch, each checked for its shape.

    Raises:
        InferenceFailed: The runtime failed, or the graph gave another shape.

    """
    ran = model.run({TEXT_INPUT: ids}, names)
    widths = {LOGPROBS: VOCAB, CLASS_LOGPROBS_OUTPUT: graph(model).classes}
    for name in names:
        got = ran[name]
        if got.shape != (*ids.shape, widths[name]) or got.dtype != np.float32:
            raise InferenceFailed(
                f"{model.name} v{model.version}: {name} of shape {list(got.shape)} "
                f"{got.dtype} for ids {list(ids.shape)}"
            )
    return ran


def generate(model: LoadedModel, prompt: bytes, max_new: int, decoding: Decoding) -> Iterator[int]:
    """The `max_new` bytes after `prompt`, one at a time as they are chosen.

    The caller has checked `decoding`, a non-empty bounded prompt and `max_new`.
    """
    context = graph(model).context

    def scorer(window: np.ndarray) -> np.ndarray:
        last: np.ndarray = run_logprobs(model, window)[0, -1]
        return last

    return continue_bytes(scorer, prompt, max_new, context, decoding)


CHECK_EVERY = 8  # generated bytes between checks that the caller still waits


def while_active(byte_stream: Iterator[int], active: Callable[[], bool]) -> Iterator[int]:
    """`byte_stream`, stopped (InferenceFailed) once the caller is gone.

    A client that cancels or passes its deadline would otherwise leave its generation
    running to `max_new_bytes` on a worker thread, and a client retrying on a short
    deadline would multiply that work.
    """
    for produced, value in enumerate(byte_stream):
        if produced % CHECK_EVERY == 0 and not active():
            raise InferenceFailed("generation stopped: the caller cancelled or timed out")
        yield value


def chunked(byte_stream: Iterator[int], total: int, size: int) -> Iterator[tuple[bytes, bool]]:
    """`total` bytes from `byte_stream` in pieces of `size` (the last may be shorter).

    Each piece comes with whether it is the last: generation yields exactly `total`.
    """
    piece = bytearray()
    for produced, value in enumerate(byte_stream, start=1):
        piece.append(value)
        if len(piece) == size or produced == total:
            yield bytes(piece), produced == total
            piece = bytearray()

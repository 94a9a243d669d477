"""Texts -> context-sized chunks of byte ids, in numpy only (the server has no torch).

The cut the trainer's `services.trainer.text.windows` learns and scores with, and the
inference service serves with: a text of L bytes is scored as chunks [0, C), [C, 2C), ...
of at most C (the context) bytes each, every chunk on its own, so row t of a text's
log-probabilities predicts byte t + 1 from the bytes of t's chunk up to t.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def spans(length: int, context: int) -> Iterator[tuple[int, int]]:
    """[start, stop) of the input chunks of a `length`-byte sequence, `context` at most each."""
    for start in range(0, length, context):
        yield start, min(start + context, length)


def input_chunks(text: bytes, context: int) -> list[np.ndarray]:
    """The context-sized input chunks of `text` (uint8 views), every byte included."""
    data = np.frombuffer(text, dtype=np.uint8)
    return [data[start:stop] for start, stop in spans(len(data), context)]


def pad_chunks(chunks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Chunks as one right-padded (N, T) uint8 batch, and each chunk's length (int64).

    Right padding is safe for a causal model: no real position attends to the zeros after
    it, so each chunk's rows equal those it would get alone.
    """
    lengths = np.array([len(c) for c in chunks], dtype=np.int64)
    batch = np.zeros((len(chunks), int(lengths.max(initial=0))), dtype=np.uint8)
    for row, chunk in enumerate(chunks):
        batch[row, : len(chunk)] = chunk
    return batch, lengths

"""Texts from outside -> padded, context-sized windows of byte ids for the network.

A text of L bytes has L - 1 next-byte predictions: inputs bytes[s : s + C] predict
bytes[s + 1 : s + C + 1] for window starts s = 0, C, 2C, ... (the usual shift). Windows are
independent: a prediction sees the bytes of its own window only, as the served model (whose
input is at most C bytes) does. Windows are padded on the right to the longest in the batch;
`mask` marks the real predictions. The cut into chunks (`spans`, `input_chunks`) is
`shared.text_windows`, the one the inference service scores with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shared.errors import InvalidArgument
from shared.text_windows import input_chunks, pad_chunks, spans

__all__ = ["Windows", "check_texts", "input_chunks", "pad", "spans", "training_windows"]


@dataclass(frozen=True)
class Windows:
    """Windows of several texts: ids (N, T) int64, their targets and mask, and their text."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor  # (N, T) bool: a real prediction, not padding
    owner: torch.Tensor  # (N,) int64: index of the text each window comes from

    def to(self, device: torch.device) -> Windows:
        """The same windows on `device`."""
        return Windows(
            self.inputs.to(device),
            self.targets.to(device),
            self.mask.to(device),
            self.owner.to(device),
        )


def check_texts(texts: object) -> list[bytes]:
    """`texts` as a list of bytes, or InvalidArgument naming the first element that is not.

    Strings are refused rather than encoded: which encoding the bytes came in is the
    caller's to decide (the Kafka wiring encodes `Sample.text` as UTF-8).
    """
    if isinstance(texts, (bytes, bytearray, str)) or not isinstance(texts, Sequence):
        raise InvalidArgument(f"texts must be a list of bytes, not {type(texts).__name__}")
    out: list[bytes] = []
    for i, text in enumerate(texts):
        if not isinstance(text, (bytes, bytearray)):
            raise InvalidArgument(f"text {i} is {type(text).__name__}, not bytes")
        out.append(bytes(text))
    return out


def training_windows(texts: Sequence[bytes], context: int) -> Windows:
    """The next-byte prediction windows of `texts` (each at least 2 bytes long)."""
    rows: list[tuple[np.ndarray, np.ndarray, int]] = []
    for index, text in enumerate(texts):
        data = np.frombuffer(text, dtype=np.uint8)
        for start, stop in spans(len(data) - 1, context):
            rows.append((data[start:stop], data[start + 1 : stop + 1], index))
    width = max(len(inputs) for inputs, _, _ in rows)
    inputs = np.zeros((len(rows), width), dtype=np.int64)
    targets = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=bool)
    for row, (x, y, _) in enumerate(rows):
        inputs[row, : len(x)], targets[row, : len(y)], mask[row, : len(x)] = x, y, True
    owner = np.array([index for _, _, index in rows], dtype=np.int64)
    return Windows(
        torch.from_numpy(inputs),
        torch.from_numpy(targets),
        torch.from_numpy(mask),
        torch.from_numpy(owner),
    )


def pad(chunks: Sequence[np.ndarray]) -> tuple[torch.Tensor, np.ndarray]:
    """Chunks as one right-padded (N, T) int64 batch, and each chunk's length."""
    batch, lengths = pad_chunks(chunks)
    return torch.from_numpy(batch.astype(np.int64)), lengths

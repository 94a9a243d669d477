"""Continuing a prompt byte by byte over any next-byte scorer: the decoding rule, in numpy.

Greedy picks the most probable byte (the first of equals, as `torch.argmax` does), so
over an ONNX export it continues a prompt exactly as the trainer's
`TextLearner.generate(..., sampling="greedy")` does. Sampling draws from
softmax(logprobs / temperature), cut to the `top_k` most probable bytes when top_k > 0,
with a numpy Generator seeded per call: a seed always gives the same bytes. The trainer's
`TextLearner.generate` decodes by this rule too (over the live network's scores).

Each byte is predicted from the last `context` bytes (prompt and generated so far), the
window the trainer's generator uses too. Torch-free: the inference service decodes here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from shared.errors import InferenceFailed, InvalidArgument

VOCAB = 256  # every byte value is a token
SAMPLINGS = ("greedy", "sample")

Sampling = Literal["greedy", "sample"]
# A window of byte ids (1, T) uint8, T <= context -> the log-probabilities (256,) of the
# byte after its last one.
NextByteScorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Decoding:
    """How each next byte is chosen.

    greedy: the most probable byte (temperature, top_k and seed do not matter).
    sample: drawn from softmax(logprobs / temperature), restricted to the top_k most
    probable bytes when top_k > 0, from a generator seeded with `seed`.
    """

    sampling: str = "greedy"
    temperature: float = 1.0
    top_k: int = 0
    seed: int = 0

    def check(self) -> None:
        """InvalidArgument for settings no decoding can follow."""
        if self.sampling not in SAMPLINGS:
            raise InvalidArgument(f"sampling must be greedy or sample, not {self.sampling!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise InvalidArgument(f"temperature must be finite and > 0, not {self.temperature}")
        if not 0 <= self.top_k <= VOCAB:
            raise InvalidArgument(f"top_k must be in [0, {VOCAB}], not {self.top_k}")
        if self.seed < 0:
            raise InvalidArgument(f"seed must be >= 0, not {self.seed}")


def next_byte(logprobs: np.ndarray, decoding: Decoding, rng: np.random.Generator) -> int:
    """The byte chosen from one position's log-probabilities (256,).

    Raises:
        InferenceFailed: The scores hold NaN (a broken model, not a bad request).

    """
    if logprobs.shape != (VOCAB,) or np.isnan(logprobs).any():
        raise InferenceFailed(f"the model gave no usable next-byte scores {logprobs.shape}")
    if decoding.sampling == "greedy":
        return int(np.argmax(logprobs))
    return _sample(logprobs, decoding, rng)


def _sample(logprobs: np.ndarray, decoding: Decoding, rng: np.random.Generator) -> int:
    scaled = logprobs.astype(np.float64) / decoding.temperature
    if decoding.top_k:
        kth = np.partition(scaled, VOCAB - decoding.top_k)[VOCAB - decoding.top_k]
        scaled = np.where(scaled < kth, -np.inf, scaled)
    top = scaled.max()
    if not np.isfinite(top):
        # A temperature so small that every score overflowed: its limit is greedy.
        return int(np.argmax(logprobs))
    cumulative = np.cumsum(np.exp(scaled - top))
    # side="right" lands on the first byte whose mass lies past the draw: never on a byte
    # of probability 0 (its cumulative sum equals its predecessor's).
    drawn = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return min(drawn, VOCAB - 1)


def continue_bytes(
    scorer: NextByteScorer, prompt: bytes, max_new: int, context: int, decoding: Decoding
) -> Iterator[int]:
    """The `max_new` bytes after `prompt`, one at a time, as they are chosen.

    Each is predicted from the last `context` bytes; the caller has checked `decoding`,
    a non-empty `prompt` and `max_new`.
    """
    rng = np.random.default_rng(decoding.seed)
    data = bytearray(prompt)
    for _ in range(max_new):
        window = np.frombuffer(bytes(data[-context:]), dtype=np.uint8).reshape(1, -1)
        chosen = next_byte(scorer(window), decoding, rng)
        data.append(chosen)
        yield chosen

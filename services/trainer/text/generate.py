"""Continuing a prompt byte by byte: greedy, or sampled with a temperature and a top-k cut.

Sampling draws from its own generator seeded per call, so a seed gives the same bytes
every time and generating never moves torch's global random state or the learner's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from services.trainer.text.config import VOCAB
from services.trainer.text.model import ByteTransformer
from shared.errors import InvalidArgument

Sampling = Literal["greedy", "sample"]


@dataclass(frozen=True)
class Decoding:
    """How each next byte is chosen.

    greedy: the most probable byte (temperature, top_k and seed do not matter).
    sample: drawn from softmax(logits / temperature), restricted to the top_k most
    probable bytes when top_k > 0.
    """

    sampling: Sampling = "greedy"
    temperature: float = 1.0
    top_k: int = 0
    seed: int = 0

    def check(self) -> None:
        """InvalidArgument for settings no decoding can follow."""
        if self.sampling not in ("greedy", "sample"):
            raise InvalidArgument(f"sampling must be greedy or sample, not {self.sampling!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise InvalidArgument(f"temperature must be finite and > 0, not {self.temperature}")
        if not 0 <= self.top_k <= VOCAB:
            raise InvalidArgument(f"top_k must be in [0, {VOCAB}], not {self.top_k}")
        if self.seed < 0:
            raise InvalidArgument(f"seed must be >= 0, not {self.seed}")


def next_byte(logits: torch.Tensor, decoding: Decoding, generator: torch.Generator) -> int:
    """The byte chosen from one position's logits (256,)."""
    if decoding.sampling == "greedy":
        return int(torch.argmax(logits))
    scaled = logits.double().cpu() / decoding.temperature
    if decoding.top_k:
        kth = torch.topk(scaled, decoding.top_k).values[-1]
        scaled = torch.where(scaled < kth, float("-inf"), scaled)
    probabilities = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probabilities, 1, generator=generator))


@torch.no_grad()
def continue_bytes(
    network: ByteTransformer, prompt: bytes, max_new: int, decoding: Decoding
) -> bytes:
    """`max_new` bytes after `prompt`, each predicted from the last `context` bytes."""
    device = network.positions.device
    generator = torch.Generator().manual_seed(decoding.seed)
    data = list(prompt)
    for _ in range(max_new):
        window = torch.tensor([data[-network.context :]], dtype=torch.int64, device=device)
        logits = network(window)[0, -1].float()
        data.append(next_byte(logits, decoding, generator))
    return bytes(data[len(prompt) :])

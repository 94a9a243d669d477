"""Continuing a prompt byte by byte with the live network, by the one decoding rule.

The rule (greedy, or sampled with a temperature and a top-k cut, from a generator seeded
per call) is `shared.text_generation`'s, the one the inference service applies to the
served ONNX versions: a prompt continues the same way in the trainer and when served.
Generating never moves torch's global random state or the learner's.
"""

from __future__ import annotations

import numpy as np
import torch

from services.trainer.text.model import ByteTransformer
from shared import text_generation
from shared.text_generation import Decoding, Sampling

__all__ = ["Decoding", "Sampling", "continue_bytes"]


@torch.no_grad()
def continue_bytes(
    network: ByteTransformer, prompt: bytes, max_new: int, decoding: Decoding
) -> bytes:
    """`max_new` bytes after `prompt`, each predicted from the last `context` bytes."""
    device = network.positions.device

    def scorer(window: np.ndarray) -> np.ndarray:
        ids = torch.from_numpy(window.astype(np.int64)).to(device)
        logits = network(ids)[0, -1].float()
        scores: np.ndarray = torch.log_softmax(logits, dim=-1).cpu().numpy()
        return scores

    chosen = text_generation.continue_bytes(scorer, prompt, max_new, network.context, decoding)
    return bytes(chosen)

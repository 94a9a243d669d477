"""GPU figures of the trainer's learners, beside the CPU in the same run (`make gpu-check`).

Without CUDA it says so plainly and exits 0: there is nothing to measure. With CUDA it
measures, each on the GPU and on the CPU in the same process (median of 3 rounds):
- the byte language model (the trainer's default config) learning texts, one step per
  text: bytes/s;
- an MLP learning mini-batches of 256 tabular events: events/s;
and checks that a version exported from GPU weights serves (ONNX Runtime) what torch
computes on the GPU.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time

import numpy as np
import torch

ROUNDS = 3


def main() -> int:
    """Print the figures as JSON (or that no GPU is present)."""
    if not torch.cuda.is_available():
        print("no CUDA device is present: nothing measured (the GPU path is the same code)")
        return 0
    figures = {
        "device": torch.cuda.get_device_name(0),
        "lm_bytes_per_s": {d: _median(lambda d=d: _lm(d)) for d in ("cuda", "cpu")},
        "mlp_events_per_s": {d: _median(lambda d=d: _mlp(d)) for d in ("cuda", "cpu")},
        "lm_export_matches_torch_on_gpu": _export_parity(),
    }
    print(json.dumps(figures, indent=2))
    return 0


def _median(measure: object) -> float:
    return statistics.median(measure() for _ in range(ROUNDS))  # type: ignore[operator]


def _texts(n: int) -> list[bytes]:
    rng = random.Random(5)
    words = ["stream", "model", "learns", "every", "event", "and", "serves", "bytes"]
    return [" ".join(rng.choices(words, k=rng.randint(10, 30))).encode() for _ in range(n)]


def _lm(device: str) -> float:
    from services.trainer.text.config import TextModelConfig
    from services.trainer.text.learner import TextLearner

    learner, texts = TextLearner(TextModelConfig(), device), _texts(200)
    learner.learn(texts[:5])  # kernels and caches warm
    started = time.perf_counter()
    learner.learn(texts)
    if device == "cuda":
        torch.cuda.synchronize()
    return sum(map(len, texts)) / (time.perf_counter() - started)


def _mlp(device: str) -> float:
    from services.trainer.config import ModelSpec, TrainerConfig
    from services.trainer.learner import Batch, Learner

    config = TrainerConfig(
        model=ModelSpec(kind="mlp", features=64, hidden=(256, 256)), batch_size=256
    )
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(51_200, 64)).astype(np.float32))
    y = torch.from_numpy(rng.normal(size=51_200).astype(np.float32))
    learner = Learner(config, device)
    learner.learn(Batch(x[:512], y[:512]))
    started = time.perf_counter()
    learner.learn(Batch(x, y))
    if device == "cuda":
        torch.cuda.synchronize()
    return len(y) / (time.perf_counter() - started)


def _export_parity() -> bool:
    from services.trainer.text.config import TextModelConfig
    from services.trainer.text.export import TextOnnxExporter
    from services.trainer.text.learner import TextLearner

    learner = TextLearner(TextModelConfig(), "cuda")
    learner.learn(_texts(20))
    TextOnnxExporter(learner).export()  # raises IntegrityError unless ORT matches torch
    return True


if __name__ == "__main__":
    sys.exit(main())

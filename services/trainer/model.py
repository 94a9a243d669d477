"""Networks built from a ModelSpec, and the serving head that turns scores into predictions."""

from __future__ import annotations

import importlib

import torch
from torch import nn

from services.trainer.config import TrainerConfig
from shared.errors import ConfigError

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class HashedBag(nn.Module):
    """Hashed sparse ids -> mean of their embeddings (id 0 is padding), concatenated to dense.

    An embedding bag written with plain ops (gather, mask, mean) so it exports to ONNX as is.
    """

    def __init__(self, buckets: int, dim: int, features: int, outputs: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(buckets, dim, padding_idx=0)
        self.head = nn.Linear(dim + features, outputs)

    def forward(self, features: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """Features (N, F) float, sparse (N, K) int64 ids in [0, buckets)."""
        mask = (sparse != 0).unsqueeze(-1).to(features.dtype)
        summed = (self.embedding(sparse) * mask).sum(dim=1)
        mean = summed / mask.sum(dim=1).clamp(min=1.0)
        scores: torch.Tensor = self.head(torch.cat([mean, features], dim=1))
        return scores


def build_model(config: TrainerConfig) -> nn.Module:
    """The network for `config`, initialised from its seed (same config, same weights)."""
    spec = config.model
    torch.manual_seed(spec.seed)
    out = config.outputs
    if spec.kind in ("linear", "logistic", "softmax"):
        return nn.Linear(spec.features, out)
    if spec.kind == "mlp":
        layers: list[nn.Module] = []
        width = spec.features
        for hidden in spec.hidden:
            layers += [nn.Linear(width, hidden), _ACTIVATIONS[spec.activation]()]
            width = hidden
        return nn.Sequential(*layers, nn.Linear(width, out))
    if spec.kind == "embedding_bag":
        if spec.sparse_buckets < 2:
            raise ConfigError("embedding_bag needs sparse_buckets >= 2")
        return HashedBag(spec.sparse_buckets, spec.embedding_dim, spec.features, out)
    return _user_module(spec.module, spec.module_kwargs)


def _user_module(path: str, kwargs: dict[str, object]) -> nn.Module:
    module_name, _, attribute = path.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
        model = factory(**kwargs)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot build module {path!r}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{path!r} did not return a torch.nn.Module")
    return model


class Serving(nn.Module):
    """What is exported and served: probabilities for classification, values for regression."""

    def __init__(self, network: nn.Module, task: str) -> None:
        super().__init__()
        self.network = network
        self.task = task

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Scores -> predictions."""
        scores: torch.Tensor = self.network(*inputs)
        if self.task == "binary":
            return torch.sigmoid(scores)
        if self.task == "multiclass":
            return torch.softmax(scores, dim=-1)
        return scores

"""Networks built from a ModelSpec, and the serving head that turns scores into predictions.

Every network is `Network`: an input layer (`InputScaler`: online standardisation and
imputation of missing values), then the body the spec's kind names. With
`sparse_buckets > 0` it takes a second input, the hashed ids (N, K) int64 of the named
categorical features and crosses (0 = missing, the embeddings' padding row).
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from services.trainer.config import TrainerConfig
from shared.errors import ConfigError

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class InputScaler(nn.Module):
    """Per-feature running standardisation (Welford, float64) and NaN (missing) -> 0.

    The running count, mean and M2 are buffers, so they are in `state_dict` (checkpointed
    like weights) and become initializers of the exported ONNX graph. They move only through
    `observe` (called by the learner before each step, with the step's rows), never in
    `forward`, so predicting changes nothing. A missing value (NaN) is not counted and
    becomes 0 after standardisation, i.e. the feature's running mean; a feature with no
    variance yet standardises to 0. Without `standardize` the layer only imputes.
    """

    count: torch.Tensor
    mean: torch.Tensor
    m2: torch.Tensor

    def __init__(self, features: int, standardize: bool) -> None:
        super().__init__()
        self.standardize = standardize
        if standardize:
            self.register_buffer("count", torch.zeros(features, dtype=torch.float64))
            self.register_buffer("mean", torch.zeros(features, dtype=torch.float64))
            self.register_buffer("m2", torch.zeros(features, dtype=torch.float64))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features (N, F) float32, NaN = missing -> standardised (N, F) float32."""
        missing = torch.isnan(features)
        if not self.standardize:
            return torch.where(missing, torch.zeros_like(features), features)
        x = features.to(torch.float64)
        var = self.m2 / torch.clamp(self.count, min=1.0)
        spread = var > 0
        std = torch.where(spread, torch.sqrt(var), torch.ones_like(var))
        z = torch.where(spread, (x - self.mean) / std, torch.zeros_like(x))
        z = torch.where(missing, torch.zeros_like(z), z)
        return z.to(features.dtype)

    @torch.no_grad()
    def observe(self, features: torch.Tensor) -> None:
        """Fold rows (N, F) into the running statistics; NaN values are not counted.

        Chan's parallel update of (count, mean, M2); for one row it is the arithmetic of
        `fused.observe` exactly, so both paths hold bit-identical statistics.
        """
        if not self.standardize or features.shape[0] == 0:
            return
        x = features.to(device=self.mean.device, dtype=torch.float64)
        present = ~torch.isnan(x)
        n_b = present.sum(dim=0).to(torch.float64)
        values = torch.where(present, x, torch.zeros_like(x))
        mean_b = values.sum(dim=0) / torch.clamp(n_b, min=1.0)
        spread_b = torch.where(present, x - mean_b, torch.zeros_like(x))
        m2_b = (spread_b * spread_b).sum(dim=0)
        total = self.count + n_b
        seen = n_b > 0
        safe_total = torch.where(seen, total, torch.ones_like(total))
        delta = mean_b - self.mean
        mean = self.mean + delta * n_b / safe_total
        m2 = self.m2 + m2_b + delta * delta * (self.count * n_b / safe_total)
        self.mean.copy_(torch.where(seen, mean, self.mean))
        self.m2.copy_(torch.where(seen, m2, self.m2))
        self.count.copy_(total)

    def snapshot(self) -> tuple[torch.Tensor, ...]:
        """Copies of the statistics (to undo an `observe` of rows that were not learned)."""
        if not self.standardize:
            return ()
        return self.count.clone(), self.mean.clone(), self.m2.clone()

    @torch.no_grad()
    def reset_to(self, saved: tuple[torch.Tensor, ...]) -> None:
        """Put back a `snapshot`."""
        if saved:
            self.count.copy_(saved[0])
            self.mean.copy_(saved[1])
            self.m2.copy_(saved[2])


def _masked(embedding: nn.Embedding, sparse: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Embeddings (N, K, D) of ids (N, K) with the rows of id 0 (missing) zeroed."""
    mask = (sparse != 0).unsqueeze(-1).to(dtype)
    embedded: torch.Tensor = embedding(sparse) * mask
    return embedded


class HashedLinear(nn.Module):
    """A linear model over dense features and hashed one-hot ids (as Vowpal Wabbit's).

    scores = Linear(z) + the sum over slots of a per-bucket weight row; the bucket weights
    start at zero, so a category never seen before adds nothing until it is learned.
    """

    def __init__(self, features: int, buckets: int, outputs: int) -> None:
        super().__init__()
        self.dense = nn.Linear(features, outputs)
        self.embedding = nn.Embedding(buckets, outputs, padding_idx=0)
        nn.init.zeros_(self.embedding.weight)

    def forward(self, features: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """Features (N, F) float, sparse (N, K) int64 ids in [0, buckets)."""
        scores: torch.Tensor = self.dense(features)
        return scores + _masked(self.embedding, sparse, features.dtype).sum(dim=1)


def _mean_embedding(
    embedding: nn.Embedding, sparse: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    mask = (sparse != 0).unsqueeze(-1).to(dtype)
    summed = (embedding(sparse) * mask).sum(dim=1)
    mean: torch.Tensor = summed / mask.sum(dim=1).clamp(min=1.0)
    return mean


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
        mean = _mean_embedding(self.embedding, sparse, features.dtype)
        scores: torch.Tensor = self.head(torch.cat([mean, features], dim=1))
        return scores


class HashedMlp(nn.Module):
    """An MLP whose input is the dense features and the mean embedding of the hashed ids."""

    def __init__(self, buckets: int, dim: int, layers: nn.Sequential) -> None:
        super().__init__()
        self.embedding = nn.Embedding(buckets, dim, padding_idx=0)
        # small: an unseen category's random embedding should barely move the hidden layers
        nn.init.normal_(self.embedding.weight, std=0.1)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.layers = layers

    def forward(self, features: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """Features (N, F) float, sparse (N, K) int64 ids in [0, buckets)."""
        mean = _mean_embedding(self.embedding, sparse, features.dtype)
        scores: torch.Tensor = self.layers(torch.cat([features, mean], dim=1))
        return scores


class Network(nn.Module):
    """The input layer, then the body; `sparse` is passed on when the body takes ids."""

    def __init__(self, scaler: InputScaler, body: nn.Module, takes_sparse: bool) -> None:
        super().__init__()
        self.scaler = scaler
        self.body = body
        self.takes_sparse = takes_sparse

    def forward(self, features: torch.Tensor, sparse: torch.Tensor | None = None) -> torch.Tensor:
        """Raw features (N, F) (NaN = missing) and, when used, ids (N, K) -> scores."""
        z = self.scaler(features)
        if self.takes_sparse:
            if sparse is None:  # no ids given: every category missing
                sparse = torch.zeros(features.shape[0], 1, dtype=torch.int64, device=z.device)
            scores: torch.Tensor = self.body(z, sparse)
        else:
            scores = self.body(z)
        return scores


def build_model(config: TrainerConfig) -> Network:
    """The network for `config`, initialised from its seed (same config, same weights)."""
    spec = config.model
    torch.manual_seed(spec.seed)
    scaler = InputScaler(spec.features, spec.standardize)
    if spec.kind == "embedding_bag" and spec.sparse_buckets < 2:
        raise ConfigError("embedding_bag needs sparse_buckets >= 2")
    if spec.sparse_buckets == 1:
        raise ConfigError("sparse_buckets must be 0 (no ids) or >= 2")
    return Network(scaler, _body(config), spec.sparse_buckets > 0)


def _body(config: TrainerConfig) -> nn.Module:
    spec = config.model
    out, buckets = config.outputs, spec.sparse_buckets
    if spec.kind in ("linear", "logistic", "softmax"):
        return _linear(spec.features, buckets, out)
    if spec.kind == "mlp":
        layers: list[nn.Module] = []
        width = spec.features + (spec.embedding_dim if buckets else 0)
        for hidden in spec.hidden:
            layers += [nn.Linear(width, hidden), _ACTIVATIONS[spec.activation]()]
            width = hidden
        mlp = nn.Sequential(*layers, nn.Linear(width, out))
        return HashedMlp(buckets, spec.embedding_dim, mlp) if buckets else mlp
    if spec.kind == "embedding_bag":
        return HashedBag(buckets, spec.embedding_dim, spec.features, out)
    return _user_module(spec.module, spec.module_kwargs)


def _linear(features: int, buckets: int, outputs: int) -> nn.Module:
    """A linear model starting at zero, as River's and Vowpal Wabbit's do.

    The problem is convex, so random weights would only add noise to the first predictions.
    """
    body = HashedLinear(features, buckets, outputs) if buckets else nn.Linear(features, outputs)
    for parameter in body.parameters():
        nn.init.zeros_(parameter)
    return body


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

"""What a trainer learns and how: model, optimizer, schedule, loss, batching, guard.

The classic example, `Dense(10, relu) -> Dense(1)` trained with SGD lr 0.01 on MSE, is:

    model: {kind: mlp, features: 8, hidden: [10]}
    optimizer: {name: sgd, lr: 0.01}
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NORMALIZED_LR = 0.5  # Vowpal Wabbit's default learning rate


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSpec(_Frozen):
    """The network. `outputs` defaults from the loss (1, or `classes` for cross-entropy)."""

    kind: Literal["linear", "logistic", "softmax", "mlp", "embedding_bag", "module"] = "logistic"
    features: int = Field(default=32, ge=1)
    hidden: tuple[int, ...] = ()
    activation: Literal["relu", "tanh", "sigmoid"] = "relu"
    classes: int = Field(default=2, ge=2)
    outputs: int | None = None
    # Running standardisation of the dense features in the network's input layer (exported
    # with it); off, the layer only imputes missing values (NaN) with 0.
    standardize: bool = True
    # > 0: the network also takes hashed sparse ids (N, K) in [0, sparse_buckets), 0 = missing.
    # linear/logistic/softmax: one weight row per bucket (VW-style hashed one-hot);
    # mlp: mean embedding concatenated to the features; embedding_bag: mean embedding + head.
    sparse_buckets: int = Field(default=0, ge=0)
    embedding_dim: int = Field(default=8, ge=1)
    # module: any torch.nn.Module by dotted path, built with `module_kwargs`
    module: str = ""
    module_kwargs: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0


class OptimizerSpec(_Frozen):
    """Optimizer and learning-rate schedule.

    `normalized` is Vowpal Wabbit's default update (adaptive, normalised, importance-aware;
    `normalized.py`): scale-free, so raw features learn without `model.standardize`. It
    updates linear models (linear, logistic, softmax) only, takes no momentum or weight
    decay, and its `lr` defaults to VW's 0.5 when not given.
    """

    name: Literal["sgd", "adam", "rmsprop", "adagrad", "normalized"] = "sgd"
    lr: float = Field(default=0.01, gt=0)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    # constant | inv_sqrt: lr / sqrt(1 + t / scale) | exponential: lr * gamma ** (t / scale)
    schedule: Literal["constant", "inv_sqrt", "exponential"] = "constant"
    schedule_scale: float = Field(default=1.0, gt=0)
    gamma: float = Field(default=0.999, gt=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _normalized_rate(cls, data: Any) -> Any:
        # VW's learning rate is the default of its rule: 0.01 (SGD's) would barely move it
        if isinstance(data, dict) and data.get("name") == "normalized" and "lr" not in data:
            return {**data, "lr": NORMALIZED_LR}
        return data

    @model_validator(mode="after")
    def _normalized_is_plain(self) -> OptimizerSpec:
        if self.name == "normalized" and (self.momentum or self.weight_decay):
            raise ValueError("the normalized optimizer takes no momentum or weight_decay")
        return self


class DistillSpec(_Frozen):
    """Learn from a teacher's soft targets too (tabular models and language models alike).

    The teacher is the registered `version` of model `teacher`, or (version 0) the one its
    `alias` points to when the trainer starts; each version is tagged with which. The loss
    of an event is (1 - weight) x the labels' loss + weight x the soft-target loss at
    `temperature` (`services/trainer/distill.py`, `text/distill.py`).
    """

    teacher: str = Field(min_length=1)
    alias: str = "production"
    version: int = Field(default=0, ge=0)
    temperature: float = Field(default=2.0, gt=0, le=100)
    weight: float = Field(default=0.5, ge=0, le=1)  # of the soft-target loss; 1 - it: labels


class TrainerConfig(_Frozen):
    """Everything that decides the parameters a stream produces (hashed into lineage)."""

    model: ModelSpec = ModelSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    loss: Literal["auto", "mse", "huber", "bce", "cross_entropy"] = "auto"
    huber_delta: float = Field(default=1.0, gt=0)
    # 1: online gradient descent, one update per event; N: one update per N events.
    batch_size: int = Field(default=1, ge=1)
    clip_norm: float | None = Field(default=None, gt=0)
    metrics_window: int = Field(default=1000, ge=10)
    # Divergence guard: after `divergence_warmup` applied events, an event whose loss exceeds
    # ratio x max(running loss level, the loss of an uninformed prediction) is not learned and
    # is counted as diverging. None switches it off.
    divergence_ratio: float | None = Field(default=1e3, gt=1)
    divergence_warmup: int = Field(default=1, ge=1)
    # Concept-drift detection on the prequential loss of applied events.
    drift: Literal["adwin", "page_hinkley", "off"] = "adwin"
    # On a detected drift, restart the learning-rate schedule at step 0 (from the next batch).
    drift_rewarm: bool = False
    distill: DistillSpec | None = None  # a teacher's soft targets (None: labels only)

    @model_validator(mode="after")
    def _distill_has_gradients(self) -> TrainerConfig:
        if self.distill is not None and self.optimizer.name == "normalized":
            raise ValueError("distill needs a gradient optimizer, not normalized (VW's rule)")
        return self

    @model_validator(mode="after")
    def _loss_fits_model(self) -> TrainerConfig:
        if self.resolved_loss == "cross_entropy" and self.model.kind in ("linear", "logistic"):
            raise ValueError(f"cross_entropy needs several outputs, not a {self.model.kind} model")
        return self

    @property
    def resolved_loss(self) -> str:
        """The loss `auto` means for this model kind."""
        if self.loss != "auto":
            return self.loss
        return {
            "linear": "mse",
            "mlp": "mse",
            "logistic": "bce",
            "softmax": "cross_entropy",
            "embedding_bag": "bce",
            "module": "mse",
        }[self.model.kind]

    @property
    def task(self) -> Literal["regression", "binary", "multiclass"]:
        """What the labels are, from the loss."""
        return {
            "mse": "regression",
            "huber": "regression",
            "bce": "binary",
            "cross_entropy": "multiclass",
        }[self.resolved_loss]  # type: ignore[return-value]

    @property
    def outputs(self) -> int:
        """Width of the network's output."""
        if self.model.outputs is not None:
            return self.model.outputs
        return self.model.classes if self.task == "multiclass" else 1

    def hash(self) -> str:
        """A stable digest of the config, recorded in every version's lineage."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    def to_json(self) -> str:
        """The config as JSON, for lineage and reproduction."""
        return json.dumps(self.model_dump(), sort_keys=True)

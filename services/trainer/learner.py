"""The learning core: test-then-train updates with a guard against non-finite events.

Transport-free: the Kafka loop, replay and tests feed it decoded tensors. With batch_size 1
every event is predicted, then learned (online gradient descent); with N, events are
predicted in groups of N with the same weights and one step is taken per group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from services.trainer.config import TrainerConfig
from services.trainer.device import choose
from services.trainer.fused_learner import FusedUpdates, eligible
from services.trainer.metrics import Prequential
from services.trainer.model import build_model


def _optimizer(config: TrainerConfig, params: Any) -> torch.optim.Optimizer:
    o = config.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
        )
    return torch.optim.Adagrad(params, lr=o.lr, weight_decay=o.weight_decay)


def _schedule(config: TrainerConfig) -> Any:
    o = config.optimizer
    if o.schedule == "inv_sqrt":
        return lambda step: 1.0 / math.sqrt(1.0 + step / o.schedule_scale)
    if o.schedule == "exponential":
        return lambda step: o.gamma ** (step / o.schedule_scale)
    return lambda step: 1.0


def _loss(config: TrainerConfig) -> nn.Module:
    name = config.resolved_loss
    if name == "mse":
        return nn.MSELoss(reduction="none")
    if name == "huber":
        return nn.HuberLoss(reduction="none", delta=config.huber_delta)
    if name == "bce":
        return nn.BCEWithLogitsLoss(reduction="none")
    return nn.CrossEntropyLoss(reduction="none")


@dataclass
class Batch:
    """Decoded events: features (N, F) float32, labels (N,), optional weights and sparse ids."""

    features: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor | None = None
    sparse: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def finite_rows(self, limit: int) -> Batch:
        """Up to `limit` rows whose features and labels are all finite (e.g. an export probe)."""
        ok = torch.isfinite(self.features).all(dim=1) & torch.isfinite(self.labels.float())
        index = torch.nonzero(ok).flatten()[:limit]

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[index]

        return Batch(
            self.features[index], self.labels[index], pick(self.weights), pick(self.sparse)
        )

    def slice(self, start: int, stop: int) -> Batch:
        """Rows [start, stop)."""

        def part(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[start:stop]

        return Batch(
            self.features[start:stop],
            self.labels[start:stop],
            part(self.weights),
            part(self.sparse),
        )


class Learner:
    """A network, its optimizer and schedule, prequential metrics and the non-finite guard."""

    def __init__(
        self, config: TrainerConfig, device: str = "cpu", fused_enabled: bool = True
    ) -> None:
        self.config = config
        # auto: per model family (`device.py`); cuda without a GPU raises ConfigError.
        placement = choose(config, device, torch.cuda.is_available())
        if not fused_enabled:
            placement = replace(placement, compiled=False)
        self.placement = placement
        self.device = torch.device(placement.device)
        self.network = build_model(config).to(self.device)
        self.optimizer = _optimizer(config, self.network.parameters())
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _schedule(config))
        self.loss_fn = _loss(config)
        self.metrics = Prequential(config.task, config.metrics_window)
        self.applied = 0  # events learned from
        self.skipped = 0  # events refused by the guard
        # Linear models learning event by event on the CPU take the compiled path.
        self._fused = FusedUpdates(self) if placement.compiled and eligible(self) else None

    @property
    def uses_sparse(self) -> bool:
        """Whether the network takes the hashed sparse ids as a second input."""
        return self.config.model.kind == "embedding_bag"

    def learn(self, batch: Batch) -> None:
        """Predict then learn every event of `batch`, in order."""
        if self._fused is not None:
            predictions, losses, ok = self._fused.learn(batch)
            self._count(ok, predictions, batch.labels.numpy(), losses)
            return
        size = self.config.batch_size
        for start in range(0, len(batch), size):
            self._step(batch.slice(start, start + size))

    def predict(self, batch: Batch) -> np.ndarray:
        """Predictions (post-activation) without learning."""
        with torch.no_grad():
            return self._activate(self._scores(batch)).cpu().numpy()

    def _step(self, batch: Batch) -> None:
        rows_ok = self._finite_rows(batch)
        clean = _sanitise(batch, rows_ok)
        scores = self._scores(clean)
        per_event = self._per_event_loss(scores, clean)
        usable = rows_ok & torch.isfinite(per_event)
        if usable.any():
            loss = torch.where(usable, per_event, 0.0).sum() / usable.sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if not self._apply_gradients():
                usable = torch.zeros_like(usable)
        self._account(scores.detach(), clean, per_event.detach(), usable)

    def _apply_gradients(self) -> bool:
        """Clip and step; refuse the step if any gradient is not finite."""
        grads = [p.grad for p in self.network.parameters() if p.grad is not None]
        if not all(bool(torch.isfinite(g).all()) for g in grads):
            return False
        if self.config.clip_norm:
            nn.utils.clip_grad_norm_(self.network.parameters(), self.config.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        return True

    def _account(
        self, scores: torch.Tensor, batch: Batch, losses: torch.Tensor, usable: torch.Tensor
    ) -> None:
        self._count(
            usable.cpu().numpy(),
            self._activate(scores).cpu().numpy(),
            batch.labels.cpu().numpy(),
            losses.cpu().numpy(),
        )

    def _count(
        self, ok: np.ndarray, predictions: np.ndarray, labels: np.ndarray, losses: np.ndarray
    ) -> None:
        self.applied += int(ok.sum())
        self.skipped += int((~ok).sum())
        if ok.any():
            self.metrics.update(predictions[ok], labels[ok], losses[ok])

    def _finite_rows(self, batch: Batch) -> torch.Tensor:
        ok = torch.isfinite(batch.features).all(dim=1) & torch.isfinite(batch.labels.float())
        if batch.weights is not None:
            ok &= torch.isfinite(batch.weights)
        if self.config.task == "multiclass":  # a class past the outputs would crash the loss
            ok &= (batch.labels >= 0) & (batch.labels < self.config.outputs)
        return ok.to(self.device)

    def _scores(self, batch: Batch) -> torch.Tensor:
        inputs = [batch.features.to(self.device)]
        if batch.sparse is not None and self.uses_sparse:
            inputs.append(batch.sparse.to(self.device))
        scores: torch.Tensor = self.network(*inputs)
        return scores

    def _per_event_loss(self, scores: torch.Tensor, batch: Batch) -> torch.Tensor:
        labels = batch.labels.to(self.device)
        if self.config.task == "multiclass":
            loss: torch.Tensor = self.loss_fn(scores, labels.long())
        else:
            loss = self.loss_fn(scores.squeeze(-1), labels.float())
        if batch.weights is not None:
            loss = loss * batch.weights.to(self.device)
        return loss

    def _activate(self, scores: torch.Tensor) -> torch.Tensor:
        if self.config.task == "binary":
            return torch.sigmoid(scores)
        if self.config.task == "multiclass":
            return torch.softmax(scores, dim=-1)
        return scores

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this learner is."""
        return {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "applied": self.applied,
            "skipped": self.skipped,
            "metrics": self.metrics.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state()`."""
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.applied, self.skipped = state["applied"], state["skipped"]
        self.metrics.restore(state["metrics"])


def _sanitise(batch: Batch, rows_ok: torch.Tensor) -> Batch:
    """Zero the rows the guard refuses, so NaN cannot reach the gradients through them."""
    keep = rows_ok.to(batch.features.device)
    features = torch.where(keep.unsqueeze(1), batch.features, 0.0)
    labels = torch.where(keep, batch.labels, torch.zeros_like(batch.labels))
    weights = None if batch.weights is None else torch.where(keep, batch.weights, 0.0)
    return Batch(features, labels, weights, batch.sparse)

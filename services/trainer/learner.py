"""The learning core: test-then-train updates, guarded against unusable and diverging events.

Transport-free: the Kafka loop, replay and tests feed it decoded tensors. With batch_size 1
every event is predicted, then learned (online gradient descent); with N, events are
predicted in groups of N with the same weights and one step is taken per group.

Each step is scored (the prediction the metrics, the guard and the drift detector see) with
the input layer's running statistics as they were before its rows, as River's pipelines
predict; then its usable rows' features are folded into the statistics and the update's
forward and backward pass use them (River's `learn_one` standardises with the statistics
including the event). Rows that end up not learned (a non-finite loss or gradient, or
refused as diverging by `drift.Guard`) are taken out of the statistics again: they learn
only from events the model learned.
Every event is counted once: `applied`, `skipped` (unusable: non-finite values, a class
past the outputs, an id out of range, a non-finite loss) or `diverging`.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from services.trainer import fused, normalized
from services.trainer.config import TrainerConfig
from services.trainer.device import choose
from services.trainer.distill import TabularTeacher, soft_losses
from services.trainer.drift import DriftWatch, Guard
from services.trainer.fused_learner import FusedUpdates, eligible, set_epoch
from services.trainer.metrics import Prequential
from services.trainer.model import build_model
from services.trainer.served import ServedScores
from shared.errors import ConfigError


def _optimizer(config: TrainerConfig, network: nn.Module, device: str) -> torch.optim.Optimizer:
    o = config.optimizer
    params = network.parameters()
    if o.name == "normalized":
        return normalized.build(config.model.kind, network, o.lr, device, config.clip_norm)
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


def _loss(config: TrainerConfig) -> nn.Module:  # per event, unweighted
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
    """Decoded events: features (N, F) float32, labels (N,), optional weights and sparse ids.

    `named`: the features come from named fields, where NaN means "missing" (imputed by the
    network's input layer); positional rows with NaN are refused. Unusable rows are marked
    by a NaN label (regression, binary) or class -1 (multiclass).
    """

    features: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor | None = None
    sparse: torch.Tensor | None = None
    named: bool = False
    served: torch.Tensor | None = None  # (N, outputs): what production answered, NaN: nothing

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def finite_rows(self, limit: int) -> Batch:
        """Up to `limit` usable rows (e.g. an export probe); named rows may miss values."""
        if self.named:
            ok = ~torch.isinf(self.features).any(dim=1)
        else:
            ok = torch.isfinite(self.features).all(dim=1)
        ok &= torch.isfinite(self.labels.float())
        index = torch.nonzero(ok).flatten()[:limit]
        return self.take(index)

    def slice(self, start: int, stop: int) -> Batch:
        """Rows [start, stop)."""
        return self.take(slice(start, stop))

    def take(self, index: torch.Tensor | builtins.slice) -> Batch:
        """The rows at `index` (a tensor of row numbers or a slice), in that order."""

        def part(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[index]

        return Batch(
            self.features[index],
            self.labels[index],
            part(self.weights),
            part(self.sparse),
            self.named,
            part(self.served),
        )


class Learner:
    """A network, its optimizer and schedule, prequential metrics and the guards."""

    def __init__(
        self,
        config: TrainerConfig,
        device: str = "cpu",
        fused_enabled: bool = True,
        teacher: TabularTeacher | None = None,
    ) -> None:
        """`teacher`: the distillation teacher, needed when `config.distill` is set.

        Raises:
            ConfigError: distillation without a teacher; cuda without a GPU.

        """
        if config.distill is not None and teacher is None:
            raise ConfigError("distillation is configured but no teacher was given")
        self.teacher = teacher if config.distill is not None else None
        self.config = config
        # auto: per model family (`device.py`); cuda without a GPU raises ConfigError.
        placement = choose(config, device, torch.cuda.is_available())
        if not fused_enabled:
            placement = replace(placement, compiled=False)
        self.placement = placement
        self.device = torch.device(placement.device)
        self.network = build_model(config).to(self.device)
        self.optimizer = _optimizer(config, self.network, self.device.type)
        # VW's rule learns from the events themselves (`normalized.py`), not from gradients
        self._normalized = (
            self.optimizer if isinstance(self.optimizer, normalized.Normalized) else None
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _schedule(config))
        self.loss_fn = _loss(config)
        self.metrics = Prequential(config.task, config.metrics_window)
        self.served = ServedScores(
            config.task, config.metrics_window, config.resolved_loss, config.huber_delta
        )
        self.guard = Guard(
            config.divergence_ratio,
            config.divergence_warmup,
            config.resolved_loss,
            config.outputs,
            config.huber_delta,
        )
        self.drift = DriftWatch(config.drift)
        self.applied = 0  # events learned from
        self.skipped = 0  # events refused as unusable
        self.diverging = 0  # events refused by the divergence guard
        self.drifts = 0  # concept drifts detected
        self.last_drift_event = 0  # `applied` at the last detected drift (0: none yet)
        self.new_categories = 0  # ids whose bucket had never been seen
        self._seen = np.zeros(config.model.sparse_buckets, dtype=bool)
        self._learned_losses: list[np.ndarray] = []
        # Linear models learning event by event on the CPU take the compiled path.
        self._fused = FusedUpdates(self) if placement.compiled and eligible(self) else None

    @property
    def uses_sparse(self) -> bool:
        """Whether the network takes the hashed sparse ids as a second input."""
        return self.config.model.sparse_buckets > 0

    def learn(self, batch: Batch) -> None:
        """Predict then learn every event of `batch`, in order."""
        applied_before = self.applied
        self.served.update(batch.served, batch.labels)
        if self._fused is not None:
            predictions, losses, status = self._fused.learn(batch)
            self._count_categories(batch.sparse, status != fused.INVALID)
            self._count(
                status == fused.APPLIED,
                status == fused.DIVERGING,
                predictions,
                batch.labels.numpy(),
                losses,
            )
        else:
            size = self.config.batch_size
            for start in range(0, len(batch), size):
                self._step(batch.slice(start, start + size))
        self._watch(applied_before)

    def scores(self) -> dict[str, float]:
        """The prequential metrics, and beside them those of the served predictions."""
        return self.metrics.snapshot() | self.served.snapshot()

    def predict(self, batch: Batch) -> np.ndarray:
        """Predictions (post-activation) without learning (the statistics do not move)."""
        with torch.no_grad():
            return self._activate(self._scores(batch)).cpu().numpy()

    def _step(self, batch: Batch) -> None:
        valid = self._usable_rows(batch)
        clean = _sanitise(batch, valid)
        labels = clean.labels.to(self.device)
        self.guard.observe_labels(labels[valid].cpu().numpy())
        self._count_categories(clean.sparse, valid.cpu().numpy())
        scaler = self.network.scaler
        if scaler.standardize:
            with torch.no_grad():  # the scored prediction: statistics before the step's rows
                scored = self._scores(clean)
        else:  # nothing moves between scoring and learning: one forward serves both
            scores = self._scores(clean)
            scored = scores.detach()
        scored_raw = self._raw_loss(scored, labels)
        scored_loss = self._weighted(scored_raw, clean)
        saved = scaler.snapshot()
        features = clean.features.to(self.device)
        if scaler.standardize:
            scaler.observe(features[valid])
            # the update's forward sees the statistics with the rows, as River's learn_one
            scores = self._scores(clean)
        per_event = self._distilled(
            self._weighted(self._raw_loss(scores, labels), clean), scores, clean
        )
        usable = valid & torch.isfinite(scored_loss) & torch.isfinite(per_event)
        raw_seen = scored_raw.cpu().numpy()
        refused = self.guard.refuse(raw_seen, usable.cpu().numpy())
        diverging = torch.from_numpy(refused).to(self.device)
        usable &= ~diverging
        if usable.any() and self._normalized is not None:
            usable = self._normalized_step(clean, scores.detach(), labels, usable)
        elif usable.any():
            loss = torch.where(usable, per_event, 0.0).sum() / usable.sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if not self._apply_gradients():
                usable = torch.zeros_like(usable)
        if not bool(torch.equal(usable, valid)):  # the statistics keep only learned rows
            scaler.reset_to(saved)
            scaler.observe(features[usable])
        self.guard.learned(raw_seen[usable.cpu().numpy()])
        self._account(scored, clean, scored_loss, usable, diverging)

    def _normalized_step(
        self, batch: Batch, scores: torch.Tensor, labels: torch.Tensor, usable: torch.Tensor
    ) -> torch.Tensor:
        """VW's update, row by row at each row's score; the rows it learned.

        A mini-batch's rows all take the update at the scores of the weights it started
        with; the schedule moves one step per batch, as for the other optimizers.
        """
        assert self._normalized is not None
        with torch.no_grad():  # the linear layer's inputs, with the statistics of the update
            z = self.network.scaler(batch.features.to(self.device))
        learned = self._normalized.learn_rows(
            z,
            batch.sparse,
            scores,
            labels,
            batch.weights,
            usable,
            self.config.resolved_loss,
            self.config.huber_delta,
        )
        if learned.any():
            set_epoch(self, int(self.scheduler.last_epoch) + 1)
        return learned

    def _distilled(
        self, per_event: torch.Tensor, scores: torch.Tensor, batch: Batch
    ) -> torch.Tensor:
        """The labels' loss mixed with the teacher's soft targets (unchanged without one)."""
        spec = self.config.distill
        if self.teacher is None or spec is None:
            return per_event
        sparse = None if batch.sparse is None else batch.sparse.cpu().numpy()
        served = self.teacher(batch.features.cpu().numpy(), sparse)
        target = torch.from_numpy(np.asarray(served, dtype=np.float32)).to(self.device)
        soft = self._weighted(
            soft_losses(self.config.task, scores, target, spec.temperature), batch
        )
        return (1 - spec.weight) * per_event + spec.weight * soft

    def _weighted(self, raw: torch.Tensor, batch: Batch) -> torch.Tensor:
        return raw if batch.weights is None else raw * batch.weights.to(self.device)

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
        self,
        scores: torch.Tensor,
        batch: Batch,
        losses: torch.Tensor,
        usable: torch.Tensor,
        diverging: torch.Tensor,
    ) -> None:
        self._count(
            usable.cpu().numpy(),
            diverging.cpu().numpy(),
            self._activate(scores).cpu().numpy(),
            batch.labels.cpu().numpy(),
            losses.cpu().numpy(),
        )

    def _count(
        self,
        ok: np.ndarray,
        diverging: np.ndarray,
        predictions: np.ndarray,
        labels: np.ndarray,
        losses: np.ndarray,
    ) -> None:
        self.applied += int(ok.sum())
        self.diverging += int(diverging.sum())
        self.skipped += int((~ok & ~diverging).sum())
        if ok.any():
            self.metrics.update(predictions[ok], labels[ok], losses[ok])
            self._learned_losses.append(np.asarray(losses[ok], dtype=np.float64))

    def _watch(self, applied_before: int) -> None:
        """Feed this call's applied losses to the drift detector, in order."""
        if not self._learned_losses:
            return
        losses = np.concatenate(self._learned_losses)
        self._learned_losses.clear()
        found = self.drift.update(losses)
        if not found:
            return
        self.drifts += len(found)
        self.last_drift_event = applied_before + found[-1] + 1
        if self.config.drift_rewarm:  # warm up again: the schedule restarts at step 0
            set_epoch(self, 0)

    def _count_categories(self, sparse: torch.Tensor | None, rows: np.ndarray) -> None:
        """Count the ids of usable rows whose bucket was never seen before, and mark them."""
        if sparse is None or not self.uses_sparse or not rows.any():
            return
        ids = sparse.cpu().numpy()[rows].ravel()
        ids = np.unique(ids[(ids > 0) & (ids < len(self._seen))])
        new = ids[~self._seen[ids]]
        self.new_categories += len(new)
        self._seen[new] = True

    def _usable_rows(self, batch: Batch) -> torch.Tensor:
        features = batch.features
        if batch.named:  # NaN is a missing value, imputed by the input layer
            ok = ~torch.isinf(features).any(dim=1)
        else:
            ok = torch.isfinite(features).all(dim=1)
        ok &= torch.isfinite(batch.labels.float())
        if batch.weights is not None:
            ok &= torch.isfinite(batch.weights)
        if self.config.task == "multiclass":  # a class past the outputs would crash the loss
            ok &= (batch.labels >= 0) & (batch.labels < self.config.outputs)
        if self.uses_sparse and batch.sparse is not None and batch.sparse.shape[1]:
            buckets = self.config.model.sparse_buckets
            ok &= ((batch.sparse >= 0) & (batch.sparse < buckets)).all(dim=1)
        return ok.to(self.device)

    def _scores(self, batch: Batch) -> torch.Tensor:
        features = batch.features.to(self.device)
        if not self.uses_sparse:
            scores: torch.Tensor = self.network(features)
            return scores
        sparse = None if batch.sparse is None else batch.sparse.to(self.device)
        scores = self.network(features, sparse)
        return scores

    def _raw_loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.task == "multiclass":
            loss: torch.Tensor = self.loss_fn(scores, labels.long())
        else:
            loss = self.loss_fn(scores.squeeze(-1), labels.float())
        return loss

    def _activate(self, scores: torch.Tensor) -> torch.Tensor:
        if self.config.task == "binary":
            return torch.sigmoid(scores)
        if self.config.task == "multiclass":
            return torch.softmax(scores, dim=-1)
        return scores

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this learner is.

        Plain types and tensors only: checkpoints load with torch's weights-only unpickler.
        The input layer's statistics are in the network's state (they are buffers).
        """
        return {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "applied": self.applied,
            "skipped": self.skipped,
            "diverging": self.diverging,
            "metrics": self.metrics.state(),
            "served": self.served.state(),
            "guard": self.guard.state(),
            "drift": self.drift.state(),
            "drifts": self.drifts,
            "last_drift_event": self.last_drift_event,
            "new_categories": self.new_categories,
            "seen": torch.from_numpy(np.packbits(self._seen)),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state()` (one saved before these guards existed starts them afresh)."""
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.applied, self.skipped = state["applied"], state["skipped"]
        self.metrics.restore(state["metrics"])
        if "served" in state:
            self.served.restore(state["served"])
        self.diverging = int(state.get("diverging", 0))
        if "guard" in state:
            self.guard.restore(state["guard"])
        if "drift" in state:
            self.drift.restore(state["drift"])
        self.drifts = int(state.get("drifts", 0))
        self.last_drift_event = int(state.get("last_drift_event", 0))
        self.new_categories = int(state.get("new_categories", 0))
        if "seen" in state:
            bits = np.unpackbits(state["seen"].numpy(), count=len(self._seen))
            self._seen = bits.astype(bool)


def _sanitise(batch: Batch, rows_ok: torch.Tensor) -> Batch:
    """Zero the refused rows, so NaN cannot reach the gradients through them.

    Usable named rows keep their NaN (missing) values: the input layer imputes them.
    """
    keep = rows_ok.to(batch.features.device)
    features = torch.where(keep.unsqueeze(1), batch.features, 0.0)
    labels = torch.where(keep, batch.labels, torch.zeros_like(batch.labels))
    weights = None if batch.weights is None else torch.where(keep, batch.weights, 0.0)
    sparse = None
    if batch.sparse is not None:
        sparse = torch.where(keep.unsqueeze(1), batch.sparse, torch.zeros_like(batch.sparse))
    return Batch(features, labels, weights, sparse, batch.named)

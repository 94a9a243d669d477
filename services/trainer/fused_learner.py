"""Drives `fused.learn_events` on a Learner's torch parameters and optimizer state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from services.trainer import fused
from services.trainer.config import TrainerConfig
from services.trainer.drift import LEVEL_ALPHA, LEVEL_GROWTH
from services.trainer.normalized import BCE, HUBER, MSE, Normalized

if TYPE_CHECKING:
    from services.trainer.learner import Batch, Learner

_OPTIMIZERS = {
    "sgd": fused.SGD,
    "adam": fused.ADAM,
    "rmsprop": fused.RMSPROP,
    "adagrad": fused.ADAGRAD,
    "normalized": fused.NORMALIZED,
}
_LOSSES = {"mse": MSE, "huber": HUBER, "bce": BCE}
_SCHEDULES = {
    "constant": fused.CONSTANT,
    "inv_sqrt": fused.INV_SQRT,
    "exponential": fused.EXPONENTIAL,
}


def compiled_path(config: TrainerConfig) -> bool:
    """Whether `config` is one the compiled path covers: per-event, one linear output.

    Hashed ids are covered with plain SGD (no momentum, weight decay or clipping) and with
    `normalized` only: then the rows of ids an event lacks do not move, so updating just
    the event's rows is exactly torch's dense update; other optimizers move every row and
    take the torch path.
    """
    o = config.optimizer
    plain_sgd = o.name == "sgd" and o.momentum == 0 and o.weight_decay == 0
    sparse_ok = (plain_sgd and config.clip_norm is None) or o.name == "normalized"
    return (
        config.batch_size == 1
        and config.distill is None  # soft targets come from a teacher graph per batch
        and config.model.kind in ("linear", "logistic")
        and config.outputs == 1
        and config.resolved_loss in _LOSSES
        and (config.model.sparse_buckets == 0 or sparse_ok)
    )


def eligible(learner: Learner) -> bool:
    """Per-event learning of one linear layer with one output on the CPU."""
    return compiled_path(learner.config) and learner.device.type == "cpu"


def _view(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().numpy().reshape(-1)


_NO_IDS = np.zeros((0, 0), dtype=np.int64)
_DUMMY = np.zeros(1, np.float32)


def set_epoch(learner: Learner, epoch: int) -> None:
    """Put the learner's LambdaLR at `epoch` and its optimizer's rates with it."""
    scheduler: Any = learner.scheduler
    scheduler.last_epoch = epoch
    lrs = [
        base * fn(scheduler.last_epoch)
        for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)
    ]
    for group, lr in zip(learner.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs


class FusedUpdates:
    """Per-event updates of a Learner whose body is one linear layer (and hashed ids)."""

    def __init__(self, learner: Learner) -> None:
        self._learner = learner
        body = learner.network.body
        self._layer = cast(torch.nn.Linear, getattr(body, "dense", body))
        embedding = getattr(body, "embedding", None)
        self._emb = np.zeros(1, np.float32) if embedding is None else _view(embedding.weight)
        sizes = (self._layer.weight.numel(), self._layer.bias.numel())
        self._scratch = [np.zeros(size, np.float32) for size in sizes * 2]
        scaler = learner.network.scaler
        self._stats = (
            (_view(scaler.count), _view(scaler.mean), _view(scaler.m2))
            if scaler.standardize
            else (np.zeros(0), np.zeros(0), np.zeros(0))
        )

    def learn(self, batch: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Learn every row; returns predictions, losses and each row's `fused` status."""
        learner, config = self._learner, self._learner.config
        n = len(batch)
        x = np.ascontiguousarray(batch.features.numpy(), dtype=np.float32)
        ids = _NO_IDS
        if learner.uses_sparse and batch.sparse is not None:
            ids = np.ascontiguousarray(batch.sparse.numpy(), dtype=np.int64)
        if len(ids) != n:
            ids = np.zeros((n, 0), dtype=np.int64)
        y = batch.labels.numpy().astype(np.float32)
        weight = (
            np.ones(n, np.float32)
            if batch.weights is None
            else batch.weights.numpy().astype(np.float32)
        )
        s1w, s1b, s2w, s2b, step = self._state()
        g_emb, s_emb, norm = self._normalized_state()
        predictions, losses = np.zeros(n), np.zeros(n)
        status = np.zeros(n, dtype=np.int8)
        guard = learner.guard
        group = learner.optimizer.param_groups[0]
        o = config.optimizer
        betas = group.get("betas", (0.9, 0.999))
        steps = fused.learn_events(  # type: ignore[call-arg]  # numba's stub counts arguments
            x,
            y,
            weight,
            ids,
            _view(self._layer.weight),
            _view(self._layer.bias),
            self._emb,
            *self._stats,
            guard.values,
            s1w,
            s1b,
            s2w,
            s2b,
            step,
            g_emb,
            s_emb,
            norm,
            _OPTIMIZERS[o.name],
            float(learner.scheduler.base_lrs[0]),
            float(group.get("momentum", 0.0)),
            float(group.get("weight_decay", 0.0)),
            float(betas[0]),
            float(betas[1]),
            float(group.get("eps", 1e-8)),
            float(group.get("alpha", 0.99)),
            _SCHEDULES[o.schedule],
            o.schedule_scale,
            o.gamma,
            int(learner.scheduler.last_epoch),
            _LOSSES[config.resolved_loss],
            config.huber_delta,
            float(config.clip_norm or 0.0),
            config.task == "binary",
            batch.named,
            config.model.standardize,
            float(guard.ratio or 0.0),
            float(guard.warmup),
            LEVEL_ALPHA,
            LEVEL_GROWTH,
            predictions,
            losses,
            status,
        )
        self._sync(steps, step)
        if isinstance(learner.optimizer, Normalized):
            learner.optimizer.set_norm(norm)
        return predictions, losses, status

    def _normalized_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`normalized`'s sums and scales of the hashed buckets and its normaliser."""
        optimizer = self._learner.optimizer
        if not isinstance(optimizer, Normalized):
            return _DUMMY, _DUMMY, np.zeros(2)
        views = optimizer.views()
        return views[2], views[4], optimizer.norm()

    def _state(self) -> tuple[np.ndarray, ...]:
        """Views of the torch optimizer state, created in torch's own layout when missing."""
        optimizer, name = self._learner.optimizer, self._learner.config.optimizer.name
        if isinstance(optimizer, Normalized):  # sums G of weight and bias, feature scales
            kept = optimizer.views()
            return kept[0], kept[1], kept[3], _DUMMY, np.array([0.0])
        group = optimizer.param_groups[0]
        states = [optimizer.state[p] for p in (self._layer.weight, self._layer.bias)]
        first, second = {
            "sgd": ("momentum_buffer", None),
            "adam": ("exp_avg", "exp_avg_sq"),
            "rmsprop": ("momentum_buffer", "square_avg"),
            "adagrad": ("sum", None),
        }[name]
        uses_first = name in ("adam", "adagrad") or group.get("momentum", 0.0) > 0
        fresh_sgd = name == "sgd" and first not in states[0]
        for state, param in zip(states, (self._layer.weight, self._layer.bias), strict=True):
            if name != "sgd":
                state.setdefault("step", torch.tensor(0.0))
            for key, wanted in ((first, uses_first), (second, second is not None)):
                if key and wanted:
                    state.setdefault(
                        key, torch.zeros_like(param, memory_format=torch.preserve_format)
                    )
        # An optimizer without a buffer gets scratch of its parameter's size: the kernel
        # reads and writes every buffer at each weight's index whether the rule uses it
        # or not (a 1-element stand-in was written past its end, corrupting the heap)
        scratch = self._scratch
        views = [_view(s[first]) if uses_first else scratch[i] for i, s in enumerate(states)]
        views += [_view(s[second]) if second else scratch[2 + i] for i, s in enumerate(states)]
        if name == "sgd":  # no step in torch's SGD state: 1 after the buffer's first update
            step = np.array([0.0 if fresh_sgd else 1.0])
        else:
            step = np.array([float(states[0]["step"])])
        return views[0], views[1], views[2], views[3], step

    def _sync(self, steps: int, step: np.ndarray) -> None:
        """Move the step counters and LambdaLR on as if torch had taken `steps` steps."""
        learner = self._learner
        if learner.config.optimizer.name not in ("sgd", "normalized"):
            for param in (self._layer.weight, self._layer.bias):
                learner.optimizer.state[param]["step"].fill_(float(step[0]))
        set_epoch(learner, int(learner.scheduler.last_epoch) + steps)

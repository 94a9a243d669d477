"""Elastic weight consolidation, online: keep weights that mattered to past domains near.

Kirkpatrick et al.'s penalty (lambda / 2) * sum_i F_i (theta_i - theta*_i)^2, in the online
form of Schwarz et al.: the diagonal Fisher information F is estimated as a running average
of squared gradients while a domain is learned; when the stream moves to another domain the
current weights become the anchor theta* and the running estimate is added to the
consolidated F. Without a domain switch nothing is consolidated and the penalty is zero.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Consolidation:
    """The anchor weights, their consolidated importance, and the running estimate."""

    def __init__(self, strength: float, decay: float) -> None:
        self.strength = strength
        self.decay = decay
        self.domain: str | None = None  # the domain being learned
        self.running: dict[str, torch.Tensor] = {}
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    @property
    def enabled(self) -> bool:
        """Whether the penalty is switched on (a strength above 0)."""
        return self.strength > 0

    def penalty(self, network: nn.Module) -> torch.Tensor | None:
        """The penalty to add to the loss (None before the first consolidation)."""
        if not self.enabled or not self.anchor:
            return None
        total = sum(
            (self.fisher[name] * (param - self.anchor[name]) ** 2).sum()
            for name, param in network.named_parameters()
        )
        return 0.5 * self.strength * torch.as_tensor(total)

    def observe(self, network: nn.Module) -> None:
        """Fold this step's squared gradients into the running Fisher estimate."""
        if not self.enabled:
            return
        with torch.no_grad():
            for name, param in network.named_parameters():
                if param.grad is None:
                    continue
                square = param.grad.detach() ** 2
                if name in self.running:
                    self.running[name].mul_(self.decay).add_(square, alpha=1 - self.decay)
                else:
                    self.running[name] = square.clone()

    def learned(self, domain: str, network: nn.Module) -> None:
        """An event of `domain` was learned: a switch consolidates the domain left."""
        if not self.enabled or domain == self.domain:
            return
        if self.domain is not None and self.running:
            with torch.no_grad():
                for name, param in network.named_parameters():
                    estimate = self.running.get(name, torch.zeros_like(param))
                    self.fisher[name] = self.fisher.get(name, torch.zeros_like(param)) + estimate
                    self.anchor[name] = param.detach().clone()
            self.running = {}
        self.domain = domain

    def state(self) -> dict[str, Any]:
        """Tensors and the domain: checkpoint-safe."""
        return {
            "domain": self.domain,
            "running": dict(self.running),
            "fisher": dict(self.fisher),
            "anchor": dict(self.anchor),
        }

    def restore(self, state: dict[str, Any], device: torch.device) -> None:
        """Continue from `state()`."""
        self.domain = state["domain"]
        self.running = {k: v.to(device) for k, v in state["running"].items()}
        self.fisher = {k: v.to(device) for k, v in state["fisher"].items()}
        self.anchor = {k: v.to(device) for k, v in state["anchor"].items()}

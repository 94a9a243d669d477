"""Elastic weight consolidation, online: keep weights that mattered to past domains near.

Kirkpatrick et al.'s penalty (lambda / 2) * sum_i F_i (theta_i - theta*_i)^2, in the online
form of Schwarz et al.: the diagonal Fisher information F is estimated as a running average
of squared gradients while a domain is learned; when the stream moves to another domain
(`memory.DomainWindows`) the current weights become the anchor theta* and the running
estimate is added to the consolidated F, whose older part decays by the same factor.
Without a domain switch nothing is consolidated and the penalty is zero.
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
        self.running: dict[str, torch.Tensor] = {}
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        # the weights and running estimate at the last window's end: the next anchor
        self.kept_weights: dict[str, torch.Tensor] = {}
        self.kept_running: dict[str, torch.Tensor] = {}

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

    def window_closed(self, network: nn.Module, switched: bool) -> None:
        """A domain window closed; `switched`: the stream moved to another domain.

        The anchor is the weights at the end of the last window the left domain was
        dominant in (kept at each window's end): by the time a window shows the switch,
        part of it was already learned from the new domain. Older importance decays by
        `decay` at each consolidation, so a stream that keeps changing domains does not
        stiffen the weights without end.
        """
        if not self.enabled:
            return
        with torch.no_grad():
            if switched and self.kept_running:
                for name, param in network.named_parameters():
                    estimate = self.kept_running.get(name, torch.zeros_like(param))
                    old = self.fisher.get(name, torch.zeros_like(param))
                    self.fisher[name] = self.decay * old + estimate
                    self.anchor[name] = self.kept_weights[name]
                self.running = {}  # the new domain's importance starts here
            self.kept_weights = {n: p.detach().clone() for n, p in network.named_parameters()}
            self.kept_running = {n: r.clone() for n, r in self.running.items()}

    def state(self) -> dict[str, Any]:
        """Tensors and the domain: checkpoint-safe."""
        return {
            "running": dict(self.running),
            "fisher": dict(self.fisher),
            "anchor": dict(self.anchor),
            "kept_weights": dict(self.kept_weights),
            "kept_running": dict(self.kept_running),
        }

    def restore(self, state: dict[str, Any], device: torch.device) -> None:
        """Continue from `state()`."""
        self.running = {k: v.to(device) for k, v in state["running"].items()}
        self.fisher = {k: v.to(device) for k, v in state["fisher"].items()}
        self.anchor = {k: v.to(device) for k, v in state["anchor"].items()}
        self.kept_weights = {k: v.to(device) for k, v in state["kept_weights"].items()}
        self.kept_running = {k: v.to(device) for k, v in state["kept_running"].items()}

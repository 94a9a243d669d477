"""What a byte-level language model is and how it learns (hashed into lineage like TrainerConfig).

The default is a small causal transformer: 2 pre-norm layers of width 128, 4 heads, a context
of 128 bytes, trained with AdamW after a short linear warm-up:

    model: {layers: 2, width: 128, heads: 4, context: 128}
    optimizer: {name: adamw, lr: 0.003, warmup_steps: 20}

The trainer's `OptimizerSpec` is not reused: it has no AdamW and no warm-up, and its
`normalized` rule only updates linear models.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.trainer.config import DistillSpec

VOCAB = 256  # every byte value is a token: no tokenizer, nothing to download
STEP_BYTES = 1 << 20  # most text one optimiser step may take (batch_size x max_text_bytes)
REPLAY_BYTES = 256 << 20  # most text the replay reservoir may keep (and checkpoint)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TextOptimizerSpec(_Frozen):
    """Optimizer, gradient clipping and a linear learning-rate warm-up.

    The rate ramps linearly from lr / warmup_steps at the first step to lr at step
    `warmup_steps`, then stays there (0: no warm-up).
    """

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(default=3e-3, gt=0, le=1)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    momentum: float = Field(default=0.0, ge=0, lt=1)  # sgd only
    warmup_steps: int = Field(default=20, ge=0, le=1_000_000)
    # Transformers take the odd huge gradient early on; None switches clipping off.
    clip_norm: float | None = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _momentum_is_sgd(self) -> TextOptimizerSpec:
        if self.momentum and self.name != "sgd":
            raise ValueError(f"momentum applies to sgd only, not {self.name}")
        return self


class TextModelConfig(_Frozen):
    """A byte-level causal transformer and how it learns from a stream of texts.

    The bounds keep every allowed model trainable event by event on a couple of CPU cores;
    the largest (12 x 768, context 1024) is GPT-2 small's shape with a 256-byte vocabulary.
    """

    layers: int = Field(default=2, ge=1, le=12)
    width: int = Field(default=128, ge=8, le=768)
    heads: int = Field(default=4, ge=1, le=16)
    context: int = Field(default=128, ge=2, le=1024)  # bytes a prediction may look back on
    mlp_ratio: int = Field(default=4, ge=1, le=8)
    dropout: float = Field(default=0.0, ge=0, le=0.5)
    tie_embeddings: bool = True  # the 256-way head reuses the byte embedding
    optimizer: TextOptimizerSpec = TextOptimizerSpec()
    # 1: one optimiser step per event; N: one step per N events of a `learn` call.
    batch_size: int = Field(default=1, ge=1, le=256)
    # Longer texts are not learned (counted as skipped) and refused by predict / generate:
    # one hostile event must not be able to take the trainer's memory.
    max_text_bytes: int = Field(default=8192, ge=2, le=1 << 16)
    metrics_window: int = Field(default=1000, ge=10)  # events in the recent-window metrics
    seed: int = Field(default=0, ge=0)
    # Forgetting, controlled: each step also learns `replay_ratio` past texts per new one,
    # drawn from a uniform reservoir of `replay_buffer` texts seen so far (0: no replay).
    replay_ratio: float = Field(default=0.0, ge=0, le=8)
    replay_buffer: int = Field(default=1000, ge=1, le=100_000)
    # Forgetting, measured: every `holdout_every`-th event of each domain (a sample's
    # `domain` attribute) is held out, not learned, up to `holdout_size` per domain; the
    # bits per byte on each domain's held-out texts go with every version (0: none).
    holdout_every: int = Field(default=0, ge=0, le=1_000_000)
    holdout_size: int = Field(default=32, ge=1, le=1024)
    holdout_domains: int = Field(default=16, ge=1, le=256)  # domains held out at most
    # Learned events per window: the stream is on the domain most of a window's events come
    # from; a change between windows is a switch (held-out sets are scored at each window's
    # end, EWC anchors at a switch).
    domain_window: int = Field(default=200, ge=1, le=1_000_000)
    # Forgetting, controlled: online elastic weight consolidation. When the stream moves to
    # another domain, the weights become an anchor that a penalty of strength `ewc_lambda`
    # holds them near, per weight by its running squared gradient (decay `ewc_decay`).
    ewc_lambda: float = Field(default=0.0, ge=0, le=1e6)
    ewc_decay: float = Field(default=0.99, gt=0, lt=1)
    # At a switch of domain, restart the learning-rate warm-up: a new domain is learned
    # at the rate a fresh model starts from (rate re-warm on drift).
    rewarm_on_switch: bool = False
    distill: DistillSpec | None = None  # a teacher's soft targets (None: labels only)
    # Multi-task: a class head on the same trunk learns each text's class label (the
    # sample's class_index) beside its next bytes; 0: none. Its loss weighs `class_weight`.
    classes: int = Field(default=0, ge=0, le=1024)
    class_weight: float = Field(default=1.0, ge=0, le=100)

    @model_validator(mode="after")
    def _holdout_leaves_events_to_learn(self) -> TextModelConfig:
        if self.holdout_every == 1:
            raise ValueError("holdout_every 1 would hold out every event: use 0 (none) or >= 2")
        return self

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TextModelConfig:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        return self

    @model_validator(mode="after")
    def _step_fits_memory(self) -> TextModelConfig:
        # a step's logits alone are 1 KiB per byte (256 float32): keep a step under ~1 GiB,
        # replayed texts included
        texts = self.batch_size * (1 + math.ceil(self.replay_ratio))
        if texts * self.max_text_bytes > STEP_BYTES:
            raise ValueError(
                f"batch_size x (1 + replay_ratio, rounded up) x max_text_bytes = "
                f"{texts * self.max_text_bytes} exceeds {STEP_BYTES} bytes of text per step"
            )
        if self.replay_ratio and self.replay_buffer * self.max_text_bytes > REPLAY_BYTES:
            raise ValueError(
                f"replay_buffer x max_text_bytes = {self.replay_buffer * self.max_text_bytes} "
                f"exceeds {REPLAY_BYTES} bytes kept for replay"
            )
        return self

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.width // self.heads

    def hash(self) -> str:
        """A stable digest of the config, recorded in lineage and checked on restore."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    def to_json(self) -> str:
        """The config as JSON, for lineage and reproduction."""
        return json.dumps(self.model_dump(), sort_keys=True)

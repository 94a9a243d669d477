"""A byte-level causal transformer (GPT-2's layout at a small size) and its serving head.

Byte embeddings plus learned positions, pre-norm blocks (causal self-attention, then an
MLP, each around a residual), a final norm and a 256-way head that reuses the embedding
when `tie_embeddings`. Attention is torch's `scaled_dot_product_attention` with
`is_causal`, which the TorchScript exporter writes as plain ONNX ops with a mask built from
the input's shape, so batch and sequence length stay free in the graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812  # torch's own convention
from torch import nn

from services.trainer.text.config import VOCAB, TextModelConfig

_INIT_STD = 0.02  # GPT-2's


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which a position sees only itself and earlier ones."""

    def __init__(self, config: TextModelConfig) -> None:
        super().__init__()
        self.width = config.width
        self.heads = config.heads
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, W) -> (B, T, W)."""
        batch, length = x.shape[0], x.shape[1]
        width = self.width  # a constant: only batch and length stay free in the ONNX graph
        q, k, v = self.qkv(x).split(width, dim=2)
        q, k, v = (
            t.reshape(batch, length, self.heads, self.head_dim).transpose(1, 2) for t in (q, k, v)
        )
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        out: torch.Tensor = self.proj(y.transpose(1, 2).reshape(batch, length, width))
        return out


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: TextModelConfig) -> None:
        super().__init__()
        hidden = config.mlp_ratio * config.width
        self.norm1 = nn.LayerNorm(config.width)
        self.attn = CausalSelfAttention(config)
        self.norm2 = nn.LayerNorm(config.width)
        self.mlp = nn.Sequential(
            nn.Linear(config.width, hidden), nn.GELU(), nn.Linear(hidden, config.width)
        )
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, W) -> (B, T, W)."""
        x = x + self.drop(self.attn(self.norm1(x)))
        out: torch.Tensor = x + self.drop(self.mlp(self.norm2(x)))
        return out


class ByteTransformer(nn.Module):
    """Byte ids (B, T), T <= context, any integer dtype -> next-byte logits (B, T, 256).

    Position t's logits predict byte t + 1 from bytes 0..t. Callers keep T within the
    context (the learned positions end there) and pad on the right: causal attention
    leaves every position before the padding untouched by it.
    """

    def __init__(self, config: TextModelConfig) -> None:
        super().__init__()
        self.context = config.context
        self.embedding = nn.Embedding(VOCAB, config.width)
        self.positions = nn.Parameter(torch.zeros(config.context, config.width))
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.width)
        self.head = None if config.tie_embeddings else nn.Linear(config.width, VOCAB, bias=False)
        # multi-task: a text class read from the same trunk (created last, so a model
        # without one initialises exactly as before)
        self.classifier = nn.Linear(config.width, config.classes) if config.classes else None
        self._initialise(config.layers)

    def _initialise(self, layers: int) -> None:
        """GPT-2's scheme; residual projections shrink with depth so the stream stays O(1)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=_INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=_INIT_STD)
        nn.init.normal_(self.positions, std=_INIT_STD)
        for block in self.blocks:
            assert isinstance(block, Block)
            for projection in (block.attn.proj, block.mlp[2]):
                assert isinstance(projection, nn.Linear)
                nn.init.normal_(projection.weight, std=_INIT_STD / math.sqrt(2 * layers))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Byte ids (B, T) -> logits (B, T, 256)."""
        return self.next_byte(self.trunk(ids))

    def trunk(self, ids: torch.Tensor) -> torch.Tensor:
        """Byte ids (B, T) -> the shared hidden states (B, T, width) every head reads."""
        # uint8 ids (the ONNX input) cannot index an embedding: widen them (a Cast in ONNX)
        x = self.embedding(ids.long()) + self.positions[: ids.shape[1]]
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        hidden: torch.Tensor = self.norm(x)
        return hidden

    def next_byte(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states -> next-byte logits (B, T, 256)."""
        if self.head is None:
            return F.linear(hidden, self.embedding.weight)
        logits: torch.Tensor = self.head(hidden)
        return logits

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states -> class logits (B, T, classes): position t classifies bytes 0..t."""
        assert self.classifier is not None
        logits: torch.Tensor = self.classifier(hidden)
        return logits


class TextServing(nn.Module):
    """What is exported and served: natural-log next-byte probabilities (B, T, 256).

    With a class head, also the class log-probabilities of the text up to each position
    (B, T, classes): a second output of the same graph.
    """

    def __init__(self, network: ByteTransformer) -> None:
        super().__init__()
        self.network = network

    def forward(self, text: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Byte ids (B, T) uint8 -> log-probabilities (B, T, 256) [and (B, T, classes)]."""
        hidden = self.network.trunk(text)
        logprobs = torch.log_softmax(self.network.next_byte(hidden), dim=-1)
        if self.network.classifier is None:
            return logprobs
        return logprobs, torch.log_softmax(self.network.classify(hidden), dim=-1)


def build(config: TextModelConfig) -> ByteTransformer:
    """The network for `config`, initialised from its seed without touching torch's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return ByteTransformer(config)

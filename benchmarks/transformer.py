"""A small sequence classifier on token ids, the transformer of the NTK and Recorder-overhead benchmarks.

``TokenClassifier(vocab, length, width, depth, heads, classes)``: token embedding + learned positions,
``depth`` pre-norm blocks (LayerNorm → self-attention, LayerNorm → GELU MLP of 4·width), a final
LayerNorm, mean over positions and a linear head: logits (N, classes) for int64 token ids (N, length).
Attention is ``nn.MultiheadAttention`` (``attention="mha"``) or the same computation written out
(``"manual"``: softmax(QKᵀ/√d)V per head), which forward-mode AD — and so the NTK-vector products —
can go through (nn.MultiheadAttention's native kernel in eval mode has no forward-mode derivative).
``size(...)`` gives its parameter count; :func:`issue_transformer` is the 410k-parameter one of issue
21 (vocabulary 64, 32 tokens, width 128, 2 blocks, 4 heads, 10 classes: 410,378 parameters).
"""

from __future__ import annotations

import torch
from torch import nn


class ManualAttention(nn.Module):
    """Multi-head self-attention written out (same parameters as nn.MultiheadAttention's in/out projections)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.heads = heads

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, length, width = h.shape
        q, k, v = self.qkv(h).reshape(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-1, -2) / (width // self.heads) ** 0.5, dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(n, length, width))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, attention: str = "mha"):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True) if attention == "mha" \
            else ManualAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = self.norm1(h)
        attended = self.attn(a, a, a, need_weights=False)[0] if isinstance(self.attn, nn.MultiheadAttention) \
            else self.attn(a)
        h = h + attended
        return h + self.mlp(self.norm2(h))


class TokenClassifier(nn.Module):
    def __init__(self, vocab: int = 64, length: int = 32, width: int = 128, depth: int = 2, heads: int = 4,
                 classes: int = 10, seed: int = 0, attention: str = "mha"):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(0.02 * torch.randn(length, width))
        self.blocks = nn.Sequential(*(Block(width, heads, attention) for _ in range(depth)))
        self.final = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)
        self.vocab, self.length = vocab, length

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.embed(tokens) + self.position)
        return self.head(self.final(h).mean(1))


def issue_transformer(attention: str = "mha") -> TokenClassifier:
    return TokenClassifier(64, 32, 128, 2, 4, 10, attention=attention)


def tokens(model: TokenClassifier, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, model.vocab, (n, model.length), generator=torch.Generator().manual_seed(seed))


def size(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

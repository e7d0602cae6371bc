"""Small members of the model families researchers bring (the model-family matrix of issue 21 §2).

Every factory takes a ``dtype`` and returns ``(model, make_inputs)`` where ``make_inputs(n, seed)``
gives n input samples in the structure the model's forward takes. All models return one row per
sample (eval mode), seeded, a few hundred parameters: fast enough for dense reference Jacobians.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

VOCAB, LENGTH, WIDTH = 7, 4, 8


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _floats(shape, dtype):
    return lambda n, seed: torch.randn((n,) + tuple(shape), generator=_gen(seed), dtype=torch.float64).to(dtype)


def _tokens(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, LENGTH), generator=_gen(seed))


def mlp(dtype=torch.float64):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)
    return model, _floats((4,), dtype)


class SmallCNN(nn.Module):
    """Conv2d → BatchNorm2d → ReLU → Dropout → Linear (running statistics made non-trivial)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(3 * 16, 3)
        with torch.no_grad():
            self.norm.running_mean.uniform_(-0.5, 0.5)
            self.norm.running_var.uniform_(0.5, 2.0)
            self.norm.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        return self.head(self.drop(self.act(self.norm(self.conv(x)))).flatten(1))


def cnn(dtype=torch.float64):
    torch.manual_seed(0)
    return SmallCNN().to(dtype), _floats((1, 4, 4), dtype)


class SDPABlock(nn.Module):
    """Self-attention through F.scaled_dot_product_attention (one head, causal)."""

    def __init__(self, width):
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, h):
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        return self.out(F.scaled_dot_product_attention(q, k, v, is_causal=True))


class TinyTransformer(nn.Module):
    """Token embedding + learned positions, a LayerNorm/nn.MultiheadAttention block, a LayerNorm/SDPA
    block, a GELU MLP, a final LayerNorm and a readout tied to the embedding: per-token logits
    (N, LENGTH, VOCAB). ``forward(input_ids, attention_mask=None)`` (mask: 1 = keep)."""

    def __init__(self, vocab=VOCAB, length=LENGTH, width=WIDTH):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(0.1 * torch.randn(length, width))
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.sdpa = SDPABlock(width)
        self.norm3 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.final = nn.LayerNorm(width)
        self.readout = nn.Linear(width, vocab, bias=False)
        self.readout.weight = self.embed.weight          # weight tying: one parameter, two modules

    def forward(self, input_ids, attention_mask=None):
        h = self.embed(input_ids) + self.position
        a = self.norm1(h)
        padding = None if attention_mask is None else attention_mask == 0
        h = h + self.attn(a, a, a, key_padding_mask=padding, need_weights=False)[0]
        h = h + self.sdpa(self.norm2(h))
        h = h + self.mlp(self.norm3(h))
        return self.readout(self.final(h))


def transformer(dtype=torch.float64):
    torch.manual_seed(0)
    return TinyTransformer().to(dtype), _tokens


def _dict_tokens(n: int, seed: int) -> dict[str, torch.Tensor]:
    ids = _tokens(n, seed)
    mask = torch.ones_like(ids)
    mask[::2, -2:] = 0                                   # padded tails on every other sample
    return {"input_ids": ids, "attention_mask": mask}


class DictOutput(nn.Module):
    """A Hugging Face-like wrapper: keyword inputs, a dict output with ``logits`` and ``hidden``."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None):
        logits = self.inner(input_ids, attention_mask)
        return {"hidden": logits.detach().sum(-1), "logits": logits}


def transformer_dict(dtype=torch.float64):
    torch.manual_seed(0)
    return DictOutput(TinyTransformer().to(dtype)), _dict_tokens


class TwoInputs(nn.Module):
    """Positional inputs (features float, tokens int): a tuple input."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 4)
        self.lin = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, features, tokens):
        return self.head(torch.tanh(self.lin(features) + self.embed(tokens).mean(1)))


def two_inputs(dtype=torch.float64):
    torch.manual_seed(0)
    floats = _floats((4,), dtype)
    return TwoInputs().to(dtype), lambda n, seed: (floats(n, seed), _tokens(n, seed + 1))


class GRUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out[:, -1])


def gru(dtype=torch.float64):
    torch.manual_seed(0)
    return GRUNet().to(dtype), _floats((4, 3), dtype)


def frozen(dtype=torch.float64):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)
    model[0].requires_grad_(False)
    model[4].bias.requires_grad_(False)
    return model, _floats((4,), dtype)


class Shared(nn.Module):
    """One Linear used by two modules (registered twice) and run twice per pass."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 5)
        self.shared = nn.Linear(5, 5)
        self.branch = nn.Sequential(self.shared, nn.Tanh())   # the same module under a second name
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.head(self.branch(self.shared(h)))


def shared(dtype=torch.float64):
    torch.manual_seed(0)
    return Shared().to(dtype), _floats((4,), dtype)


class Buffers(nn.Module):
    """A standardising buffer, a non-persistent buffer and an integer step counter."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.linspace(-1, 1, 4))
        self.register_buffer("scale", torch.tensor(1.7), persistent=False)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin((x - self.mean) * self.scale).tanh()


def buffers(dtype=torch.float64):
    torch.manual_seed(0)
    return Buffers().to(dtype), _floats((4,), dtype)


class Checkpointed(nn.Module):
    """Activation checkpointing of the hidden block (reentrant or not)."""

    def __init__(self, reentrant: bool):
        super().__init__()
        self.inp = nn.Linear(4, 6)
        self.hidden = nn.Sequential(nn.Linear(6, 6), nn.Tanh())
        self.head = nn.Linear(6, 3)
        self.reentrant = reentrant

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        h = checkpoint(self.hidden, h, use_reentrant=self.reentrant)
        return self.head(h)


def checkpointed(dtype=torch.float64):
    torch.manual_seed(0)
    return Checkpointed(False).to(dtype), _floats((4,), dtype)


def checkpointed_reentrant(dtype=torch.float64):
    torch.manual_seed(0)
    return Checkpointed(True).to(dtype), _floats((4,), dtype)


class Named(nn.Module):
    """Module names with slashes, dots (nesting) and non-ASCII letters."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleDict({"enc/0": nn.Linear(4, 5), "größe": nn.Linear(5, 5), "a__b": nn.Linear(5, 3)})
        self.act = nn.Tanh()

    def forward(self, x):
        h = self.act(self.blocks["enc/0"](x))
        h = self.act(self.blocks["größe"](h))
        return self.blocks["a__b"](h)


def named(dtype=torch.float64):
    torch.manual_seed(0)
    return Named().to(dtype), _floats((4,), dtype)


#: family name → factory(dtype) → (model, make_inputs)
FAMILIES = {
    "mlp": mlp, "cnn": cnn, "transformer": transformer, "transformer_dict": transformer_dict,
    "two_inputs": two_inputs, "gru": gru, "frozen": frozen, "shared": shared, "buffers": buffers,
    "checkpointed": checkpointed, "checkpointed_reentrant": checkpointed_reentrant, "named": named,
}

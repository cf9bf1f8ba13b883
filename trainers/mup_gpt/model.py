"""A GPT-style decoder whose width is a parameter, built in SP or muP (see parametrization.py).

Pre-norm blocks with a *non-parametric* RMSNorm (no gains: trainable gains hurt muP transfer
in Lingle 2024), causal attention with a parametrization-given scale, a GELU MLP, learned
position embeddings, no biases, an untied readout. Byte-level: the vocabulary is 256.

``forward(tokens, taps)`` fills ``taps`` (when given) with the activations the coordinate check
measures: the embedding, each block's attention and MLP output, and the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainers.mup_gpt.parametrization import (
    Parametrization,
    Shape,
    attention_scale,
    initialise,
    output_scale,
)

VOCAB_SIZE = 256
_NORM_EPS = 1e-6


@dataclass(frozen=True)
class Architecture:
    width: int
    depth: int
    heads: int
    mlp_ratio: int
    seq_len: int
    base_width: int
    base_head_dim: int
    vocab_size: int = VOCAB_SIZE

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def shape(self) -> Shape:
        return Shape(self.width, self.base_width, self.head_dim, self.base_head_dim)


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm without a gain: nothing width-dependent to learn, nothing to parametrize."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + _NORM_EPS)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, scale: float) -> None:
        super().__init__()
        self.heads, self.scale = heads, scale
        self.query = nn.Linear(width, width, bias=False)
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width, bias=False)
        self.out = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.out(y.transpose(1, 2).reshape(batch, length, width))


class MLP(nn.Module):
    def __init__(self, width: int, ratio: int) -> None:
        super().__init__()
        self.fc_in = nn.Linear(width, ratio * width, bias=False)
        self.fc_out = nn.Linear(ratio * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.gelu(self.fc_in(x)))


class Block(nn.Module):
    def __init__(self, arch: Architecture, attn_scale: float) -> None:
        super().__init__()
        self.attn = Attention(arch.width, arch.heads, attn_scale)
        self.mlp = MLP(arch.width, arch.mlp_ratio)

    def forward(self, x: torch.Tensor, taps: dict[str, torch.Tensor] | None, prefix: str) -> torch.Tensor:
        attn_out = self.attn(rms_norm(x))
        x = x + attn_out
        mlp_out = self.mlp(rms_norm(x))
        if taps is not None:
            taps[f"{prefix}.attn"], taps[f"{prefix}.mlp"] = attn_out.detach(), mlp_out.detach()
        return x + mlp_out


class GPT(nn.Module):
    def __init__(self, arch: Architecture, parametrization: Parametrization, output_multiplier: float) -> None:
        super().__init__()
        self.arch, self.parametrization = arch, parametrization
        self.token_embedding = nn.Embedding(arch.vocab_size, arch.width)
        self.position_embedding = nn.Embedding(arch.seq_len, arch.width)
        scale = attention_scale(parametrization, arch.shape)
        self.blocks = nn.ModuleList(Block(arch, scale) for _ in range(arch.depth))
        self.readout = nn.Linear(arch.width, arch.vocab_size, bias=False)
        self.logit_scale = output_scale(parametrization, arch.shape, output_multiplier)

    def forward(self, tokens: torch.Tensor, taps: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        if taps is not None:
            taps["embedding"] = x.detach()
        for index, block in enumerate(self.blocks):
            x = block(x, taps, f"block{index}")
        logits = self.readout(rms_norm(x)) * self.logit_scale
        if taps is not None:
            taps["logits"] = logits.detach()
        return logits

    def loss(self, window: torch.Tensor, taps: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Mean next-byte cross-entropy (nats) of a batch of ``seq_len + 1``-byte windows."""
        logits = self(window[:, :-1], taps)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))


def build_model(
    arch: Architecture, parametrization: Parametrization, *, init_std: float, output_multiplier: float, seed: int,
    zero_readout: bool = True,
) -> GPT:
    """A freshly initialised model on the CPU; the same seed gives the same weights on every host."""
    model = GPT(arch, parametrization, output_multiplier)
    generator = torch.Generator().manual_seed(seed)
    initialise(model, parametrization, arch.shape, init_std=init_std, generator=generator,
               zero_readout=zero_readout)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def activation_scales(model: GPT, window: torch.Tensor) -> dict[str, float]:
    """Mean |coordinate| of every tapped activation: the quantity the coordinate check plots."""
    taps: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        model.loss(window, taps)
    return {name: value.float().abs().mean().item() for name, value in taps.items()}

"""Standard parametrization (SP) and muP for the decoder, as pure rules plus two small appliers.

muP (Tensor Programs V, Yang et al. 2022, Table 3, Adam column; with the choices of Lingle 2024,
"A Large-Scale Exploration of mu-Transfer") relative to a base shape, with ``m = width /
base_width``, base init std ``sigma``, base Adam LR ``eta`` and output multiplier ``alpha``:

============  ==================  ===========  =====================================
role          init std            Adam LR      forward
============  ==================  ===========  =====================================
embedding     sigma               eta          token + position embeddings, unscaled
query         0                   eta / m      zero-init: attention starts uniform
hidden        sigma / sqrt(m)     eta / m      key, value, out, MLP in/out
readout       0 (or sigma)        eta          logits * alpha / m
attention     -                   -            q.k * sqrt(base_head_dim) / head_dim
============  ==================  ===========  =====================================

SP (GPT-2 style) is the same model with every matrix at init std ``sigma``, LR ``eta``, logits
times ``alpha`` and attention scaled by ``1 / sqrt(head_dim)``. At ``width == base_width`` the
two agree except for the zero-initialised query and readout.

Weight decay is *independent* of the learning rate in both (Lingle 2024; Wortsman et al. 2023):
each step shrinks every matrix by ``weight_decay * schedule(t)``, whatever its group's LR.
PyTorch's AdamW shrinks by ``lr_t * wd``, so a group gets ``wd = weight_decay / peak_lr``.
The model has no norm gains (non-parametric RMSNorm) and no biases, so every parameter is a
matrix with one of the four roles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

Parametrization = Literal["mup", "sp"]
Role = Literal["embedding", "query", "hidden", "readout"]
ROLES: tuple[Role, ...] = ("embedding", "query", "hidden", "readout")


@dataclass(frozen=True)
class Shape:
    width: int
    base_width: int
    head_dim: int
    base_head_dim: int

    @property
    def width_mult(self) -> float:
        return self.width / self.base_width


@dataclass(frozen=True)
class Rule:
    """How one role is initialised and trained."""

    init_std: float  # 0.0 means zero-initialised
    lr: float  # peak Adam LR of the group
    weight_decay: float  # AdamW's coefficient: independent decay / lr


def rule_for(
    role: Role, parametrization: Parametrization, shape: Shape, *, learning_rate: float, init_std: float,
    weight_decay: float = 0.0, zero_readout: bool = True,
) -> Rule:
    """The init std, peak LR and AdamW decay coefficient of a parameter of ``role``.

    ``zero_readout=False`` (muP only) draws the readout at std ``sigma`` instead of zero: still
    muP, since the ``alpha / m`` multiplier makes the initial logits vanish as the width grows,
    and equal to SP at the base width. It avoids the unigram plateau a zero readout causes in
    short runs (docs/mup.md).
    """
    if parametrization == "sp":
        std, lr = init_std, learning_rate
    else:
        m = shape.width_mult
        std, lr = {
            "embedding": (init_std, learning_rate),
            "query": (0.0, learning_rate / m),
            "hidden": (init_std / math.sqrt(m), learning_rate / m),
            "readout": (0.0 if zero_readout else init_std, learning_rate),
        }[role]
    return Rule(init_std=std, lr=lr, weight_decay=weight_decay / lr)


def attention_scale(parametrization: Parametrization, shape: Shape) -> float:
    """The factor on q.k: 1/sqrt(d_head) in SP, 1/d_head (equal to SP at the base shape) in muP."""
    if parametrization == "sp":
        return 1.0 / math.sqrt(shape.head_dim)
    return math.sqrt(shape.base_head_dim) / shape.head_dim


def output_scale(parametrization: Parametrization, shape: Shape, output_multiplier: float) -> float:
    """The factor on the logits: alpha in SP, alpha / m in muP."""
    if parametrization == "sp":
        return output_multiplier
    return output_multiplier / shape.width_mult


def role_of(name: str) -> Role:
    """The role of a parameter of ``model.GPT``, from its name."""
    if name in ("token_embedding.weight", "position_embedding.weight"):
        return "embedding"
    if name == "readout.weight":
        return "readout"
    if name.endswith(".attn.query.weight"):
        return "query"
    if name.endswith((".attn.key.weight", ".attn.value.weight", ".attn.out.weight", ".mlp.fc_in.weight",
                      ".mlp.fc_out.weight")):
        return "hidden"
    raise ValueError(f"parameter {name!r} has no muP role; add it to parametrization.role_of")


def initialise(
    model: nn.Module, parametrization: Parametrization, shape: Shape, *, init_std: float,
    generator: torch.Generator, zero_readout: bool = True,
) -> None:
    """Draw every parameter from N(0, std^2) of its role (or zero), in name order, from ``generator``."""
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            rule = rule_for(role_of(name), parametrization, shape, learning_rate=1.0, init_std=init_std,
                            zero_readout=zero_readout)
            if rule.init_std == 0.0:
                parameter.zero_()
            else:
                parameter.normal_(0.0, rule.init_std, generator=generator)


def param_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]], parametrization: Parametrization, shape: Shape, *,
    learning_rate: float, weight_decay: float,
) -> list[dict[str, Any]]:
    """AdamW param groups, one per role present, in ``ROLES`` order.

    Each group carries ``peak_lr`` (the schedule multiplies it), ``role`` and ``names`` (the
    parameter names in order, so checkpoints address optimizer state by name).
    """
    by_role: dict[Role, list[tuple[str, nn.Parameter]]] = {role: [] for role in ROLES}
    for name, parameter in named_parameters:
        by_role[role_of(name)].append((name, parameter))
    groups = []
    for role in ROLES:
        members = sorted(by_role[role], key=lambda item: item[0])
        if not members:
            continue
        rule = rule_for(role, parametrization, shape, learning_rate=learning_rate, init_std=1.0,
                        weight_decay=weight_decay)
        groups.append({
            "params": [parameter for _, parameter in members], "names": [name for name, _ in members],
            "role": role, "lr": rule.lr, "peak_lr": rule.lr, "weight_decay": rule.weight_decay,
        })
    return groups

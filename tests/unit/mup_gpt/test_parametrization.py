"""The SP and muP rules, case by case, and that the model and optimizer are built by them."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from trainers.mup_gpt.model import Architecture, build_model
from trainers.mup_gpt.parametrization import (
    ROLES,
    Parametrization,
    Role,
    Shape,
    attention_scale,
    output_scale,
    param_groups,
    role_of,
    rule_for,
)
from trainers.mup_gpt.training import architecture_for

ETA, SIGMA, DECAY = 0.01, 0.02, 1e-4
BASE = 64

# (parametrization, role, width) -> (init std, Adam LR), at base width 64, eta 0.01, sigma 0.02.
RULES: list[tuple[Parametrization, Role, int, float, float]] = [
    # muP, m = width / 64: embeddings unscaled, hidden std / sqrt(m) and LR / m, query and readout zero
    ("mup", "embedding", 32, 0.02, 0.01),
    ("mup", "embedding", 64, 0.02, 0.01),
    ("mup", "embedding", 256, 0.02, 0.01),
    ("mup", "hidden", 32, 0.02 * math.sqrt(2), 0.02),
    ("mup", "hidden", 64, 0.02, 0.01),
    ("mup", "hidden", 128, 0.02 / math.sqrt(2), 0.005),
    ("mup", "hidden", 256, 0.01, 0.0025),
    ("mup", "hidden", 1024, 0.005, 0.000625),
    ("mup", "query", 32, 0.0, 0.02),
    ("mup", "query", 256, 0.0, 0.0025),
    ("mup", "readout", 32, 0.0, 0.01),
    ("mup", "readout", 256, 0.0, 0.01),
    ("mup", "readout", 1024, 0.0, 0.01),
    # SP: one init std and one LR for every matrix, at every width
    ("sp", "embedding", 256, 0.02, 0.01),
    ("sp", "query", 32, 0.02, 0.01),
    ("sp", "hidden", 32, 0.02, 0.01),
    ("sp", "hidden", 1024, 0.02, 0.01),
    ("sp", "readout", 1024, 0.02, 0.01),
]


def shape(width: int, head_dim: int = 16, base_head_dim: int = 16) -> Shape:
    return Shape(width=width, base_width=BASE, head_dim=head_dim, base_head_dim=base_head_dim)


@pytest.mark.parametrize(("parametrization", "role", "width", "std", "lr"), RULES)
def test_rule_table(parametrization: Parametrization, role: Role, width: int, std: float, lr: float) -> None:
    rule = rule_for(role, parametrization, shape(width), learning_rate=ETA, init_std=SIGMA, weight_decay=DECAY)
    assert rule.init_std == pytest.approx(std, rel=1e-12, abs=0.0)
    assert rule.lr == pytest.approx(lr, rel=1e-12)
    # Independent decay: AdamW shrinks by lr * wd, which must be DECAY whatever the group's LR.
    assert rule.lr * rule.weight_decay == pytest.approx(DECAY, rel=1e-12)


@pytest.mark.parametrize(("parametrization", "width"), [("mup", 32), ("mup", 256), ("sp", 256)])
def test_a_normal_readout_is_drawn_at_init_std_whatever_the_width(parametrization: Parametrization,
                                                                   width: int) -> None:
    rule = rule_for("readout", parametrization, shape(width), learning_rate=ETA, init_std=SIGMA, zero_readout=False)
    assert (rule.init_std, rule.lr) == (SIGMA, ETA)  # muP: the alpha / m multiplier shrinks the logits


@pytest.mark.parametrize("role", ROLES)
def test_mup_equals_sp_at_base_width_except_the_zero_inits(role: Role) -> None:
    mup = rule_for(role, "mup", shape(BASE), learning_rate=ETA, init_std=SIGMA)
    sp = rule_for(role, "sp", shape(BASE), learning_rate=ETA, init_std=SIGMA)
    assert mup.lr == sp.lr
    assert mup.init_std == (0.0 if role in ("query", "readout") else sp.init_std)


@pytest.mark.parametrize(
    ("parametrization", "head_dim", "base_head_dim", "expected"),
    [
        ("sp", 16, 16, 0.25),  # 1/sqrt(16)
        ("sp", 64, 16, 0.125),  # 1/sqrt(64)
        ("mup", 16, 16, 0.25),  # equal to SP at the base shape
        ("mup", 64, 16, 0.0625),  # sqrt(16)/64: 1/d_head scaling as the head grows
        ("mup", 8, 32, math.sqrt(32) / 8),
    ],
)
def test_attention_scale(parametrization: Parametrization, head_dim: int, base_head_dim: int, expected: float) -> None:
    assert attention_scale(parametrization, shape(256, head_dim, base_head_dim)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("parametrization", "width", "multiplier", "expected"),
    [("sp", 256, 2.0, 2.0), ("sp", 32, 1.0, 1.0), ("mup", 64, 1.0, 1.0), ("mup", 256, 2.0, 0.5),
     ("mup", 32, 1.0, 2.0), ("mup", 1024, 8.0, 0.5)],
)
def test_output_scale(parametrization: Parametrization, width: int, multiplier: float, expected: float) -> None:
    assert output_scale(parametrization, shape(width), multiplier) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("name", "role"),
    [("token_embedding.weight", "embedding"), ("position_embedding.weight", "embedding"),
     ("blocks.0.attn.query.weight", "query"), ("blocks.3.attn.key.weight", "hidden"),
     ("blocks.0.attn.value.weight", "hidden"), ("blocks.1.attn.out.weight", "hidden"),
     ("blocks.0.mlp.fc_in.weight", "hidden"), ("blocks.0.mlp.fc_out.weight", "hidden"),
     ("readout.weight", "readout")],
)
def test_role_of(name: str, role: Role) -> None:
    assert role_of(name) == role


def test_a_parameter_without_a_role_is_refused() -> None:
    with pytest.raises(ValueError, match="no muP role"):
        role_of("blocks.0.norm.weight")


def _arch(width: int, heads: int | None = None) -> Architecture:
    return Architecture(width=width, depth=2, heads=heads or width // 16, mlp_ratio=4, seq_len=32,
                        base_width=BASE, base_head_dim=16)


@pytest.mark.parametrize("zero_readout", [True, False])
@pytest.mark.parametrize("parametrization", ["mup", "sp"])
@pytest.mark.parametrize("width", [32, 256])
def test_model_is_initialised_by_the_rules(parametrization: Parametrization, width: int, zero_readout: bool) -> None:
    arch = _arch(width)
    model = build_model(arch, parametrization, init_std=SIGMA, output_multiplier=1.0, seed=0,
                        zero_readout=zero_readout)
    for name, parameter in model.named_parameters():
        rule = rule_for(role_of(name), parametrization, arch.shape, learning_rate=ETA, init_std=SIGMA,
                        zero_readout=zero_readout)
        if rule.init_std == 0.0:
            assert torch.count_nonzero(parameter) == 0, name
        else:  # >= 1024 draws per tensor: 10% is 4.5 standard errors of the sample std (and seed 0 is fixed)
            assert parameter.std().item() == pytest.approx(rule.init_std, rel=0.1), name
    assert model.blocks[0].attn.scale == attention_scale(parametrization, arch.shape)
    assert model.logit_scale == output_scale(parametrization, arch.shape, 1.0)


def test_init_is_a_function_of_the_seed() -> None:
    def weights(seed: int) -> torch.Tensor:
        model = build_model(_arch(64), "mup", init_std=SIGMA, output_multiplier=1.0, seed=seed)
        return torch.cat([parameter.flatten() for _, parameter in sorted(model.named_parameters())])

    assert torch.equal(weights(3), weights(3))
    assert not torch.equal(weights(3), weights(4))


@pytest.mark.parametrize("parametrization", ["mup", "sp"])
def test_param_groups_cover_every_parameter_once(parametrization: Parametrization) -> None:
    arch = _arch(256)
    model = build_model(arch, parametrization, init_std=SIGMA, output_multiplier=1.0, seed=0)
    groups = param_groups(model.named_parameters(), parametrization, arch.shape, learning_rate=ETA,
                          weight_decay=DECAY)
    names = [name for group in groups for name in group["names"]]
    assert sorted(names) == sorted(name for name, _ in model.named_parameters())
    assert len(names) == len(set(names))
    for group in groups:
        assert group["lr"] == group["peak_lr"] == rule_for(group["role"], parametrization, arch.shape,
                                                          learning_rate=ETA, init_std=SIGMA).lr
    assert [group["role"] for group in groups] == list(ROLES)


def test_weight_decay_is_independent_of_each_groups_learning_rate() -> None:
    """With zero gradients AdamW only decays: every matrix shrinks by the same 1 - DECAY."""
    arch = _arch(256)  # m = 4: the groups' LRs differ by 4x
    model = build_model(arch, "mup", init_std=SIGMA, output_multiplier=1.0, seed=0)
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    optimizer = torch.optim.AdamW(param_groups(model.named_parameters(), "mup", arch.shape, learning_rate=ETA,
                                               weight_decay=DECAY))
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.detach(), before[name] * (1 - DECAY), rtol=1e-6, atol=0.0)


@pytest.mark.parametrize(
    ("overrides", "width", "heads", "head_dim", "base_head_dim"),
    [
        ({"head_dim": 16}, 256, 16, 16, 16),  # fixed head size: more heads as width grows
        ({"heads": 2, "head_dim": None}, 256, 2, 128, 16),  # fixed heads: the head grows, 1/d matters
        ({"head_dim": None}, 128, 2, 64, 32),  # default head size 64 (capped at the width)
    ],
)
def test_architecture_for_width(
    make_config: Callable[..., Any], overrides: dict[str, Any], width: int, heads: int, head_dim: int,
    base_head_dim: int,
) -> None:
    arch = architecture_for(make_config(**overrides), width)
    assert (arch.heads, arch.head_dim, arch.base_head_dim) == (heads, head_dim, base_head_dim)

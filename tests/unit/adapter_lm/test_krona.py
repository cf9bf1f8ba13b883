"""KronA: factor shapes and counts from the paper's formula, the efficient forward, gradients."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from trainers.adapter_lm.adapters import adapter_state_dict, load_adapter_state_dict
from trainers.adapter_lm.adapters.krona import (
    KronaLinear,
    explicit_forward,
    factor_shapes,
    inject_krona,
    kron_matmul,
    krona_param_count,
    nearest_divisor,
)


@pytest.mark.parametrize(
    ("out_f", "in_f", "a_out", "a_in", "expected"),
    [
        (64, 64, 8, 8, (8, 8, 8, 8)),
        (128, 64, 16, 4, (16, 4, 8, 16)),
        (2048, 5632, 32, 64, (32, 64, 64, 88)),
        (96, 60, 10, 7, (12, 6, 8, 10)),  # 10 -> 12 of 96 (ratio 1.2 beats 8: 1.25), 7 -> 6 of 60
    ],
)
def test_factor_shapes_multiply_to_the_layer(out_f: int, in_f: int, a_out: int, a_in: int,
                                             expected: tuple[int, int, int, int]) -> None:
    a1, a2, b1, b2 = factor_shapes(out_f, in_f, a_out, a_in)
    assert (a1, a2, b1, b2) == expected
    assert a1 * b1 == out_f and a2 * b2 == in_f


def test_nearest_divisor_prefers_the_closer_ratio() -> None:
    assert nearest_divisor(64, 8) == 8 and nearest_divisor(60, 7) == 6
    assert nearest_divisor(7, 3) == 7 and nearest_divisor(7, 2) == 1  # prime widths: 1 or all


def test_parameter_count_is_a1_a2_plus_b1_b2() -> None:
    layer = KronaLinear(nn.Linear(64, 128), a_out=16, a_in=4, alpha=1.0, dropout=0.0)
    trainable = sum(p.numel() for n, p in layer.named_parameters() if not n.startswith("base_layer"))
    assert trainable == 16 * 4 + 8 * 16 == krona_param_count(128, 64, 16, 4)


@pytest.mark.parametrize("shapes", [((3, 4), (5, 2)), ((2, 6), (4, 3)), ((7, 1), (1, 9))])
def test_kron_matmul_equals_the_materialised_kronecker_product(shapes: tuple[tuple[int, int], ...]) -> None:
    torch.manual_seed(0)
    a, b = torch.randn(*shapes[0], dtype=torch.float64), torch.randn(*shapes[1], dtype=torch.float64)
    x = torch.randn(2, 5, a.shape[1] * b.shape[1], dtype=torch.float64)
    assert torch.allclose(kron_matmul(x, a, b), x @ torch.kron(a, b).t())


def _trained_layer(dtype: torch.dtype = torch.float64) -> KronaLinear:
    torch.manual_seed(1)
    layer = KronaLinear(nn.Linear(12, 8), a_out=4, a_in=3, alpha=2.0, dropout=0.0).to(dtype)
    with torch.no_grad():
        layer.krona_B.normal_()  # B starts at zero; give the update something to show
    return layer


def test_efficient_forward_equals_the_explicit_delta_w_forward() -> None:
    layer = _trained_layer()
    x = torch.randn(3, 7, 12, dtype=torch.float64)
    assert torch.allclose(layer(x), explicit_forward(layer, x))
    assert layer.delta_weight().shape == (8, 12)


def test_the_update_starts_at_zero() -> None:
    layer = KronaLinear(nn.Linear(12, 8), a_out=4, a_in=3, alpha=1.0, dropout=0.0)
    x = torch.randn(2, 12)
    assert torch.equal(layer(x), layer.base_layer(x))


def test_gradcheck_float64() -> None:
    layer = _trained_layer()
    x = torch.randn(2, 12, dtype=torch.float64, requires_grad=True)

    def run(inputs: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return layer.base_layer(inputs) + layer.scale * kron_matmul(inputs, a, b)

    a = layer.krona_A.detach().clone().requires_grad_(True)
    b = layer.krona_B.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(run, (x, a, b))


def test_inject_freezes_the_base_and_round_trips_state(tiny_model: Any) -> None:
    targets = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"]
    inject_krona(tiny_model, targets, a_out=8, a_in=8)
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert trainable == {f"{t}.{p}" for t in targets for p in ("krona_A", "krona_B")}
    state = {k: torch.randn_like(v) for k, v in adapter_state_dict(tiny_model).items()}
    load_adapter_state_dict(tiny_model, state)
    assert all(torch.equal(adapter_state_dict(tiny_model)[k], v) for k, v in state.items())
    with pytest.raises(KeyError):
        load_adapter_state_dict(tiny_model, {k: v for k, v in list(state.items())[1:]})

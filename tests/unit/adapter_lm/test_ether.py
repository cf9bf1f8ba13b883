"""ETHER / ETHER+: parameter counts, reflection properties, the efficient forward, gradients."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from trainers.adapter_lm.adapters.ether import (
    EtherLinear,
    _reflect,
    ether_param_count,
    householder_matrix,
    inject_ether,
)


@pytest.mark.parametrize(("plus", "two_sided"), [(False, False), (True, False), (False, True), (True, True)])
def test_parameter_count_follows_the_paper(plus: bool, two_sided: bool) -> None:
    layer = EtherLinear(nn.Linear(16, 8), n_blocks=4, plus=plus, two_sided=two_sided)
    trainable = sum(p.numel() for n, p in layer.named_parameters() if not n.startswith("base_layer"))
    assert trainable == ether_param_count(8, 16, plus, two_sided)
    assert ether_param_count(8, 16, False, False) == 16  # n_blocks does not change it


def test_ether_blocks_are_orthogonal_reflections_at_fixed_distance() -> None:
    u = torch.randn(4, 5, dtype=torch.float64)
    h = householder_matrix(u, None)
    eye = torch.eye(20, dtype=torch.float64)
    assert torch.allclose(h @ h.t(), eye)
    assert torch.allclose(torch.linalg.matrix_norm(h - eye), torch.tensor(2.0 * 4**0.5, dtype=torch.float64))


def test_ether_plus_starts_at_the_identity() -> None:
    layer = EtherLinear(nn.Linear(16, 8), n_blocks=2, plus=True, two_sided=True)
    x = torch.randn(3, 16)
    assert torch.allclose(layer(x), layer.base_layer(x), atol=1e-6)


def test_reflect_matches_the_block_diagonal_matrix() -> None:
    u, v = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    x = torch.randn(5, 12, dtype=torch.float64)
    assert torch.allclose(_reflect(x, u, None), x @ householder_matrix(u, None).t())
    assert torch.allclose(_reflect(x, u, v), x @ householder_matrix(u, v).t())


@pytest.mark.parametrize(("plus", "two_sided"), [(False, False), (True, True), (False, True)])
def test_efficient_forward_equals_the_explicit_weight_forward(plus: bool, two_sided: bool) -> None:
    torch.manual_seed(0)
    layer = EtherLinear(nn.Linear(12, 8), n_blocks=4, plus=plus, two_sided=two_sided).double()
    with torch.no_grad():
        for name, param in layer.named_parameters():
            if name.startswith("ether_v"):
                param.normal_()  # move ETHER+ off the identity
    x = torch.randn(2, 3, 12, dtype=torch.float64)
    explicit = x @ layer.transformed_weight().t() + layer.base_layer.bias
    assert torch.allclose(layer(x), explicit)


def test_gradcheck_float64() -> None:
    torch.manual_seed(0)
    layer = EtherLinear(nn.Linear(6, 4), n_blocks=2, plus=True, two_sided=True).double()
    x = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_(True) for n, p in layer.named_parameters() if n.startswith("ether")]
    with torch.no_grad():
        params[1].normal_()
        params[3].normal_()

    def run(inputs: torch.Tensor, u_in: torch.Tensor, v_in: torch.Tensor, u_out: torch.Tensor,
            v_out: torch.Tensor) -> torch.Tensor:
        hidden = _reflect(inputs, u_in, v_in) @ layer.base_layer.weight.t()
        return _reflect(hidden, u_out, v_out) + layer.base_layer.bias

    assert torch.autograd.gradcheck(run, (x, *params))


def test_blocks_must_divide_the_width(tiny_model: Any) -> None:
    with pytest.raises(ValueError, match="does not divide"):
        inject_ether(tiny_model, ["model.layers.0.self_attn.q_proj"], n_blocks=5)

"""Dynamic-rank LoRA: counts, closed-form importance, pruning to the budget, gradients."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from trainers.adapter_lm.adapters.dynamic_rank import (
    DynamicRankLinear,
    DynamicRankParams,
    RankController,
    inject_dynamic_rank,
)


def _layer(rank: int = 5, out_f: int = 7, in_f: int = 6) -> DynamicRankLinear:
    torch.manual_seed(0)
    layer = DynamicRankLinear(nn.Linear(in_f, out_f), rank=rank, alpha=4.0, dropout=0.0).double()
    with torch.no_grad():
        layer.lora_c.normal_()  # gates start at zero; give every component a share
    return layer


def test_parameter_count_is_r_times_in_plus_out_plus_one() -> None:
    layer = DynamicRankLinear(nn.Linear(6, 7), rank=5, alpha=4.0, dropout=0.0)
    trainable = sum(p.numel() for n, p in layer.named_parameters() if not n.startswith("base_layer"))
    assert trainable == 5 * (6 + 7 + 1)


def test_the_update_starts_at_zero() -> None:
    layer = DynamicRankLinear(nn.Linear(6, 7), rank=5, alpha=4.0, dropout=0.0)
    x = torch.randn(3, 6)
    assert torch.equal(layer(x), layer.base_layer(x))


def test_closed_form_norms_equal_the_materialised_components() -> None:
    layer = _layer()
    components = torch.stack([
        layer.lora_c[i] * torch.outer(layer.lora_B[:, i], layer.lora_A[i]) for i in range(5)
    ])  # r x out x in: what the closed form avoids building
    assert torch.allclose(layer.component_norms(), components.flatten(1).norm(dim=1))
    assert torch.allclose(layer.update_norm(), components.sum(0).norm())
    assert torch.allclose(layer.importance(), components.flatten(1).norm(dim=1) / components.sum(0).norm())


def test_efficient_forward_equals_the_explicit_delta_w_forward() -> None:
    layer = _layer()
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    explicit = x @ (layer.base_layer.weight + layer.delta_weight()).t() + layer.base_layer.bias
    assert torch.allclose(layer(x), explicit)


def test_gradcheck_float64() -> None:
    layer = _layer()
    x = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_(True) for p in (layer.lora_A, layer.lora_B, layer.lora_c)]

    def run(inputs: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return layer.base_layer(inputs) + layer.scaling * ((inputs @ a.t()) * c) @ b.t()

    assert torch.autograd.gradcheck(run, (x, *params))


def test_pruning_reaches_the_target_average_rank_and_only_grows(tiny_model: Any) -> None:
    targets = [n for n, m in tiny_model.named_modules() if isinstance(m, nn.Linear) and "layers" in n]
    inject_dynamic_rank(tiny_model, targets, rank=6, alpha=6.0)
    params = DynamicRankParams(rank=6, target_rank=4, start_ratio=0.1, end_ratio=0.3, prune_interval=3)
    controller = RankController(tiny_model, params, total_steps=40)
    torch.manual_seed(3)
    for layer in controller.layers.values():
        with torch.no_grad():
            layer.lora_c.normal_()
    previous = {n: layer.rank_mask.clone() for n, layer in controller.layers.items()}
    for step in range(40):
        controller.after_optimizer_step(step)
        for name, layer in controller.layers.items():
            assert (layer.rank_mask <= previous[name]).all()  # a pruned component stays pruned
            previous[name] = layer.rank_mask.clone()
    total = sum(layer.active_rank() for layer in controller.layers.values())
    assert total == len(targets) * 6 - int(len(targets) * 6 * (2 / 6))
    assert math.isclose(total / len(targets), 4, abs_tol=0.2)
    ranks = {layer.active_rank() for layer in controller.layers.values()}
    assert len(ranks) > 1  # the budget moved between layers: the point of the method


def test_variance_penalty_runs_while_pruning_and_stops_after(tiny_model: Any) -> None:
    inject_dynamic_rank(tiny_model, ["model.layers.0.mlp.up_proj"], rank=4)
    controller = RankController(tiny_model, DynamicRankParams(rank=4, target_rank=2, dem_weight=0.5), 100)
    penalty = controller.regularization(10)
    assert penalty is not None and penalty.requires_grad and float(penalty.detach()) > 0
    assert controller.regularization(controller.end + 1) is None


def test_scores_survive_a_state_round_trip(tiny_model: Any) -> None:
    inject_dynamic_rank(tiny_model, ["model.layers.0.mlp.up_proj"], rank=4)
    controller = RankController(tiny_model, DynamicRankParams(rank=4, target_rank=2), 100)
    controller.scores["model.layers.0.mlp.up_proj"].fill_(0.25)
    other = RankController(tiny_model, DynamicRankParams(rank=4, target_rank=2), 100)
    other.load_state(controller.state())
    assert torch.equal(other.scores["model.layers.0.mlp.up_proj"], torch.full((4,), 0.25))


@pytest.mark.parametrize(("field", "value"), [("target_rank", 13), ("end_ratio", 0.9)])
def test_params_refuse_an_impossible_schedule(field: str, value: float) -> None:
    with pytest.raises(ValueError):
        DynamicRankParams(**{field: value})

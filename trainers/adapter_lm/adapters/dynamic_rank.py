"""Dynamic-rank LoRA: rank-one components with importance scores, pruned toward a budget.

Paper: Mao et al. 2024, "DoRA: Enhancing Parameter-Efficient Fine-Tuning with Dynamic Rank
Distribution" (ACL 2024, arXiv:2405.17357). Called ``dynamic_rank`` here because PEFT's
``use_dora`` is the unrelated weight-decomposed DoRA of Liu et al.

Each layer's update is a sum of ``r`` rank-one components,
``delta_W = s * sum_i c_i * B[:, i] A[i, :]`` (``s = alpha / r``), with ``A`` and ``B``
Kaiming-initialised and the gates ``c`` at zero (the model starts unchanged). A component's
importance is its share of the update, ``||delta_W_i||_F / ||delta_W||_F``, smoothed with an
EMA. Between ``start_ratio`` and ``1 - end_ratio`` of the schedule (on ``max_budget``), the
lowest-scored components of *all* layers are masked until, on average, ``target_rank`` per
layer remain; layers that matter keep more. A "dimensional equilibrium modulator" penalty
(the variance of each component's entries) keeps components from concentrating in a few
dimensions while pruning runs.

Scores use closed forms instead of ``r x out x in`` tensors:
``||c_i B_i A_i||_F = |c_i| ||B[:, i]|| ||A[i, :]||`` and
``||delta_W||_F^2 / s^2 = sum_ij c_i c_j (B^T B)_ij (A A^T)_ij`` (r x r Gram matrices).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from trainers.adapter_lm.adapters.base import AdapterLayer, AdapterParams, inject
from trainers.adapter_lm.schedule import cubic_prune_fraction

_EPS = 1e-8


class DynamicRankParams(AdapterParams):
    rank: int = Field(default=12, ge=1, description="Components per layer at the start (paper: 1.5x target).")
    target_rank: int = Field(default=8, ge=1, description="Average components per layer after pruning.")
    alpha: float = Field(default=8.0, gt=0.0)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    start_ratio: float = Field(default=0.15, ge=0.0, lt=1.0, description="Pruning starts at this fraction.")
    end_ratio: float = Field(default=0.5, ge=0.0, lt=1.0, description="Pruning ends this fraction before the end.")
    prune_interval: int = Field(default=10, ge=1, description="Optimizer steps between pruning rounds.")
    beta: float = Field(default=0.9, ge=0.0, lt=1.0, description="EMA factor of the importance scores.")
    dem_weight: float = Field(default=0.1, ge=0.0, description="Weight of the variance penalty.")

    @model_validator(mode="after")
    def _check(self) -> DynamicRankParams:
        if self.target_rank > self.rank:
            raise ValueError(f"target_rank ({self.target_rank}) must be <= rank ({self.rank})")
        if self.start_ratio + self.end_ratio >= 1.0:
            raise ValueError("start_ratio + end_ratio must be < 1 (pruning needs a window)")
        return self


class DynamicRankLinear(AdapterLayer):
    rank_mask: torch.Tensor

    def __init__(self, base_layer: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        super().__init__(base_layer)
        device = base_layer.weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features, device=device))
        self.lora_B = nn.Parameter(torch.empty(base_layer.out_features, rank, device=device))
        self.lora_c = nn.Parameter(torch.zeros(rank, device=device))
        # Persistent: a resumed or exported adapter must keep its pruned components pruned.
        self.register_buffer("rank_mask", torch.ones(rank, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def gates(self) -> torch.Tensor:
        return self.lora_c * self.rank_mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.base_layer(x)
        h = F.linear(self.adapter_dtype_input(self.dropout(x), self.lora_A.dtype), self.lora_A)
        update = F.linear(h * self.gates().to(h.dtype), self.lora_B)
        return result + (self.scaling * update).to(result.dtype)

    def delta_weight(self) -> torch.Tensor:
        delta: torch.Tensor = self.scaling * (self.lora_B * self.gates()) @ self.lora_A
        return delta

    @torch.no_grad()
    def component_norms(self) -> torch.Tensor:
        """``||delta_W_i||_F / s`` per component, without forming any ``out x in`` tensor."""
        norms: torch.Tensor = self.gates().abs() * self.lora_A.norm(dim=1) * self.lora_B.norm(dim=0)
        return norms

    @torch.no_grad()
    def update_norm(self) -> torch.Tensor:
        """``||delta_W||_F / s`` from the ``r x r`` Gram matrices of ``A`` and ``B``."""
        c = self.gates()
        squared = (torch.outer(c, c) * (self.lora_B.t() @ self.lora_B) * (self.lora_A @ self.lora_A.t())).sum()
        norm: torch.Tensor = squared.clamp_min(0.0).sqrt()
        return norm

    def importance(self) -> torch.Tensor:
        return self.component_norms() / (self.update_norm() + _EPS)

    def active_rank(self) -> int:
        return int(self.rank_mask.sum().item())


def inject_dynamic_rank(
    model: nn.Module, target_modules: list[str], *, rank: int = 12, alpha: float = 8.0, dropout: float = 0.0
) -> nn.Module:
    """Wrap each named linear layer in a ``DynamicRankLinear``; everything else is frozen."""
    return inject(model, target_modules, lambda layer: DynamicRankLinear(layer, rank, alpha, dropout))


class RankController:
    """Scores, prunes and regularises the dynamic-rank layers on the ``total_steps`` schedule."""

    def __init__(self, model: nn.Module, params: DynamicRankParams, total_steps: int) -> None:
        self.layers: dict[str, DynamicRankLinear] = {
            n: m for n, m in model.named_modules() if isinstance(m, DynamicRankLinear)
        }
        self.params = params
        self.start = math.floor(params.start_ratio * total_steps)
        self.end = max(self.start, math.floor((1.0 - params.end_ratio) * total_steps))
        self.final_fraction = (params.rank - params.target_rank) / params.rank
        self.scores = {n: torch.zeros_like(m.lora_c, requires_grad=False) for n, m in self.layers.items()}

    def pruning(self, step: int) -> bool:
        return step <= self.end

    def after_optimizer_step(self, step: int) -> None:
        if not self.pruning(step):
            return  # masks are final; scores no longer matter
        beta = self.params.beta
        for name, layer in self.layers.items():
            self.scores[name].mul_(beta).add_(layer.importance(), alpha=1.0 - beta)
        if step >= self.start and ((step - self.start) % self.params.prune_interval == 0 or step == self.end):
            self._prune(cubic_prune_fraction(step, self.start, self.end, self.final_fraction))

    @torch.no_grad()
    def _prune(self, fraction: float) -> None:
        names = list(self.layers)
        # Already-pruned components rank lowest, so the pruned set only ever grows.
        ranked = torch.cat([
            torch.where(self.layers[n].rank_mask > 0, self.scores[n], torch.full_like(self.scores[n], -math.inf))
            for n in names
        ])
        count = int(ranked.numel() * fraction)
        keep = torch.ones_like(ranked)
        if count > 0:
            keep[torch.topk(ranked, count, largest=False).indices] = 0.0
        sizes = [self.layers[n].rank_mask.numel() for n in names]
        for name, chunk in zip(names, torch.split(keep, sizes), strict=True):
            self.layers[name].rank_mask.copy_(chunk)

    def regularization(self, step: int) -> torch.Tensor | None:
        if self.params.dem_weight == 0 or not self.pruning(step) or not self.layers:
            return None
        total = torch.stack([m.lora_A.var(dim=1).sum() + m.lora_B.var(dim=0).sum() for m in self.layers.values()])
        penalty: torch.Tensor = self.params.dem_weight * total.sum() / (2 * self.params.rank * len(self.layers))
        return penalty

    def state(self) -> dict[str, torch.Tensor]:
        return {f"scores.{n}": s.detach().clone() for n, s in self.scores.items()}

    def load_state(self, tensors: dict[str, Any]) -> None:
        for name in self.scores:
            self.scores[name].copy_(tensors[f"scores.{name}"])

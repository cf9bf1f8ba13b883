"""ETHER / ETHER+: fine-tuning by block-diagonal hyperplane reflections of the frozen weights.

Paper: Bini et al. 2024, "ETHER: Efficient Finetuning of Large-Scale Models with Hyperplane
Reflections" (ICML 2024, arXiv:2405.20271).

- ETHER: ``W' = W H`` with ``H = blockdiag(I - 2 u_k u_k^T / ||u_k||^2)``, ``n_blocks``
  blocks. A reflection is orthogonal and ``||H - I||_F`` is fixed, so no learning rate can
  move the model far from the pretrained one: the paper's argument for ETHER's robustness to
  the learning rate. It does not start at the identity (reflections never are).
- ETHER+: ``H+ = I - u u^T/||u||^2 + v v^T/||v||^2`` per block, a relaxation that is neither
  orthogonal nor of fixed distance; ``v = -u`` at the start, so ``H+ = I`` there. The paper
  applies it on both sides for language models, ``W' = H+_out W H+_in`` (``two_sided``).

Parameters per layer: ``in`` for ETHER (``n_blocks`` does not change it), ``2 * in`` for
ETHER+, plus ``out`` (``2 * out`` for ETHER+) when two-sided. The forward reflects the
activations (``O(d)`` per token) instead of forming ``W'``: ``y = H_out (W (H_in x)) + b``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from trainers.adapter_lm.adapters.base import AdapterLayer, AdapterParams, inject


class EtherParams(AdapterParams):
    n_blocks: int = Field(default=4, ge=1, description="Diagonal blocks per transform (must divide the width).")
    plus: bool = Field(default=False, description="ETHER+ (relaxed reflections) instead of ETHER.")
    two_sided: bool = Field(default=False, description="Also transform the output side.")


def _reflect(x: torch.Tensor, u: torch.Tensor, v: torch.Tensor | None) -> torch.Tensor:
    """Apply ``blockdiag(H_k)`` to the last dimension of ``x``; ``u``, ``v``: ``(n_blocks, size)``."""
    blocks, size = u.shape
    xb = x.reshape(*x.shape[:-1], blocks, size)
    un = u / u.norm(dim=-1, keepdim=True)
    coef_u = (xb * un).sum(dim=-1, keepdim=True)
    if v is None:  # ETHER: I - 2 u u^T
        out = xb - 2.0 * coef_u * un
    else:  # ETHER+: I - u u^T + v v^T
        vn = v / v.norm(dim=-1, keepdim=True)
        out = xb - coef_u * un + (xb * vn).sum(dim=-1, keepdim=True) * vn
    result: torch.Tensor = out.reshape(x.shape)
    return result


def householder_matrix(u: torch.Tensor, v: torch.Tensor | None) -> torch.Tensor:
    """The explicit ``(blocks * size)``-square block-diagonal transform (tests only)."""
    eye = torch.eye(u.shape[1], dtype=u.dtype, device=u.device)
    blocks = []
    for k in range(u.shape[0]):
        un = u[k] / u[k].norm()
        if v is None:
            blocks.append(eye - 2.0 * torch.outer(un, un))
        else:
            vn = v[k] / v[k].norm()
            blocks.append(eye - torch.outer(un, un) + torch.outer(vn, vn))
    matrix: torch.Tensor = torch.block_diag(*blocks)  # type: ignore[no-untyped-call]
    return matrix


class EtherLinear(AdapterLayer):
    def __init__(self, base_layer: nn.Linear, n_blocks: int, plus: bool, two_sided: bool) -> None:
        super().__init__(base_layer)
        for side, width in (("in", base_layer.in_features), ("out", base_layer.out_features)):
            if (side == "in" or two_sided) and width % n_blocks:
                raise ValueError(f"n_blocks={n_blocks} does not divide {side}_features={width}")
        self.plus = plus
        self.ether_u_in, self.ether_v_in = self._vectors(base_layer.in_features, n_blocks, plus)
        self.two_sided = two_sided
        if two_sided:
            self.ether_u_out, self.ether_v_out = self._vectors(base_layer.out_features, n_blocks, plus)

    def _vectors(self, width: int, n_blocks: int, plus: bool) -> tuple[nn.Parameter, nn.Parameter | None]:
        device = self.base_layer.weight.device
        u = torch.empty(n_blocks, width // n_blocks, device=device)
        nn.init.kaiming_uniform_(u, a=math.sqrt(5))
        # ETHER+ starts at the identity: v = -u makes the two rank-one terms cancel.
        return nn.Parameter(u), (nn.Parameter(-u.clone()) if plus else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.base_layer.weight
        # The reflection runs in the adapter's fp32 (type promotion); the matmul in the
        # weight's dtype, which is also what autocast would pick.
        h = _reflect(x, self.ether_u_in, self.ether_v_in).to(weight.dtype)
        y = F.linear(h, weight)
        if self.two_sided:
            y = _reflect(y, self.ether_u_out, self.ether_v_out)
        if self.base_layer.bias is not None:
            y = y + self.base_layer.bias
        return y.to(x.dtype)

    def transformed_weight(self) -> torch.Tensor:
        """The explicit ``W' = H_out W H_in`` (tests, merging); the forward never builds it."""
        weight = self.base_layer.weight.to(self.ether_u_in.dtype)
        weight = weight @ householder_matrix(self.ether_u_in, self.ether_v_in)
        if self.two_sided:
            weight = householder_matrix(self.ether_u_out, self.ether_v_out) @ weight
        return weight


def ether_param_count(out_features: int, in_features: int, plus: bool, two_sided: bool) -> int:
    per_side = 2 if plus else 1
    return per_side * (in_features + (out_features if two_sided else 0))


def inject_ether(
    model: nn.Module, target_modules: list[str], *, n_blocks: int = 4, plus: bool = False, two_sided: bool = False
) -> nn.Module:
    """Wrap each named linear layer in an ``EtherLinear``; everything else is frozen."""
    return inject(model, target_modules, lambda layer: EtherLinear(layer, n_blocks, plus, two_sided))

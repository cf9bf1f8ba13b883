"""KronA / DiffuseKronA: a Kronecker-product weight update, ``delta_W = alpha * (A kron B)``.

Papers: Edalati et al. 2022, "KronA: Parameter Efficient Tuning with Kronecker Adapter"
(arXiv:2212.10650); Marjit et al. 2024, "DiffuseKronA: A Parameter Efficient Fine-tuning
Method for Personalized Diffusion Models" (arXiv:2402.17412), which shows that the factor
shapes matter and should be chosen independently of each other, with a scale on the update.

For a layer ``out x in``, ``A`` is ``a1 x a2`` and ``B`` is ``b1 x b2`` with ``a1 * b1 = out``
and ``a2 * b2 = in``: ``a1 * a2 + b1 * b2`` parameters, and the rank of ``A kron B`` is
``rank(A) * rank(B)``, far above a LoRA of the same size. ``B`` starts at zero so the model
starts unchanged (and ``A`` gets gradients once ``B`` moves, as in LoRA).

The forward never builds the ``out x in`` update: with ``X = x.view(a2, b2)``,
``(A kron B) vec(X) = vec(A X B^T)`` (row-major vec), i.e. two small matmuls per token,
``a1*a2*b2 + a1*b2*b1`` multiply-adds instead of ``out * in``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from trainers.adapter_lm.adapters.base import AdapterLayer, AdapterParams, inject


class KronaParams(AdapterParams):
    a_out: int = Field(default=16, ge=1, description="Rows of A (a1); the nearest divisor of out is used.")
    a_in: int = Field(default=16, ge=1, description="Columns of A (a2); the nearest divisor of in is used.")
    alpha: float = Field(default=1.0, gt=0.0, description="Scale of the update.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


def kron_matmul(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``x @ kron(a, b).T`` for ``x`` of shape ``(..., a2 * b2)``, without forming ``kron(a, b)``."""
    a1, a2 = a.shape
    b1, b2 = b.shape
    lead = x.shape[:-1]
    xm = x.reshape(-1, a2, b2)
    # Two association orders give the same result; take the one with fewer multiply-adds.
    y: torch.Tensor
    if a1 * a2 * b2 + a1 * b2 * b1 <= a2 * b2 * b1 + a1 * a2 * b1:
        y = torch.matmul(torch.matmul(a, xm), b.t())
    else:
        y = torch.matmul(a, torch.matmul(xm, b.t()))
    return y.reshape(*lead, a1 * b1)


def nearest_divisor(n: int, wanted: int) -> int:
    """The divisor of ``n`` closest to ``wanted`` in ratio (ties: the smaller divisor)."""
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return min(divisors, key=lambda d: (abs(math.log(d / max(1, wanted))), d))


def factor_shapes(out_features: int, in_features: int, a_out: int, a_in: int) -> tuple[int, int, int, int]:
    """``(a1, a2, b1, b2)`` with ``a1 * b1 = out`` and ``a2 * b2 = in``, ``a1 ~ a_out``, ``a2 ~ a_in``."""
    a1 = nearest_divisor(out_features, a_out)
    a2 = nearest_divisor(in_features, a_in)
    return a1, a2, out_features // a1, in_features // a2


class KronaLinear(AdapterLayer):
    def __init__(self, base_layer: nn.Linear, a_out: int, a_in: int, alpha: float, dropout: float) -> None:
        super().__init__(base_layer)
        a1, a2, b1, b2 = factor_shapes(base_layer.out_features, base_layer.in_features, a_out, a_in)
        device = base_layer.weight.device
        # fp32 adapter weights even over a bf16 base: the updates are small relative to the
        # weights and would round away in bf16.
        self.krona_A = nn.Parameter(torch.empty(a1, a2, device=device, dtype=torch.float32))
        self.krona_B = nn.Parameter(torch.zeros(b1, b2, device=device, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.krona_A, a=math.sqrt(5))
        self.scale = alpha
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.base_layer(x)
        update = kron_matmul(self.adapter_dtype_input(self.dropout(x), self.krona_A.dtype), self.krona_A, self.krona_B)
        return result + (self.scale * update).to(result.dtype)

    def delta_weight(self) -> torch.Tensor:
        """The explicit ``out x in`` update (tests, merging); the forward never builds it."""
        return self.scale * torch.kron(self.krona_A, self.krona_B)

    def extra_repr(self) -> str:
        return f"A={tuple(self.krona_A.shape)}, B={tuple(self.krona_B.shape)}, scale={self.scale}"


def krona_param_count(out_features: int, in_features: int, a_out: int, a_in: int) -> int:
    a1, a2, b1, b2 = factor_shapes(out_features, in_features, a_out, a_in)
    return a1 * a2 + b1 * b2


def inject_krona(
    model: nn.Module, target_modules: list[str], *, a_out: int = 16, a_in: int = 16, alpha: float = 1.0,
    dropout: float = 0.0,
) -> nn.Module:
    """Wrap each named linear layer in a ``KronaLinear``; everything else is frozen."""
    return inject(model, target_modules, lambda layer: KronaLinear(layer, a_out, a_in, alpha, dropout))


def explicit_forward(layer: KronaLinear, x: torch.Tensor) -> torch.Tensor:
    """Reference forward with the materialised update, to test the efficient one against."""
    weight = layer.base_layer.weight + layer.delta_weight().to(layer.base_layer.weight.dtype)
    return F.linear(x, weight, layer.base_layer.bias)

"""What every adapter kind gives the training loop, and the injection helpers of our own adapters.

``Adapter`` wraps a model with an adapter injected. The loop calls, per optimizer step:
``regularization(step)`` (added to the loss; None when the method has none), then after
``optimizer.step()`` and before ``zero_grad()``, ``after_optimizer_step(step)`` (AdaLoRA's
budget allocation and dynamic-rank pruning read gradients and scores there). Checkpoints
carry ``extra_state()`` (score EMAs, rank patterns): state that is neither a parameter nor
an optimizer moment but that an exactly resumed run needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class AdapterParams(BaseModel):
    """Params every adapter kind accepts; subclasses add their method's knobs."""

    # extra=forbid: a search-space key the adapter does not know is a mistake, not a no-op.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    target_modules: str | list[str] = Field(default="all_linear", description="Preset or module names.")


class Adapter:
    """A model with an adapter injected, plus the hooks of its method (defaults: none)."""

    def __init__(self, kind: str, model: nn.Module, targets: list[str]) -> None:
        self.kind = kind
        self.model = model
        self.targets = targets

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.model.named_parameters() if p.requires_grad)

    def trainable_count(self) -> int:
        return sum(p.numel() for _, p in self.trainable_parameters())

    def optimizer_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Param groups with a ``base_lr`` each (the schedule scales it). Vectors (magnitudes,
        gates, biases) get no weight decay: decaying a DoRA magnitude or a rank gate toward zero
        switches the adapter off rather than regularising it."""
        matrices: list[nn.Parameter] = []
        vectors: list[nn.Parameter] = []
        for _, param in self.trainable_parameters():
            (matrices if param.ndim >= 2 else vectors).append(param)
        groups = [{"params": matrices, "base_lr": lr, "weight_decay": weight_decay}]
        if vectors:
            groups.append({"params": vectors, "base_lr": lr, "weight_decay": 0.0})
        return groups

    def regularization(self, step: int) -> torch.Tensor | None:
        return None

    def after_optimizer_step(self, step: int) -> None:
        return None

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {}

    def load_extra_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        return None

    def export(self, out_dir: Path, base_model_name: str) -> None:
        raise NotImplementedError


class AdapterLayer(nn.Module):
    """Base of our own adapter layers: wraps a frozen ``base_layer`` (an ``nn.Linear``)."""

    def __init__(self, base_layer: nn.Linear) -> None:
        super().__init__()
        self.base_layer = base_layer

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def adapter_dtype_input(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        # Under autocast the matmuls pick their own dtype; casting x to fp32 first would only
        # cost a full extra pass over the activations.
        return x if torch.is_autocast_enabled(x.device.type) else x.to(dtype)


def inject(
    model: nn.Module, target_modules: list[str], factory: Callable[[nn.Linear], AdapterLayer]
) -> nn.Module:
    """Replace each named ``nn.Linear`` by ``factory(linear)`` and freeze everything else."""
    for param in model.parameters():
        param.requires_grad_(False)
    for name in target_modules:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = getattr(parent, child)
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"{name} is a {type(layer).__name__}; this adapter wraps nn.Linear only")
        setattr(parent, child, factory(layer))
    for module in model.modules():
        if isinstance(module, AdapterLayer):
            for pname, param in module.named_parameters():
                param.requires_grad_(not pname.startswith("base_layer."))
    return model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of our adapter layers except the frozen base weights, by full name."""
    state: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayer):
            for key, value in module.state_dict().items():
                if not key.startswith("base_layer."):
                    state[f"{name}.{key}"] = value.detach()
    return state


def load_adapter_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into the adapter layers; KeyError/ValueError unless keys and shapes match."""
    own = adapter_state_dict(model)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise KeyError(f"adapter state does not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for key, target in own.items():
            if target.shape != state[key].shape:
                raise ValueError(f"{key}: shape {tuple(state[key].shape)} != {tuple(target.shape)}")
            target.copy_(state[key])

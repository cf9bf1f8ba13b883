"""Adapter kinds: PEFT's, and three of our own (KronA, dynamic-rank LoRA, ETHER).

``parse_adapter_params(kind, raw)`` validates a trial's adapter params;
``build_adapter(kind, model, params, total_steps, autocast)`` injects the adapter into a
loaded base model and returns an ``Adapter`` (the model plus its method's hooks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from trainers.adapter_lm.adapters.base import (
    Adapter,
    AdapterParams,
    adapter_state_dict,
    load_adapter_state_dict,
)
from trainers.adapter_lm.adapters.dynamic_rank import DynamicRankParams, RankController, inject_dynamic_rank
from trainers.adapter_lm.adapters.ether import EtherParams, inject_ether
from trainers.adapter_lm.adapters.krona import KronaParams, inject_krona
from trainers.adapter_lm.adapters.peft_adapters import PARAMS as PEFT_PARAMS
from trainers.adapter_lm.adapters.peft_adapters import build_peft_adapter
from trainers.adapter_lm.adapters.targets import resolve_targets
from trainers.adapter_lm.export import ADAPTER_CONFIG, ADAPTER_WEIGHTS, CUSTOM_FORMAT

PARAMS: dict[str, type[AdapterParams]] = {
    **PEFT_PARAMS, "krona": KronaParams, "dynamic_rank": DynamicRankParams, "ether": EtherParams,
}


def parse_adapter_params(kind: str, raw: dict[str, Any]) -> AdapterParams:
    """Validated params of ``kind``; raises KeyError (unknown kind) or pydantic's ValidationError."""
    return PARAMS[kind].model_validate(raw)


def custom_options(kind: str, params: AdapterParams) -> dict[str, Any]:
    """The keyword arguments of ``inject_<kind>``: all that ``load_adapter`` needs to rebuild it."""
    if isinstance(params, KronaParams):
        return {"a_out": params.a_out, "a_in": params.a_in, "alpha": params.alpha, "dropout": params.dropout}
    if isinstance(params, DynamicRankParams):
        return {"rank": params.rank, "alpha": params.alpha, "dropout": params.dropout}
    if isinstance(params, EtherParams):
        return {"n_blocks": params.n_blocks, "plus": params.plus, "two_sided": params.two_sided}
    raise ValueError(f"{kind!r} is not one of our own adapter kinds")


def inject_custom(kind: str, model: nn.Module, targets: list[str], options: dict[str, Any]) -> nn.Module:
    if kind == "krona":
        return inject_krona(model, targets, **options)
    if kind == "dynamic_rank":
        return inject_dynamic_rank(model, targets, **options)
    if kind == "ether":
        return inject_ether(model, targets, **options)
    raise ValueError(f"{kind!r} is not one of our own adapter kinds")


class CustomAdapter(Adapter):
    """KronA, dynamic-rank LoRA or ETHER injected into a plain transformers model."""

    def __init__(self, kind: str, model: nn.Module, targets: list[str], options: dict[str, Any],
                 controller: RankController | None) -> None:
        super().__init__(kind, model, targets)
        self.options = options
        self.controller = controller

    def regularization(self, step: int) -> torch.Tensor | None:
        return self.controller.regularization(step) if self.controller else None

    def after_optimizer_step(self, step: int) -> None:
        if self.controller:
            self.controller.after_optimizer_step(step)

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return (self.controller.state() if self.controller else {}), {}

    def load_extra_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        if self.controller:
            self.controller.load_state(tensors)

    def export(self, out_dir: Path, base_model_name: str) -> None:
        """Our format: ``adapter_config.json`` + ``adapter_model.safetensors``; see ``load_adapter``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        config = {"format": CUSTOM_FORMAT, "adapter": self.kind, "target_modules": self.targets,
                  "options": self.options, "base_model_name_or_path": base_model_name}
        state = {k: v.detach().cpu().contiguous() for k, v in adapter_state_dict(self.model).items()}
        save_file(state, str(out_dir / ADAPTER_WEIGHTS))
        (out_dir / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def build_adapter(kind: str, model: nn.Module, params: AdapterParams, total_steps: int,
                  autocast: bool = False) -> Adapter:
    """Inject ``kind`` into ``model`` (in place). ValueError for params that cannot apply."""
    if kind in PEFT_PARAMS:
        return build_peft_adapter(kind, model, params, resolve_targets(model, params.target_modules), total_steps,
                                  autocast)
    targets = resolve_targets(model, params.target_modules, allow_conv1d=False)
    options = custom_options(kind, params)
    inject_custom(kind, model, targets, options)
    controller = None
    if isinstance(params, DynamicRankParams):
        controller = RankController(model, params, total_steps)
    return CustomAdapter(kind, model, targets, options, controller)


__all__ = [
    "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "PARAMS", "Adapter", "AdapterParams", "CustomAdapter", "adapter_state_dict",
    "build_adapter", "custom_options", "inject_custom", "load_adapter_state_dict", "parse_adapter_params",
]

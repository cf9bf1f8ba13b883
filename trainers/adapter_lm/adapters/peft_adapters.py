"""PEFT-native adapters: trial params -> a PEFT config, plus the hooks PEFT leaves to the loop.

Param names are uniform across kinds (``rank``, ``alpha``, ``dropout``) so search spaces read
alike; each model maps them onto PEFT's field names. Defaults follow PEFT's documentation.
"""

from __future__ import annotations

import contextlib
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peft
import torch
from pydantic import Field, model_validator
from torch import nn

from trainers.adapter_lm.adapters.base import Adapter, AdapterParams
from trainers.adapter_lm.adapters.krona import kron_matmul

ADAPTER_NAME = "default"


class LoraParams(AdapterParams):  # also DoRA (Liu et al. 2024): the same knobs plus use_dora
    rank: int = Field(default=8, ge=1)
    alpha: float = Field(default=16.0, gt=0.0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    use_rslora: bool = Field(default=False, description="Scale by alpha/sqrt(r) (Kalajdzievski 2023).")
    loraplus_lr_ratio: float = Field(default=1.0, ge=1.0, description="LoRA+: lr(B) / lr(A); 1 is off.")


class LokrParams(AdapterParams):
    rank: int = Field(default=8, ge=1)
    alpha: float = Field(default=8.0, gt=0.0)
    rank_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    module_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    decompose_both: bool = False
    decompose_factor: int = Field(default=-1, ge=-1)


class LohaParams(AdapterParams):
    rank: int = Field(default=8, ge=1)
    alpha: float = Field(default=8.0, gt=0.0)
    rank_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    module_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class AdaLoraParams(AdapterParams):
    init_rank: int = Field(default=12, ge=1)
    target_rank: int = Field(default=8, ge=1)
    alpha: float = Field(default=8.0, gt=0.0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    tinit_ratio: float = Field(default=0.1, ge=0.0, lt=1.0, description="Warm-up share before pruning.")
    tfinal_ratio: float = Field(default=0.2, ge=0.0, lt=1.0, description="Final share with a fixed budget.")
    delta_t: int = Field(default=1, ge=1, description="Steps between budget allocations.")
    beta1: float = Field(default=0.85, gt=0.0, lt=1.0)
    beta2: float = Field(default=0.85, gt=0.0, lt=1.0)
    orth_reg_weight: float = Field(default=0.5, ge=0.0)

    @model_validator(mode="after")
    def _check(self) -> AdaLoraParams:
        if self.target_rank > self.init_rank:
            raise ValueError(f"target_rank ({self.target_rank}) must be <= init_rank ({self.init_rank})")
        if self.tinit_ratio + self.tfinal_ratio >= 1.0:
            raise ValueError("tinit_ratio + tfinal_ratio must be < 1 (the budget needs steps to shrink in)")
        return self


class VeraParams(AdapterParams):
    rank: int = Field(default=256, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    d_initial: float = Field(default=0.1, gt=0.0)
    projection_prng_key: int = Field(default=0, ge=0)


class RandLoraParams(AdapterParams):
    rank: int = Field(default=32, ge=1)
    alpha: float = Field(default=640.0, gt=0.0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    sparse: bool = False
    very_sparse: bool = False
    projection_prng_key: int = Field(default=0, ge=0)


class OftParams(AdapterParams):
    block_size: int = Field(default=32, ge=1)
    module_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    coft: bool = False
    eps: float = Field(default=6e-5, gt=0.0)
    block_share: bool = False
    use_cayley_neumann: bool = True


PARAMS: dict[str, type[AdapterParams]] = {
    "lora": LoraParams, "dora": LoraParams, "lokr": LokrParams, "loha": LohaParams,
    "adalora": AdaLoraParams, "vera": VeraParams, "randlora": RandLoraParams, "oft": OftParams,
}


def peft_config(kind: str, p: Any, targets: list[str], total_steps: int) -> peft.PeftConfig:
    """The PEFT config of one trial; ``total_steps`` (of max_budget) sizes AdaLoRA's schedule."""
    common: dict[str, Any] = {"target_modules": targets, "task_type": "CAUSAL_LM"}
    if kind in ("lora", "dora"):
        return peft.LoraConfig(r=p.rank, lora_alpha=p.alpha, lora_dropout=p.dropout, use_rslora=p.use_rslora,
                               use_dora=kind == "dora", **common)
    if kind == "lokr":
        return peft.LoKrConfig(r=p.rank, alpha=p.alpha, rank_dropout=p.rank_dropout, module_dropout=p.module_dropout,
                               decompose_both=p.decompose_both, decompose_factor=p.decompose_factor, **common)
    if kind == "loha":
        return peft.LoHaConfig(r=p.rank, alpha=p.alpha, rank_dropout=p.rank_dropout,
                               module_dropout=p.module_dropout, **common)
    if kind == "adalora":
        # Ratios of max_budget's steps, so one search space fits any budget; they sum to < 1,
        # which leaves the budget-shrinking phase PEFT requires at least one step.
        tinit, tfinal = int(p.tinit_ratio * total_steps), int(p.tfinal_ratio * total_steps)
        return peft.AdaLoraConfig(init_r=p.init_rank, target_r=p.target_rank, lora_alpha=p.alpha,
                                  lora_dropout=p.dropout, tinit=tinit, tfinal=tfinal, deltaT=p.delta_t,
                                  beta1=p.beta1, beta2=p.beta2, orth_reg_weight=p.orth_reg_weight,
                                  total_step=total_steps, **common)
    if kind == "vera":
        return peft.VeraConfig(r=p.rank, vera_dropout=p.dropout, d_initial=p.d_initial,
                               projection_prng_key=p.projection_prng_key, save_projection=True, **common)
    if kind == "randlora":
        return peft.RandLoraConfig(r=p.rank, randlora_alpha=p.alpha, randlora_dropout=p.dropout, sparse=p.sparse,
                                   very_sparse=p.very_sparse, projection_prng_key=p.projection_prng_key,
                                   save_projection=True, **common)
    if kind == "oft":
        return peft.OFTConfig(r=0, oft_block_size=p.block_size, module_dropout=p.module_dropout, coft=p.coft,
                              eps=p.eps, block_share=p.block_share, use_cayley_neumann=p.use_cayley_neumann,
                              **common)
    raise ValueError(f"{kind!r} is not a PEFT adapter kind")


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """PEFT reads a transformers property that warns it is deprecated; not ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


class PeftAdapter(Adapter):
    model: Any  # a peft.PeftModel; its typing is too loose for attribute access

    def __init__(self, kind: str, model: nn.Module, targets: list[str], params: Any) -> None:
        super().__init__(kind, model, targets)
        self.params = params

    def optimizer_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        ratio = getattr(self.params, "loraplus_lr_ratio", 1.0)
        if ratio == 1.0:
            return super().optimizer_groups(lr, weight_decay)
        # LoRA+ (Hayou et al. 2024): B learns `ratio` times faster than A; magnitudes keep lr.
        b_params = [p for n, p in self.trainable_parameters() if "lora_B" in n]
        others = [p for n, p in self.trainable_parameters() if "lora_B" not in n]
        groups = [{"params": b_params, "base_lr": lr * ratio, "weight_decay": weight_decay}]
        groups += [{"params": [p for p in others if p.ndim >= 2], "base_lr": lr, "weight_decay": weight_decay}]
        vectors = [p for p in others if p.ndim < 2]
        if vectors:
            groups.append({"params": vectors, "base_lr": lr, "weight_decay": 0.0})
        return groups

    def regularization(self, step: int) -> torch.Tensor | None:
        if self.kind != "adalora" or self.params.orth_reg_weight == 0:
            return None
        # AdaLoRA's orthogonality penalty on P and Q (Zhang et al. 2023, eq. 4), as PEFT computes
        # it inside its forward when labels are passed; we compute the loss ourselves.
        terms = []
        for name, param in self.trainable_parameters():
            if "lora_A" in name or "lora_B" in name:
                gram = param @ param.t() if "lora_A" in name else param.t() @ param
                terms.append(torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0], device=gram.device)))
        return self.params.orth_reg_weight * torch.stack(terms).mean() if terms else None

    def after_optimizer_step(self, step: int) -> None:
        if self.kind == "adalora":
            self.model.base_model.update_and_allocate(step)

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if self.kind != "adalora":
            return {}, {}
        allocator = self.model.base_model.rankallocator
        tensors = {f"{field}::{name}": value.detach().clone()
                   for field in ("ipt", "exp_avg_ipt", "exp_avg_unc")
                   for name, value in getattr(allocator, field).items()}
        return tensors, {"rank_pattern": self.model.peft_config[ADAPTER_NAME].rank_pattern}

    def load_extra_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        if self.kind != "adalora":
            return
        allocator = self.model.base_model.rankallocator
        allocator.reset_ipt()
        device = next(p for _, p in self.trainable_parameters()).device  # checkpoints load on the CPU
        for key, value in tensors.items():
            field, _, name = key.partition("::")
            getattr(allocator, field)[name] = value.to(device)
        self.model.peft_config[ADAPTER_NAME].rank_pattern = meta.get("rank_pattern")

    def export(self, out_dir: Path, base_model_name: str) -> None:
        config = self.model.peft_config[ADAPTER_NAME]
        config.base_model_name_or_path = base_model_name
        # AdaLoRA: save full-size tensors without the rank pattern. Pruned triplets are zero, so
        # outputs are identical, and PEFT's loader would otherwise warn that the pattern's keys
        # (parameter names, not module names) "matched no module and were ignored".
        pattern = getattr(config, "rank_pattern", None)
        if self.kind == "adalora":
            config.rank_pattern = None
        try:
            with quiet_peft():
                self.model.save_pretrained(str(out_dir))
        finally:
            if self.kind == "adalora":
                config.rank_pattern = pattern


def build_peft_adapter(kind: str, model: nn.Module, params: Any, targets: list[str], total_steps: int,
                       autocast: bool) -> PeftAdapter:
    config = peft_config(kind, params, targets, total_steps)
    with quiet_peft():
        peft_model: Any = peft.get_peft_model(model, config)
    if autocast:
        # Under autocast the matmuls choose bf16 themselves; PEFT's cast of the input to the
        # fp32 adapter dtype would only add a full pass over every adapted layer's input.
        for module in peft_model.modules():
            if isinstance(module, peft.tuners.tuners_utils.BaseTunerLayer):
                layer: Any = module  # the attribute is set by each tuner's layer, not declared
                layer.cast_input_dtype_enabled = False
    if kind == "lokr":
        enable_fast_lokr(peft_model)
    return PeftAdapter(kind, peft_model, targets, params)


def enable_fast_lokr(model: nn.Module) -> int:
    """Give PEFT's LoKr linear layers a forward that never forms the ``out x in`` update.

    PEFT builds ``kron(w1, w2)`` every step and runs a second full-size matmul with it; the
    ``kron_matmul`` identity gives the same numbers for a few percent of the work. Layers with
    rank dropout keep PEFT's path (it drops rows of the materialised update). Returns the count.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, peft.tuners.lokr.layer.Linear):
            layer: Any = module
            layer._get_delta_activations = types.MethodType(_lokr_delta_activations, module)  # this instance only
            count += 1
    return count


def _lokr_delta_activations(self: Any, adapter_name: str, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    if (self.training and self.rank_dropout[adapter_name]) or adapter_name in self.lokr_t2:
        fallback: torch.Tensor = type(self)._get_delta_activations(self, adapter_name, x, *args, **kwargs)
        return fallback
    if adapter_name in self.lokr_w1:
        w1 = self.lokr_w1[adapter_name]
    else:
        w1 = self.lokr_w1_a[adapter_name] @ self.lokr_w1_b[adapter_name]
    if adapter_name in self.lokr_w2:
        w2 = self.lokr_w2[adapter_name]
    else:
        w2 = self.lokr_w2_a[adapter_name] @ self.lokr_w2_b[adapter_name]
    x = self._cast_input_dtype(x, w1.dtype)
    delta: torch.Tensor = kron_matmul(x, w1, w2) * self.scaling[adapter_name]
    return delta

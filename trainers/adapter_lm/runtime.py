"""The compute path: forward + loss (chunked, autocast, optionally compiled), eval, optimizer.

The loss is computed here rather than by the model: passing ``labels`` to a transformers
model materialises all logits in fp32 (``batch * seq_len * vocab * 4`` bytes: 2 GiB at
16 x 1024 x 32000) and keeps them for backward. ``chunked_cross_entropy`` projects
``CHUNK_TOKENS`` hidden states at a time under activation checkpointing, so only one chunk
of logits exists at once; the price is one extra pass through the output head in backward.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from trainers.adapter_lm.adapters import Adapter
from trainers.adapter_lm.config import AdapterLMConfig
from trainers.adapter_lm.data import IGNORE_INDEX, PackedData

CHUNK_TOKENS = 4096


def _base_of(model: nn.Module) -> Any:
    get_base = getattr(model, "get_base_model", None)  # PEFT wraps the transformers model
    return get_base() if callable(get_base) else model


def _supports_chunked_loss(base: Any) -> bool:
    # Some heads transform logits after the projection (Gemma 2 soft-capping, Cohere's scale);
    # for those only the model's own logits are right.
    config = base.config
    return getattr(config, "final_logit_softcapping", None) is None and getattr(config, "logit_scale", None) is None


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    # Softmax over a 32k vocabulary in bf16 loses the loss's small differences; fp64 stays.
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _ce_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(_upcast(F.linear(hidden, weight)), labels, ignore_index=IGNORE_INDEX, reduction="sum")


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                          chunk: int = CHUNK_TOKENS) -> torch.Tensor:
    """Summed token cross-entropy of ``hidden @ weight.T`` against ``labels`` (flat), chunk by chunk."""
    total = hidden.new_zeros((), dtype=torch.promote_types(hidden.dtype, torch.float32))
    for start in range(0, hidden.shape[0], chunk):
        piece = (hidden[start : start + chunk], weight, labels[start : start + chunk])
        if torch.is_grad_enabled():
            total = total + checkpoint(_ce_sum, *piece, use_reentrant=False)
        else:
            total = total + _ce_sum(*piece)
    return total


class LossComputer:
    """``(ids, labels) -> summed token loss`` for a causal LM, labels predicting the next token."""

    def __init__(self, model: nn.Module, config: AdapterLMConfig, device: torch.device,
                 autocast: torch.dtype | None) -> None:
        base = _base_of(model)
        self.device = device
        self.autocast = autocast
        self.backbone = getattr(base, base.base_model_prefix)
        self.head = base.get_output_embeddings()
        self.chunked = config.chunked_loss and _supports_chunked_loss(base) and getattr(self.head, "bias", None) is None
        self.full_model = base
        compile_on = config.compile if config.compile is not None else device.type == "cuda"
        # Compile the backbone, not the wrapper: state_dict names stay as they are.
        self.run_backbone = torch.compile(self.backbone) if compile_on else self.backbone

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def __call__(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ids = ids.to(self.device, non_blocking=True)
        targets = labels.to(self.device, non_blocking=True)[:, 1:].reshape(-1)
        with self._autocast():
            if self.chunked:
                hidden = self.run_backbone(input_ids=ids).last_hidden_state[:, :-1]
                return chunked_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), self.head.weight, targets)
            logits = self.full_model(input_ids=ids).logits[:, :-1]
            return F.cross_entropy(_upcast(logits.reshape(-1, logits.shape[-1])), targets,
                                   ignore_index=IGNORE_INDEX, reduction="sum")


def count_targets(labels: torch.Tensor) -> int:
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


class StepRunner:
    """One optimizer step over ``grad_accum`` micro-batches: the hot loop of the trainer (and of
    bench/trainer_throughput.py, which times exactly this)."""

    def __init__(self, adapter: Adapter, loss: LossComputer, optimizer: torch.optim.Optimizer,
                 max_grad_norm: float | None) -> None:
        self.adapter, self.loss, self.optimizer = adapter, loss, optimizer
        self.max_grad_norm = max_grad_norm
        self.params = [p for _, p in adapter.trainable_parameters()]

    def step(self, step: int, lr_scale: float, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Train on ``batches`` (CPU tensors) and return the step's mean token loss, on the device.

        The loss is summed over all micro-batches' target tokens and divided once, so gradient
        accumulation gives the gradient of one large batch. Nothing here waits for the device.
        """
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_scale
        targets = max(1, sum(count_targets(labels) for _, labels in batches))  # CPU labels: no sync
        step_loss = torch.zeros((), dtype=torch.float32, device=self.loss.device)
        for ids, labels in batches:
            loss_sum = self.loss(ids, labels)
            objective: torch.Tensor = loss_sum / targets
            penalty = self.adapter.regularization(step)
            if penalty is not None:
                objective = objective + penalty / len(batches)
            objective.backward()  # type: ignore[no-untyped-call]
            step_loss += loss_sum.detach() / targets
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.adapter.after_optimizer_step(step)
        self.optimizer.zero_grad(set_to_none=True)
        return step_loss


@torch.no_grad()
def evaluate(model: nn.Module, loss: LossComputer, data: PackedData, batch_size: int,
             max_batches: int | None) -> float:
    """Token-weighted mean loss over the eval split (the same sequences for every trial)."""
    model.eval()
    total, count = 0.0, 0
    try:
        for ids, labels in data.eval_batches(batch_size, max_batches):
            total += float(loss(ids, labels))
            count += count_targets(labels)
    finally:
        model.train()
    return total / count if count else math.nan


def make_optimizer(adapter: Adapter, lr: float, weight_decay: float, config: AdapterLMConfig,
                   device: torch.device) -> torch.optim.AdamW:
    fused = config.fused_optimizer if config.fused_optimizer is not None else device.type == "cuda"
    groups = [g for g in adapter.optimizer_groups(lr, weight_decay) if g["params"]]
    if not groups:
        raise ValueError("the adapter has no trainable parameters")
    return torch.optim.AdamW(groups, lr=lr, betas=config.adam_betas, eps=config.adam_eps, fused=fused)


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated accelerator memory since the slice began; on CPU, the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

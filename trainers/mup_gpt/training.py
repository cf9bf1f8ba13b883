"""One training run of the decoder: model, AdamW with per-role groups, schedule, batches, eval.

``TrainingRun`` knows nothing about budgets, reports or the service; the trainer plugin
(trainer.py) and the benchmark (bench/mup_transfer.py) both drive it step by step. Its whole
state is ``state()`` / ``restore()``: weights, AdamW state, the step (which fixes the LR), the
batch-order generator and the running train-loss sum. Batches are drawn on the CPU from a
dedicated generator, so the global RNG is never touched and resuming reproduces the order.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch

from trainers.mup_gpt.config import MupGptConfig, TrialParams, head_check
from trainers.mup_gpt.data import eval_windows, load_corpus, sample_windows
from trainers.mup_gpt.model import GPT, Architecture, build_model, count_parameters
from trainers.mup_gpt.parametrization import param_groups

# Decorrelates the batch order from the init drawn from the same seed.
_DATA_SEED_SALT = 0x5DEECE66D


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, kind: str, min_ratio: float) -> float:
    """The schedule's factor on every group's peak LR at ``step`` (0-based); past the end it stays at its end."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if kind == "linear":
        return 1.0 - (1.0 - min_ratio) * progress
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was requested, but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def architecture_for(config: MupGptConfig, width: int) -> Architecture:
    """The model shape at ``width``; ValueError if the heads do not divide it."""
    head_check(config, width)
    return Architecture(
        width=width, depth=config.depth, heads=config.heads_for(width), mlp_ratio=config.mlp_ratio,
        seq_len=config.seq_len, base_width=config.base_width,
        base_head_dim=config.resolved_head_dim(config.base_width),
    )


class TrainingRun:
    def __init__(self, config: MupGptConfig, params: TrialParams, seed: int) -> None:
        self.config, self.params = config, params
        self.width = params.width if params.width is not None else config.width
        self.arch = architecture_for(config, self.width)
        self.device = resolve_device(config.device)
        use_bf16 = config.dtype == "bfloat16" or (config.dtype == "auto" and self.device.type == "cuda")
        self.autocast_dtype = torch.bfloat16 if use_bf16 else None
        corpus = load_corpus(config)
        if corpus.train.numel() <= config.seq_len + 1:
            raise ValueError(f"the training split ({corpus.train.numel()} bytes) is shorter than seq_len + 1")
        self.corpus_digest = corpus.digest
        self.train_data = corpus.train.to(self.device)
        self.eval_batches = eval_windows(corpus.eval, config.eval_batches * config.batch_size,
                                         config.seq_len).to(self.device).split(config.batch_size)
        self.model: GPT = build_model(self.arch, config.parametrization, init_std=params.init_std,
                                      output_multiplier=params.output_multiplier, seed=seed,
                                      zero_readout=config.readout_init == "zero").to(self.device)
        self.params_count = count_parameters(self.model)
        groups = param_groups(self.model.named_parameters(), config.parametrization, self.arch.shape,
                              learning_rate=params.learning_rate, weight_decay=params.weight_decay)
        self.optimizer = torch.optim.AdamW(groups, betas=config.adam_betas, eps=config.adam_eps,
                                           fused=self.device.type == "cuda" or None)
        self.generator = torch.Generator().manual_seed(seed ^ _DATA_SEED_SALT)
        self.step = 0
        self.total_steps = config.total_steps
        self.warmup_steps = round(params.warmup_fraction * self.total_steps)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.loss_count = 0
        self.last_train_loss = math.nan

    @property
    def tokens_per_step(self) -> int:
        return self.config.batch_size * self.config.seq_len

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def train_step(self) -> None:
        multiplier = lr_multiplier(self.step, self.total_steps, self.warmup_steps, self.config.lr_schedule,
                                   self.config.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = group["peak_lr"] * multiplier
        window = sample_windows(self.train_data, self.config.batch_size, self.config.seq_len, self.generator)
        self.model.train()
        with self._autocast():
            loss = self.model.loss(window)
        loss.backward()
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss_sum += loss.detach().double()
        self.loss_count += 1
        self.step += 1

    def train_loss(self, *, reset: bool) -> float:
        """Mean training loss since the last reset (the last value if no step was taken since).

        The trainer resets only on the report grid, so an off-grid slice end does not shorten
        the next grid report's window: the running sum travels in the checkpoint.
        """
        if not self.loss_count:
            return self.last_train_loss
        mean = (self.loss_sum / self.loss_count).item()
        if reset:
            self.last_train_loss = mean
            self.loss_sum.zero_()
            self.loss_count = 0
        return mean

    def evaluate(self) -> float:
        """Mean cross-entropy (nats per byte) over the fixed held-out windows."""
        self.model.eval()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.no_grad(), self._autocast():
            for batch in self.eval_batches:
                total += self.model.loss(batch).double()
        return (total / len(self.eval_batches)).item()

    def synchronize(self) -> float:
        """Wait for queued device work; returns ``time.perf_counter()`` after it, for timing."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """JSON-able scalars and the extra tensors; weights and AdamW state are read separately."""
        scalars = {"step": self.step, "loss_count": self.loss_count, "last_train_loss": self.last_train_loss}
        extra = {"data_generator": self.generator.get_state(), "loss_sum": self.loss_sum.reshape(1)}
        return scalars, extra

    def restore(self, scalars: dict[str, Any], extra: dict[str, torch.Tensor]) -> None:
        self.step = int(scalars["step"])
        self.loss_count = int(scalars["loss_count"])
        self.last_train_loss = float(scalars["last_train_loss"])
        self.generator.set_state(extra["data_generator"])
        self.loss_sum = extra["loss_sum"].to(self.device, torch.float64).reshape(())

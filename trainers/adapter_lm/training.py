"""One budget slice of an ``adapter_lm`` trial: set up or resume the run, train, checkpoint.

A slice trains optimizer steps ``step_at(budget_from) .. step_at(budget_to)`` of one run whose
schedules span ``max_budget`` (schedule.py), reports at the absolute grid
``k * report_every`` and at the slice end, and checkpoints adapter, optimizer moments, RNG
and method state, so slices 0->3->9 give the numbers of one 0->9 run (tested).
Batches depend on ``(seed, step)`` only (data.py), and evaluation changes no state.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from hpo_service.workers.trainer import CheckpointError, Reporter, TrainerError, TrainRequest, TrainResult
from trainers.adapter_lm import checkpoint
from trainers.adapter_lm.adapters import build_adapter
from trainers.adapter_lm.config import AdapterLMConfig
from trainers.adapter_lm.data import load_data
from trainers.adapter_lm.model import autocast_dtype, load_base_model, load_tokenizer, select_device
from trainers.adapter_lm.params import TrialParams, parse_trial_params
from trainers.adapter_lm.runtime import LossComputer, StepRunner, evaluate, make_optimizer, peak_memory_mb
from trainers.adapter_lm.schedule import BudgetClock, lr_factor, report_steps, warmup_steps

_BUDGET_TOLERANCE = 1e-9


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr).encode()).hexdigest()


def train_slice(request: TrainRequest, reporter: Reporter) -> TrainResult:
    config = _config_of(request)
    try:
        trial = parse_trial_params(config, request.params)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise TrainerError(f"invalid params: {exc}") from exc
    return _Slice(request, config, trial).run(reporter)


def _config_of(request: TrainRequest) -> AdapterLMConfig:
    if isinstance(request.config, AdapterLMConfig):
        config = request.config
    else:
        try:
            config = AdapterLMConfig.model_validate(request.config.model_dump())
        except ValidationError as exc:
            raise TrainerError(f"invalid adapter_lm trainer config: {exc}") from exc
    expected = request.extra.get("max_budget")
    if expected is not None and abs(float(expected) - config.max_budget) > _BUDGET_TOLERANCE * config.max_budget:
        raise TrainerError(f"config max_budget {config.max_budget:g} differs from the study's {expected:g}")
    return config


class _Slice:
    """One call of ``train``: set up (or resume) the run, train the slice, checkpoint it."""

    def __init__(self, request: TrainRequest, config: AdapterLMConfig, trial: TrialParams) -> None:
        self.request, self.config, self.trial = request, config, trial
        try:
            self._setup()
        except (ValueError, KeyError) as exc:  # data, model, adapter or budget that cannot train
            raise TrainerError(str(exc)) from exc
        self.window_loss = torch.zeros((), dtype=torch.float32, device=self.device)
        self.window_steps = 0
        if self.step_from > 0:
            self._resume()

    def _setup(self) -> None:
        config, request = self.config, self.request
        self.device = select_device(config)
        self.autocast = autocast_dtype(config, self.device)
        self.data = load_data(config, load_tokenizer(config))
        per_epoch = self.data.steps_per_epoch(config.batch_size, config.grad_accum_steps)
        self.clock = BudgetClock(per_epoch if config.budget_unit == "epochs" else 1)
        self.total_steps = self.clock.step_at(config.max_budget)
        self.step_from, self.step_to = self._slice_steps()
        base = load_base_model(config, self.device, self.autocast or torch.float32)
        if config.gradient_checkpointing:
            # Non-reentrant: the frozen embeddings' outputs need not require grad for it to work.
            # transformers 5.x renamed the method and warns on the old name.
            if hasattr(base, "activation_checkpointing_enable"):
                base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base_storage = {t.data_ptr() for t in base.state_dict().values()}
        torch.manual_seed(request.seed)  # adapter init depends on the trial seed only
        self.adapter = build_adapter(self.trial.kind, base, self.trial.adapter, self.total_steps,
                                     self.autocast is not None)
        self.model = self.adapter.model
        # Whatever the injection added (parameters and buffers) is the adapter's state.
        self.state_keys = sorted(k for k, v in self.model.state_dict().items() if v.data_ptr() not in base_storage)
        if any(".base_layer." in key for key in self.state_keys):  # would checkpoint the whole model
            raise ValueError(f"adapter {self.trial.kind} replaced frozen base weights; refusing to train it")
        self.names = {id(p): n for n, p in self.model.named_parameters() if p.requires_grad}
        optim = self.trial.optimizer
        self.optimizer = make_optimizer(self.adapter, optim.learning_rate, optim.weight_decay, config, self.device)
        self.warmup = warmup_steps(self.total_steps, optim.warmup_ratio)
        self.loss = LossComputer(self.model, config, self.device, self.autocast)
        self.runner = StepRunner(self.adapter, self.loss, self.optimizer, config.max_grad_norm)

    def _slice_steps(self) -> tuple[int, int]:
        start, end, top = self.request.budget_from, self.request.budget_to, self.config.max_budget
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
            raise ValueError(f"budget slice {start:g}->{end:g} must be finite, start at 0 or later and grow")
        if end > top * (1 + _BUDGET_TOLERANCE):
            raise ValueError(f"budget_to {end:g} exceeds max_budget {top:g}; set max_budget to the study's")
        step_from, step_to = self.clock.step_at(start), self.clock.step_at(end)
        if step_to <= step_from:
            raise ValueError(f"budget slice {start:g}->{end:g} is shorter than one optimizer step "
                             f"({self.clock.steps_per_unit} steps per {self.config.budget_unit[:-1]})")
        return step_from, step_to

    def _identity(self) -> dict[str, Any]:
        return {"seed": self.request.seed, "params_sha256": digest(self.request.params),
                "config_sha256": digest(self.config.model_dump(mode="json")), "adapter": self.trial.kind}

    def _resume(self) -> None:
        folder = self.request.checkpoint_in
        if folder is None:
            raise CheckpointError(f"trial {self.request.trial_id}: resuming at budget "
                                  f"{self.request.budget_from:g} needs a checkpoint, and none was given")
        loaded = checkpoint.read(folder)
        payload = loaded.payload
        if any(payload.get(k) != v for k, v in self._identity().items()):
            raise CheckpointError(f"{folder}: checkpoint belongs to other params, config or seed")
        if payload.get("step") != self.step_from:
            raise CheckpointError(f"{folder}: checkpoint is at step {payload.get('step')}, the slice starts at "
                                  f"step {self.step_from}")
        state = self.model.state_dict()
        try:
            with torch.no_grad():
                for key in self.state_keys:
                    state[key].copy_(loaded.adapter[key])
            checkpoint.load_optimizer(self.optimizer, self.names, loaded.optimizer)
            method = {k.removeprefix("adapter::"): v for k, v in loaded.extra.items() if k.startswith("adapter::")}
            self.adapter.load_extra_state(method, payload.get("adapter_meta", {}))
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{folder}: checkpoint does not fit this adapter ({exc})") from exc
        self.window_loss.copy_(loaded.extra["window.loss_sum"])
        self.window_steps = int(payload["window_steps"])
        checkpoint.restore_rng(loaded.extra, self.device)

    def _train_step(self, step: int) -> int:
        config = self.config
        factor = lr_factor(step, self.total_steps, self.warmup, config.lr_schedule, config.min_lr_ratio)
        batches = [self.data.micro_batch(self.request.seed, step, m, config.batch_size, config.grad_accum_steps)
                   for m in range(config.grad_accum_steps)]
        self.window_loss += self.runner.step(step, factor, batches)  # summed on the device: no sync
        self.window_steps += 1
        return sum(ids.numel() for ids, _ in batches)

    def run(self, reporter: Reporter) -> TrainResult:
        reporter.log(f"trial {self.request.trial_id}: {self.trial.kind}, {self.adapter.trainable_count():,} trainable "
                     f"params, steps {self.step_from}->{self.step_to} of {self.total_steps} "
                     f"({self.clock.steps_per_unit} per {self.config.budget_unit[:-1]})")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        reports = dict(report_steps(self.step_from, self.step_to, self.config.report_every))
        metrics: dict[str, float] = {}
        done, tokens, started = self.step_from, 0, time.perf_counter()
        for step in range(self.step_from, self.step_to):
            tokens += self._train_step(step)
            done = step + 1
            if done not in reports:
                continue
            metrics = self._metrics(tokens / max(time.perf_counter() - started, 1e-9))
            position = self.request.budget_to if done == self.step_to else self.clock.budget_at(done)
            reporter.log(f"step {done}/{self.total_steps} (budget {position:g}) train_loss {metrics['train_loss']:.4f} "
                         f"eval_loss {metrics['eval_loss']:.4f} tokens/s {metrics['tokens_per_s']:.0f}")
            if reports[done]:  # off-grid slice ends keep the window, so splits do not shift it
                self.window_loss.zero_()
                self.window_steps = 0
            if not math.isfinite(metrics["train_loss"]) or not math.isfinite(metrics["eval_loss"]):
                reporter.report(position, metrics)
                return TrainResult(metrics=metrics, budget_done=position, wrote_checkpoint=False)
            directive = reporter.report(position, metrics)
            tokens, started = 0, time.perf_counter()
            if directive == "stop":
                break
        budget_done = self.request.budget_to if done == self.step_to else self.clock.budget_at(done)
        self._save(done, budget_done, metrics)
        return TrainResult(metrics=metrics, budget_done=budget_done)

    def _metrics(self, tokens_per_s: float) -> dict[str, float]:
        train_loss = float(self.window_loss) / max(1, self.window_steps)
        eval_loss = evaluate(self.model, self.loss, self.data, self.config.batch_size, self.config.eval_max_batches)
        perplexity = math.exp(eval_loss) if eval_loss < 700 else math.inf  # exp overflows past ~709
        return {"train_loss": train_loss, "eval_loss": eval_loss, "eval_perplexity": perplexity,
                "tokens_per_s": tokens_per_s, "trainable_params": float(self.adapter.trainable_count()),
                "peak_memory_mb": peak_memory_mb(self.device)}

    def _save(self, step: int, budget_done: float, metrics: dict[str, float]) -> None:
        folder: Path = self.request.checkpoint_out
        method_tensors, method_meta = self.adapter.extra_state()
        extra = {"window.loss_sum": self.window_loss, **checkpoint.rng_tensors(self.device),
                 **{f"adapter::{k}": v for k, v in method_tensors.items()}}
        state = self.model.state_dict()
        payload = {**self._identity(), "trial_id": self.request.trial_id, "step": step, "budget_done": budget_done,
                   "total_steps": self.total_steps, "window_steps": self.window_steps, "metrics": metrics,
                   "adapter_meta": method_meta, "base_model": self.config.model}
        # export/ first: state.json, written last, records its digests too.
        self.adapter.export(folder / checkpoint.EXPORT_DIR, self.config.model)
        checkpoint.write(folder, payload, {k: state[k] for k in self.state_keys},
                         checkpoint.optimizer_tensors(self.optimizer, self.names), extra)

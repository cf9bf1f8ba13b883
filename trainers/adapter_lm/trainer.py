"""The ``adapter_lm`` trainer: causal-LM fine-tuning with an adapter, one budget slice per call.

This module stays light (pydantic only): the API server imports it to validate a study's
``trainer.params`` and objective metric, and must not pay for (or need) torch, transformers
and PEFT. ``train`` imports the heavy part, ``training.py``, in the worker.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from hpo_service.workers.trainer import Reporter, TrainRequest, TrainResult
from trainers.adapter_lm.config import AdapterLMConfig

METRICS = ("eval_loss", "train_loss", "eval_perplexity", "tokens_per_s", "trainable_params", "peak_memory_mb")


class AdapterLMTrainer:
    name = "adapter_lm"
    config_model: type[BaseModel] = AdapterLMConfig
    metrics: tuple[str, ...] = METRICS
    supports_mup = False

    def train(self, request: TrainRequest, reporter: Reporter) -> TrainResult:
        """Train ``request.budget_from -> budget_to``; see training.py for the guarantees.

        Raises TrainerError for params, config, data or a model that cannot train, and
        CheckpointError for a checkpoint that is missing, corrupt or of another trial.
        """
        from trainers.adapter_lm.training import train_slice

        return train_slice(request, reporter)

    def export_adapter(self, checkpoint_dir: Path, out_dir: Path) -> Path:
        """Write a loadable adapter from a checkpoint folder (see export.py); needs no torch."""
        from trainers.adapter_lm.export import export_adapter

        return export_adapter(checkpoint_dir, out_dir)


TRAINER = AdapterLMTrainer()

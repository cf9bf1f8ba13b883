"""The ``mup_gpt`` trainer plugin: a byte-level GPT whose width is a parameter, in SP or muP.

This module stays light (pydantic only): the API server imports it to validate a study's
``trainer.params``, its objective metric and its transfer axis, and must not pay for (or
need) torch. ``train`` imports the heavy part, ``slices.py``, in the worker.

``supports_mup``, ``transfer_axes`` and ``width_param`` are what the ``mup_transfer``
scheduler reads: it sets the trial param ``width`` per stage (``scheduler.transfer.param``,
default "width"), and a trial param wins over the config's ``width``.
"""

from __future__ import annotations

from pydantic import BaseModel

from hpo_service.workers.trainer import Reporter, TrainRequest, TrainResult
from trainers.mup_gpt.config import MupGptConfig

METRICS = ("train_loss", "eval_loss", "tokens_per_s", "params_count")


class MupGptTrainer:
    name = "mup_gpt"
    config_model: type[BaseModel] = MupGptConfig
    metrics: tuple[str, ...] = METRICS
    supports_mup = True
    transfer_axes: tuple[str, ...] = ("width",)  # what scheduler.transfer.axis may name
    width_param = "width"  # the trial param that carries the width

    def train(self, request: TrainRequest, reporter: Reporter) -> TrainResult:
        """Train ``request.budget_from -> budget_to`` at the width of ``params["width"]`` (else the config's).

        Raises TrainerError for params, config or data that cannot train, and CheckpointError
        for a checkpoint that is missing, corrupt or of another run (seed, params, width, corpus).
        """
        from trainers.mup_gpt.slices import train_slice

        return train_slice(request, reporter)


TRAINER = MupGptTrainer()

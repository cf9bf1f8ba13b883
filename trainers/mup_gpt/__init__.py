"""The ``mup_gpt`` trainer: a byte-level GPT whose width is a parameter, in SP or muP.

Registered as ``trainers.mup_gpt:TRAINER`` (see hpo_service/workers/registry.py); see
docs/mup.md for the parametrization, the coordinate check and the ``mup_transfer`` schedule.
"""

from trainers.mup_gpt.config import MupGptConfig, TrialParams
from trainers.mup_gpt.trainer import TRAINER, MupGptTrainer

__all__ = ["TRAINER", "MupGptConfig", "MupGptTrainer", "TrialParams"]

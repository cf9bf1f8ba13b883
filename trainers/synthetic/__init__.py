"""The ``synthetic`` trainer: learning curves from a formula, for tests, the demo and benchmarks.

Registered as ``trainers.synthetic:TRAINER`` (see hpo_service/workers/registry.py).
"""

from trainers.synthetic.config import SyntheticConfig
from trainers.synthetic.trainer import TRAINER, SyntheticTrainer

__all__ = ["TRAINER", "SyntheticConfig", "SyntheticTrainer"]

"""The ``adapter_lm`` trainer: causal-LM fine-tuning with PEFT adapters and our own.

Registered as ``trainers.adapter_lm:TRAINER`` (see hpo_service/workers/registry.py); needs
the ``train`` extra (torch, transformers, peft, tokenizers, safetensors). The heavy imports
happen when this package is imported, so the registry imports it only when asked for it.
"""

from trainers.adapter_lm.config import AdapterLMConfig
from trainers.adapter_lm.trainer import METRICS, TRAINER, AdapterLMTrainer

__all__ = ["METRICS", "TRAINER", "AdapterLMConfig", "AdapterLMTrainer"]

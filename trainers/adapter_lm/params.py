"""A trial's params: the optimizer's (learning rate, weight decay, warmup) and the adapter's.

Keys other than ``learning_rate``, ``weight_decay``, ``warmup_ratio`` and ``adapter`` go to
the adapter kind's params model, which forbids unknown keys: a misspelt search-space entry
fails the trial with its name instead of silently training with a default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trainers.adapter_lm.adapters import PARAMS, AdapterParams, parse_adapter_params
from trainers.adapter_lm.config import AdapterLMConfig

OPTIMIZER_KEYS = frozenset({"learning_rate", "weight_decay", "warmup_ratio"})


class OptimizerParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    learning_rate: float = Field(gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    warmup_ratio: float = Field(default=0.0, ge=0.0, lt=1.0, description="Share of max_budget's steps.")


@dataclass(frozen=True)
class TrialParams:
    kind: str
    optimizer: OptimizerParams
    adapter: AdapterParams


def parse_trial_params(config: AdapterLMConfig, raw: dict[str, Any]) -> TrialParams:
    """Raises ValueError (pydantic's ValidationError is one) naming the offending key."""
    kind = raw.get("adapter", config.adapter)
    if kind not in PARAMS:
        raise ValueError(f"adapter {kind!r} is not one of: {', '.join(sorted(PARAMS))}")
    optimizer = OptimizerParams.model_validate({k: v for k, v in raw.items() if k in OPTIMIZER_KEYS})
    adapter_raw = {k: v for k, v in raw.items() if k not in OPTIMIZER_KEYS and k != "adapter"}
    return TrialParams(kind, optimizer, parse_adapter_params(kind, adapter_raw))

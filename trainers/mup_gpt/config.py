"""Fixed settings of the ``mup_gpt`` trainer (a study's ``trainer.params``) and its trial params.

The study fixes the architecture family (depth, head size, sequence length), the
parametrization, the data and the budget mapping; each trial brings what is searched
(``TrialParams``: learning rate, init scale, output multiplier, warmup, weight decay) and,
under the ``mup_transfer`` scheduler, its ``width``. A ``width`` in the trial params wins
over ``MupGptConfig.width``: that is how one study trains proxies and then the target.

Budget units
------------
One budget unit is ``steps_per_unit`` optimizer steps; a budget position ``b`` is step
``floor(b * steps_per_unit)``, the same on every slice, so slices meet exactly. The
learning-rate schedule is laid out over ``max_budget`` (which must be the study's
``scheduler.max_budget``), so every rung is a prefix of one schedule and a promoted trial
resumes where it stopped. A worker that passes ``extra["max_budget"]`` gets it cross-checked.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_HEAD_DIM = 64
BUDGET_TOLERANCE = 1e-9  # float drift in budget positions, e.g. 3 * 0.1


class MupGptConfig(BaseModel):
    # extra=forbid: a typo such as "base_widht" must fail study creation, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    width: int = Field(default=256, ge=8, le=1 << 16, description="d_model; a trial param `width` overrides it.")
    base_width: int = Field(default=256, ge=8, le=1 << 16, description="muP base shape: muP equals SP here.")
    depth: int = Field(default=4, ge=1, le=256, description="Transformer blocks.")
    heads: int | None = Field(default=None, ge=1, description="Fixed head count (head size grows with width).")
    head_dim: int | None = Field(
        default=None, ge=1, description=f"Fixed head size (head count grows with width); default {DEFAULT_HEAD_DIM}."
    )
    mlp_ratio: int = Field(default=4, ge=1, le=64)
    seq_len: int = Field(default=256, ge=8, le=1 << 16)
    batch_size: int = Field(default=32, ge=1, le=1 << 14, description="Sequences per optimizer step.")
    parametrization: Literal["mup", "sp"] = "mup"
    readout_init: Literal["zero", "normal"] = Field(
        default="zero", description="muP readout init: zero (Tensor Programs V) or N(0, init_std^2); SP: normal."
    )
    steps_per_unit: int = Field(default=100, ge=1, le=1 << 24, description="Optimizer steps per budget unit.")
    max_budget: float = Field(gt=0, description="The study's scheduler.max_budget (the LR schedule spans it).")
    report_every: float = Field(default=1.0, gt=0, description="Budget units between reports.")
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(default=0.1, ge=0.0, le=1.0, description="Final LR as a fraction of the peak.")
    adam_betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = Field(default=1e-8, gt=0.0)
    max_grad_norm: float | None = Field(
        default=None, gt=0.0, description="Global-norm clipping; off by default (the norm is width-dependent)."
    )
    corpus: Literal["stdlib", "file"] = Field(
        default="stdlib", description="stdlib: the Python standard library's sources + pydoc_data.topics."
    )
    corpus_path: str | None = Field(default=None, description="A local text file, with corpus: file.")
    corpus_max_bytes: int = Field(default=4_000_000, ge=10_000, le=1 << 31)
    eval_fraction: float = Field(default=0.05, gt=0.0, le=0.5, description="Held-out share (whole documents).")
    eval_batches: int = Field(default=8, ge=1, le=10_000, description="Batches of held-out windows per eval.")
    cache_dir: str | None = Field(default=None, description="Corpus cache; default $HPO_CACHE_DIR or a temp dir.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="bfloat16: autocast with fp32 weights. auto: bfloat16 on CUDA, else float32."
    )
    seed: int | None = Field(
        default=None, ge=0, le=2**63 - 1,
        description="One init and batch order for every trial (less noise between LRs); None: the trial's seed.",
    )

    @model_validator(mode="after")
    def _check(self) -> "MupGptConfig":
        if self.heads is not None and self.head_dim is not None:
            raise ValueError("give heads or head_dim, not both")
        low, high = self.adam_betas
        if not (0.0 <= low < 1.0 and 0.0 <= high < 1.0):
            raise ValueError(f"adam_betas must lie in [0, 1), got {self.adam_betas}")
        if (self.corpus == "file") != (self.corpus_path is not None):
            raise ValueError("corpus_path is required with corpus: file, and only then")
        if self.report_every * self.steps_per_unit < 1:
            raise ValueError("report_every * steps_per_unit must be at least one optimizer step")
        if not math.isfinite(self.max_budget * self.steps_per_unit):
            raise ValueError("max_budget * steps_per_unit must be finite")
        head_check(self, self.width)
        head_check(self, self.base_width)
        return self

    def heads_for(self, width: int) -> int:
        return self.heads if self.heads is not None else width // self.resolved_head_dim(width)

    def resolved_head_dim(self, width: int) -> int:
        if self.heads is not None:
            return width // self.heads
        return self.head_dim if self.head_dim is not None else min(DEFAULT_HEAD_DIM, width)

    @property
    def total_steps(self) -> int:
        return steps_at(self.max_budget, self.steps_per_unit)


def head_check(config: MupGptConfig, width: int) -> None:
    """Raise ValueError when ``width`` cannot be split into the configured heads."""
    if config.heads is not None:
        if width % config.heads:
            raise ValueError(f"width {width} is not divisible by heads={config.heads}")
        return
    head_dim = config.resolved_head_dim(width)
    if width % head_dim:
        raise ValueError(f"width {width} is not divisible by head_dim={head_dim}")


def steps_at(budget: float, steps_per_unit: int) -> int:
    """The optimizer step at budget position ``budget`` (float drift tolerated, e.g. 0.3 * 10)."""
    return math.floor(budget * steps_per_unit + BUDGET_TOLERANCE)


def report_positions(budget_from: float, budget_to: float, every: float) -> list[tuple[float, bool]]:
    """(position, on_grid): grid points ``k * every`` in ``(budget_from, budget_to]``, then
    ``budget_to`` flagged off-grid when it is not one of them (the slice end is always reported)."""
    first = math.floor(budget_from / every + BUDGET_TOLERANCE) + 1
    last = math.floor(budget_to / every + BUDGET_TOLERANCE)
    # round(): 3 * 0.1 is 0.30000000000000004; steps must read the same however a run was split.
    positions = [(round(k * every, 10), True) for k in range(first, last + 1)]
    if not positions or abs(positions[-1][0] - budget_to) > BUDGET_TOLERANCE * max(1.0, budget_to):
        positions.append((budget_to, False))
    return positions


class TrialParams(BaseModel):
    """What a study searches over, one value per trial (``TrainRequest.params``)."""

    # extra=forbid: a search-space dimension the trainer ignores would be tuned for nothing.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    learning_rate: float = Field(gt=0.0, le=10.0, description="Peak Adam LR; under muP, the LR at base width.")
    init_std: float = Field(default=0.02, gt=0.0, le=10.0, description="Init std at base width.")
    output_multiplier: float = Field(default=1.0, gt=0.0, le=1e4, description="Logit multiplier at base width.")
    warmup_fraction: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of max_budget warmed up.")
    weight_decay: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Independent decay per step (times the schedule), not times the LR."
    )
    width: int | None = Field(default=None, ge=8, le=1 << 16, description="Overrides the config's width.")

"""The study specification: what a user submits (YAML or JSON) to start a study.

Every model forbids unknown keys so that a typo ("max_buget") is an error that
names the field rather than a silently ignored setting.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from hpo_service.domain.space import SearchSpace
from hpo_service.domain.states import Direction

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
MAX_RUNGS = 10
_TAGS = {"float", "int", "categorical"}
_SPACE_ADAPTER: TypeAdapter[SearchSpace] = TypeAdapter(SearchSpace)
SchedulerKind = Literal["hyperband", "asha", "random", "mup_transfer"]
SamplerKind = Literal["tpe", "random", "qmc", "gp", "cmaes"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Objective(_Strict):
    metric: str = Field(min_length=1, max_length=128)
    direction: Direction = Direction.MINIMIZE


class CheckSweep(_Strict):
    """Stage 3 of muP transfer: sweep one parameter around the transferred value at the target width."""

    param: str = "learning_rate"
    factor: float = Field(default=2.0, gt=1.0, le=10.0, description="grid step: value * factor**k")
    steps: int = Field(default=2, ge=1, le=8, description="grid steps on each side of the transferred value")


class TransferSpec(_Strict):
    """muP transfer (or rank transfer): tune at proxy width(s), train the top-k at the target."""

    param: str = Field(default="width", description="the trial parameter that carries the width (or rank)")
    axis: Literal["width", "rank"] = "width"
    proxy: list[int] = Field(min_length=1, max_length=4, description="proxy widths (or ranks) for stage 1")
    target: int = Field(gt=0)
    top_k: int = Field(default=3, ge=1, le=64)
    stage1: Literal["hyperband", "asha"] = "hyperband"
    check: CheckSweep | None = Field(default_factory=CheckSweep)
    # Training cost per budget unit grows like width**compute_exponent (2 for a transformer's
    # width at fixed depth; about 1 for an adapter's rank): used to report the tuning cost.
    compute_exponent: float = Field(default=2.0, ge=0.0, le=4.0)

    @model_validator(mode="after")
    def _check_widths(self) -> "TransferSpec":
        if any(p <= 0 for p in self.proxy):
            raise ValueError("proxy widths must be positive")
        if max(self.proxy) >= self.target:
            raise ValueError(f"proxy widths {self.proxy} must be smaller than the target {self.target}")
        return self


class SchedulerSpec(_Strict):
    kind: SchedulerKind = "hyperband"
    min_budget: float = Field(default=1.0, gt=0)
    max_budget: float = Field(default=81.0, gt=0)
    eta: int = Field(default=3, ge=2, le=16)
    # Hyperband: how many times to sweep all brackets (limits may end it earlier).
    iterations: int = Field(default=1, ge=1, le=1000)
    transfer: TransferSpec | None = None  # only for kind mup_transfer

    @model_validator(mode="after")
    def _check_budgets(self) -> "SchedulerSpec":
        if not (math.isfinite(self.min_budget) and math.isfinite(self.max_budget)):
            raise ValueError("min_budget and max_budget must be finite")
        if self.min_budget > self.max_budget:
            raise ValueError(
                f"min_budget ({self.min_budget}) must be <= max_budget ({self.max_budget})"
            )
        if (self.kind == "mup_transfer") != (self.transfer is not None):
            raise ValueError("kind mup_transfer needs a `transfer` section, and only it may have one")
        # More rungs than this makes Hyperband's first bracket astronomically large (eta**s trials).
        if self.max_budget / self.min_budget >= float(self.eta) ** (MAX_RUNGS + 1):
            raise ValueError(
                f"max_budget/min_budget = {self.max_budget / self.min_budget:g} gives more than {MAX_RUNGS} "
                f"halvings at eta={self.eta}; raise min_budget or eta"
            )
        return self


class SamplerSpec(_Strict):
    kind: SamplerKind = "tpe"
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    # Random proposals before a model-based sampler takes over on a rung.
    n_startup_trials: int = Field(default=10, ge=1, le=10_000)


class TrainerSpec(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    params: dict[str, Any] = Field(default_factory=dict)


class Limits(_Strict):
    max_trials: int | None = Field(default=None, ge=1, le=10_000_000)
    max_concurrent: int | None = Field(default=None, ge=1, le=100_000)
    total_budget: float | None = Field(default=None, gt=0)


class RetryPolicy(_Strict):
    lease_seconds: float = Field(default=60.0, ge=1.0, le=86_400.0)
    max_attempts: int = Field(default=3, ge=1, le=100)


class StudySpec(_Strict):
    name: str
    objective: Objective
    search_space: SearchSpace | str = Field(
        description="Inline distributions, or the name of a file in search_spaces/ (e.g. 'lora')."
    )
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    trainer: TrainerSpec
    limits: Limits = Field(default_factory=Limits)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not NAME_PATTERN.match(name):
            raise ValueError(
                "use 1-128 characters: letters, digits, '_', '.', '-', starting with a letter or digit"
            )
        return name

    @model_validator(mode="before")
    @classmethod
    def _check_space_first(cls, raw: Any) -> Any:
        # Checked before field validation: a union error would list both branches
        # ("dict[...]", "str") and bury the cause.
        if isinstance(raw, dict) and "search_space" in raw:
            try:
                _check_space(raw["search_space"])
            except ValueError as error:
                raise ValueError(f"search_space: {error}") from None
        return raw

    @property
    def space(self) -> SearchSpace:
        """The resolved search space; only valid after named spaces were resolved."""
        if isinstance(self.search_space, str):
            raise ValueError(f"search space {self.search_space!r} was not resolved")
        return self.search_space


def _check_space(space: Any) -> None:
    if isinstance(space, str):
        if not re.match(r"^[A-Za-z0-9_\-]{1,64}$", space):
            raise ValueError(
                "a named search space is a file name in search_spaces/ without '.yaml' "
                "(letters, digits, '_', '-')"
            )
        return
    if not isinstance(space, dict):
        raise ValueError("give a mapping of parameter name -> distribution, or the name of a search space file")
    if not space:
        raise ValueError("the search space is empty; give at least one parameter")
    if len(space) > 256:
        raise ValueError(f"{len(space)} parameters is more than the limit of 256")
    for key in space:
        if not isinstance(key, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$", key):
            raise ValueError(f"parameter name {key!r} must be an identifier of at most 64 characters")
    try:
        _SPACE_ADAPTER.validate_python(space)
    except ValidationError as error:
        first = error.errors()[0]
        # loc is (param, type-tag, field...); the tag only repeats what 'type' says.
        loc = [str(part) for i, part in enumerate(first["loc"]) if i != 1 or part not in _TAGS]
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ValueError(f"{'.'.join(loc)}: {message}") from None

"""Search spaces: the distributions a study samples its hyperparameters from.

Pure data with validation. The sampling layer turns these into Optuna
distributions; nothing here knows about Optuna.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

ParamValue = Union[float, int, str, bool, None]


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatDistribution(_Dist):
    type: Literal["float"] = "float"
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _check(self) -> "FloatDistribution":
        _check_range(self.low, self.high, self.log)
        if self.step is not None:
            if self.log:
                raise ValueError("'step' cannot be combined with 'log: true'; drop one of them")
            if self.step <= 0:
                raise ValueError(f"'step' must be > 0, got {self.step}")
        return self

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and self.low <= float(value) <= self.high


class IntDistribution(_Dist):
    type: Literal["int"] = "int"
    low: int
    high: int
    log: bool = False
    step: int = 1

    @model_validator(mode="after")
    def _check(self) -> "IntDistribution":
        _check_range(self.low, self.high, self.log)
        if self.step < 1:
            raise ValueError(f"'step' must be >= 1, got {self.step}")
        if self.log and self.step != 1:
            raise ValueError("'step' cannot be combined with 'log: true'; drop one of them")
        return self

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high


class CategoricalDistribution(_Dist):
    type: Literal["categorical"] = "categorical"
    # At most 1000: every proposal scores each choice (TPE), under the study's lock.
    choices: list[ParamValue] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _check(self) -> "CategoricalDistribution":
        seen: set[tuple[str, str]] = set()
        for choice in self.choices:
            key = (type(choice).__name__, repr(choice))  # True and 1 are different choices
            if key in seen:
                raise ValueError(f"duplicate choice {choice!r}; list each choice once")
            seen.add(key)
        return self

    def contains(self, value: Any) -> bool:
        return value in self.choices


Distribution = Annotated[
    Union[FloatDistribution, IntDistribution, CategoricalDistribution],
    Field(discriminator="type"),
]

SearchSpace = dict[str, Distribution]


def _check_range(low: float, high: float, log: bool) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("'low' and 'high' must be finite numbers")
    if low > high:
        raise ValueError(f"'low' ({low}) must be <= 'high' ({high}); swap them")
    if log and low <= 0:
        raise ValueError(f"'log: true' needs 'low' > 0, got {low}; raise 'low' or set 'log: false'")


def validate_params(space: SearchSpace, params: dict[str, Any]) -> None:
    """Raise ValueError naming the first parameter that is missing or out of its range."""
    for name, dist in space.items():
        if name not in params:
            raise ValueError(f"parameter {name!r} is missing")
        if not dist.contains(params[name]):
            raise ValueError(f"parameter {name!r}={params[name]!r} is outside its distribution {dist!r}")

"""Filters that readers pass down to the stores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TrialOrder = Literal["number", "-number", "value", "-value"]


@dataclass(frozen=True)
class TrialFilter:
    state: str | None = None
    bracket: int | None = None
    rung: int | None = None
    order: TrialOrder = "number"

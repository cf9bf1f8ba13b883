"""What the sampling layer learns from: one trial's score at one rung.

The database produces these from rung-result rows; the sampling layer never
reads the database itself (STYLE.md item 4: a narrow read port).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Observation:
    """A configuration's score after training to a rung's budget.

    ``score`` is lower-is-better (the caller maps maximisation to ``-value``).
    ``seq`` is the rung-result row id: it only grows, so a caller that remembers
    ``Proposer.last_seq`` can load just the rows written since.
    """

    params: dict[str, Any]
    rung: int
    budget: float
    score: float
    seq: int

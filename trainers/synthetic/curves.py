"""Pure learning-curve math for the synthetic trainer: params in, a curve out.

No I/O and no randomness here, so tests can check the shape of the response surface
(where the optimum is, which curves cross) without running the trainer.

The model
---------
``loss(b) = final + (start - final) * (1 + b) ** (-alpha)``

- ``final`` is ``FLOOR_LOSS`` plus one penalty per param:
  - numeric params with a log-scale name (``lr``, ``*_lr``, ``learning_rate``,
    ``weight_decay``): ``LOG_WEIGHT * (log10(|v| + 1e-12) - log10(|t| + 1e-12)) ** 2``,
    i.e. a squared distance in decades, because such params are tuned in decades;
  - other numeric params: ``LINEAR_WEIGHT * ((v - t) / (|v| + |t| + 1)) ** 2``, normalised
    so that a batch size of 32 and a dropout of 0.1 both contribute a bounded amount;
  - categorical params (strings, bools, None, ...): a fixed offset in
    ``[0, CATEGORY_SPREAD)`` from ``zlib.crc32`` of ``name=value``; crc32 rather than
    ``hash()`` because ``hash()`` of a string changes between processes.
  The target ``t`` comes from the config's ``optimum``; a missing one defaults to
  ``DEFAULT_LOG_TARGET`` for log-scale params and ``DEFAULT_LINEAR_TARGET`` otherwise.
- ``alpha`` (how fast the curve falls) is ``BASE_ALPHA * exp(speed)``. A numeric param above
  its target adds to ``speed`` in proportion to its distance: like a learning rate that is
  too high, it learns fast early and ends worse. That trade makes curves cross, which is
  what makes early stopping a gamble and Hyperband worth having. Categorical choices add a
  small crc32-derived jitter so they cross too.
- ``start`` is ``START_LOSS``, raised for configs so bad that their final loss is near it,
  so every curve falls.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FLOOR_LOSS = 0.05
START_LOSS = 1.0
MIN_DROP = 0.25  # every curve falls by at least this much from budget 0 to infinity
BASE_ALPHA = 1.0
MAX_SPEED = 2.0  # keeps alpha within BASE_ALPHA * e**(+-2): no flat or vertical curves
LOG_WEIGHT = 0.1  # loss per squared decade away from the target
LINEAR_WEIGHT = 0.2
CATEGORY_SPREAD = 0.05
SPEED_PER_DECADE = 0.4
SPEED_LINEAR = 0.4
CATEGORY_SPEED_SPREAD = 0.4
DEFAULT_LOG_TARGET = 1e-3
DEFAULT_LINEAR_TARGET = 0.0
_LOG_EPSILON = 1e-12  # so that a value of 0 has a (very distant) log position
_LOG_TOKENS = frozenset({"lr"})
_LOG_SUBSTRINGS = ("learning_rate", "weight_decay")


@dataclass(frozen=True)
class Curve:
    start: float
    final: float
    alpha: float

    def loss_at(self, budget: float) -> float:
        """Noise-free loss after training for ``budget`` units."""
        return self.final + (self.start - self.final) * math.pow(1.0 + budget, -self.alpha)


def is_log_scale(name: str) -> bool:
    """Whether a param is compared in decades, judged by its name alone.

    The trainer sees params, not the search space, so the name is all it has. ``lr`` is
    matched as a whole token so that e.g. ``ctrl_dim`` is not mistaken for a learning rate.
    """
    lowered = name.lower()
    if any(part in lowered for part in _LOG_SUBSTRINGS):
        return True
    return any(token in _LOG_TOKENS for token in re.split(r"[^a-z0-9]+", lowered))


def is_numeric(value: Any) -> bool:
    # bool is an int subclass, but True/False are choices, not magnitudes.
    return isinstance(value, int | float) and not isinstance(value, bool)


def curve_for(params: Mapping[str, Any], optimum: Mapping[str, float]) -> Curve:
    """The learning curve of one configuration. Raises ValueError for a non-finite number."""
    final = FLOOR_LOSS
    speed = 0.0
    for name in sorted(params):  # sorted: float sums must not depend on dict order
        value = params[name]
        if is_numeric(value):
            penalty, param_speed = _numeric_terms(name, float(value), optimum)
        else:
            penalty, param_speed = _categorical_terms(name, value)
        final += penalty
        speed += param_speed
    alpha = BASE_ALPHA * math.exp(max(-MAX_SPEED, min(MAX_SPEED, speed)))
    start = max(START_LOSS, final + MIN_DROP)
    return Curve(start=start, final=final, alpha=alpha)


def accuracy_from_loss(loss: float) -> float:
    """``exp(-loss)``: in (0, 1], and still informative for losses above 1 (unlike 1 - loss)."""
    return math.exp(-loss)


def _numeric_terms(name: str, value: float, optimum: Mapping[str, float]) -> tuple[float, float]:
    if not math.isfinite(value):
        raise ValueError(f"param {name!r} is {value}; the synthetic trainer needs finite numbers")
    if is_log_scale(name):
        target = optimum.get(name, DEFAULT_LOG_TARGET)
        decades = math.log10(abs(value) + _LOG_EPSILON) - math.log10(abs(target) + _LOG_EPSILON)
        return LOG_WEIGHT * decades**2, SPEED_PER_DECADE * decades
    target = optimum.get(name, DEFAULT_LINEAR_TARGET)
    distance = (value - target) / (abs(value) + abs(target) + 1.0)
    return LINEAR_WEIGHT * distance**2, SPEED_LINEAR * distance


def _categorical_terms(name: str, value: Any) -> tuple[float, float]:
    label = f"{name}={_canonical(value)}"
    offset = _unit_hash("offset:" + label) * CATEGORY_SPREAD
    speed = (_unit_hash("speed:" + label) - 0.5) * CATEGORY_SPEED_SPREAD
    return offset, speed


def _canonical(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)


def _unit_hash(text: str) -> float:
    """A stable number in [0, 1) for ``text``, the same in every process and on every host."""
    return zlib.crc32(text.encode("utf-8")) / 2**32


def report_positions(budget_from: float, budget_to: float, every: float) -> list[tuple[float, bool]]:
    """Budget positions to report at in ``(budget_from, budget_to]``, each with ``on_grid``.

    Positions sit on the absolute grid ``k * every`` rather than counting from
    ``budget_from``, so a run split at a grid point reports at exactly the positions of an
    uninterrupted run. ``budget_to`` is always reported (the slice's end is what the
    scheduler decides on); when it is off the grid it is flagged ``on_grid=False``.
    """
    tolerance = 1e-9
    first = math.floor(budget_from / every + tolerance) + 1
    last = math.floor(budget_to / every + tolerance)
    positions = [(_grid_point(k, every), True) for k in range(first, last + 1)]
    end_is_on_grid = bool(positions) and abs(positions[-1][0] - budget_to) <= tolerance * max(
        1.0, abs(budget_to)
    )
    if not end_is_on_grid:
        positions.append((budget_to, False))
    return positions


def _grid_point(k: int, every: float) -> float:
    # Rounding hides float drift (3 * 0.1 == 0.30000000000000004) so steps read cleanly and
    # are identical however the run was split.
    return round(k * every, 10)

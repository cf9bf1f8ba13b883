"""Convert our search-space distributions to Optuna's, and say what each sampler models.

Our domain types are validated pydantic models that know nothing about Optuna;
this is the one place the two meet. Optuna sees a categorical parameter as the
index of its choice: Optuna finds a choice with ``list.index`` (that is, ``==``),
so True, 1 and 1.0, distinct choices in our spaces, would collapse into one.
``encode_params``/``decode_params`` translate between the two forms.
"""

from __future__ import annotations

import decimal
from typing import Any

from optuna import distributions as od

from hpo_service.domain.space import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    SearchSpace,
)
from hpo_service.domain.spec import SamplerKind

DomainDistribution = FloatDistribution | IntDistribution | CategoricalDistribution

# The distribution types each sampler kind models. Parameters of other types are
# sampled by an independent random sampler (Optuna's own fallback): CMA-ES has
# no categorical support; `random` models nothing by definition.
MODELLED_TYPES: dict[SamplerKind, tuple[type, ...]] = {
    "tpe": (FloatDistribution, IntDistribution, CategoricalDistribution),
    "gp": (FloatDistribution, IntDistribution, CategoricalDistribution),
    "qmc": (FloatDistribution, IntDistribution, CategoricalDistribution),
    "cmaes": (FloatDistribution, IntDistribution),
    "random": (),
}


def to_optuna(dist: DomainDistribution) -> od.BaseDistribution:
    """The Optuna distribution of ``dist``'s values (of its choice indices if categorical)."""
    if isinstance(dist, FloatDistribution):
        high = dist.high if dist.step is None else _float_high_on_grid(dist.low, dist.high, dist.step)
        return od.FloatDistribution(dist.low, high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        # Our validator allows a range that is not a multiple of step; Optuna would
        # shrink it with a UserWarning (an error under our test settings), so shrink
        # it here to the same value, silently, because it changes nothing sampled.
        high = dist.low + (dist.high - dist.low) // dist.step * dist.step
        return od.IntDistribution(dist.low, high, log=dist.log, step=dist.step)
    if isinstance(dist, CategoricalDistribution):
        return od.CategoricalDistribution(list(range(len(dist.choices))))
    raise TypeError(f"unsupported distribution {dist!r}")


def to_optuna_space(space: SearchSpace) -> dict[str, od.BaseDistribution]:
    """Convert every parameter, keeping the space's order (proposals follow it)."""
    return {name: to_optuna(dist) for name, dist in space.items()}


def encode_params(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as ``to_optuna_space(space)`` samples them; extra keys are dropped.

    Raises KeyError for a missing parameter and ValueError for a value that is not a choice.
    """
    encoded: dict[str, Any] = {}
    for name, dist in space.items():
        value = params[name]
        encoded[name] = _choice_index(dist, value) if isinstance(dist, CategoricalDistribution) else value
    return encoded


def decode_params(space: SearchSpace, internal: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``encode_params``: the exact choice objects, in the space's order."""
    decoded: dict[str, Any] = {}
    for name, dist in space.items():
        value = internal[name]
        decoded[name] = dist.choices[value] if isinstance(dist, CategoricalDistribution) else value
    return decoded


def modelled_params(kind: SamplerKind, space: SearchSpace) -> list[str]:
    """Names of the parameters ``kind`` models; the rest are sampled at random."""
    return [name for name, dist in space.items() if isinstance(dist, MODELLED_TYPES[kind])]


def _choice_index(dist: CategoricalDistribution, value: Any) -> int:
    # Same type and repr first (the domain's notion of distinct choices); else the
    # first equal choice, in case a storage layer turned 1.0 into 1.
    keys = [(type(choice), repr(choice)) for choice in dist.choices]
    if (type(value), repr(value)) in keys:
        return keys.index((type(value), repr(value)))
    for index, choice in enumerate(dist.choices):
        if choice == value:
            return index
    raise ValueError(f"{value!r} is not one of the choices {dist.choices!r}")


def _float_high_on_grid(low: float, high: float, step: float) -> float:
    # Same arithmetic as Optuna's _adjust_discrete_uniform_high (decimal, via str)
    # so that Optuna finds the range divisible and does not warn.
    d_low, d_high, d_step = (decimal.Decimal(str(x)) for x in (low, high, step))
    span = d_high - d_low
    if span % d_step == 0:
        return high
    return float((span // d_step) * d_step + d_low)

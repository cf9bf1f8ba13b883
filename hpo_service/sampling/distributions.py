"""Convert our search-space distributions to Optuna's, and say what each sampler models.

Our domain types are validated pydantic models that know nothing about Optuna;
this is the one place the two meet.
"""

from __future__ import annotations

import decimal

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
    """The Optuna distribution that samples exactly the values ``dist`` allows."""
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
        return od.CategoricalDistribution(list(dist.choices))
    raise TypeError(f"unsupported distribution {dist!r}")


def to_optuna_space(space: SearchSpace) -> dict[str, od.BaseDistribution]:
    """Convert every parameter, keeping the space's order (proposals follow it)."""
    return {name: to_optuna(dist) for name, dist in space.items()}


def modelled_params(kind: SamplerKind, space: SearchSpace) -> list[str]:
    """Names of the parameters ``kind`` models; the rest are sampled at random."""
    return [name for name, dist in space.items() if isinstance(dist, MODELLED_TYPES[kind])]


def _float_high_on_grid(low: float, high: float, step: float) -> float:
    # Same arithmetic as Optuna's _adjust_discrete_uniform_high (decimal, via str)
    # so that Optuna finds the range divisible and does not warn.
    d_low, d_high, d_step = (decimal.Decimal(str(x)) for x in (low, high, step))
    span = d_high - d_low
    if span % d_step == 0:
        return high
    return float((span // d_step) * d_step + d_low)

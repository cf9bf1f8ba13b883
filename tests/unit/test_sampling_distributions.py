"""Our distributions -> Optuna's: a table of cases, plus what each sampler models."""

from __future__ import annotations

import warnings

import pytest
from optuna import distributions as od

from hpo_service.domain.space import CategoricalDistribution, FloatDistribution, IntDistribution, SearchSpace
from hpo_service.domain.spec import SamplerSpec
from hpo_service.sampling import Observation, Proposer
from hpo_service.sampling.distributions import (
    MODELLED_TYPES,
    decode_params,
    encode_params,
    modelled_params,
    to_optuna,
    to_optuna_space,
)

CONVERSIONS = [
    pytest.param(FloatDistribution(low=0.0, high=1.0), od.FloatDistribution(0.0, 1.0), id="float"),
    pytest.param(
        FloatDistribution(low=1e-5, high=1e-1, log=True), od.FloatDistribution(1e-5, 1e-1, log=True), id="float-log"
    ),
    pytest.param(
        FloatDistribution(low=0.0, high=0.5, step=0.1), od.FloatDistribution(0.0, 0.5, step=0.1), id="float-step"
    ),
    # 0.5 is not on the 0.15 grid from 0.0: the top of the grid is 0.45, as Optuna would make it.
    pytest.param(
        FloatDistribution(low=0.0, high=0.5, step=0.15), od.FloatDistribution(0.0, 0.45, step=0.15),
        id="float-step-uneven",
    ),
    pytest.param(
        FloatDistribution(low=0.1, high=0.3, step=0.1), od.FloatDistribution(0.1, 0.3, step=0.1),
        id="float-step-binary-inexact",
    ),
    pytest.param(FloatDistribution(low=2.0, high=2.0), od.FloatDistribution(2.0, 2.0), id="float-single"),
    pytest.param(IntDistribution(low=1, high=10), od.IntDistribution(1, 10), id="int"),
    pytest.param(IntDistribution(low=2, high=256, log=True), od.IntDistribution(2, 256, log=True), id="int-log"),
    pytest.param(IntDistribution(low=0, high=12, step=4), od.IntDistribution(0, 12, step=4), id="int-step"),
    pytest.param(IntDistribution(low=1, high=10, step=4), od.IntDistribution(1, 9, step=4), id="int-step-uneven"),
    # Optuna sees choice indices: it matches choices by ==, which would merge True, 1 and 1.0.
    pytest.param(CategoricalDistribution(choices=["a", "b"]), od.CategoricalDistribution([0, 1]), id="categorical"),
    pytest.param(
        CategoricalDistribution(choices=[None, True, 1, 1.0, "1"]),
        od.CategoricalDistribution([0, 1, 2, 3, 4]),
        id="categorical-equal-under-eq",
    ),
]


@pytest.mark.parametrize(("ours", "expected"), CONVERSIONS)
def test_converts_to_the_equivalent_optuna_distribution(ours: object, expected: od.BaseDistribution) -> None:
    with warnings.catch_warnings():
        # Optuna warns when it has to shrink a range to the step grid; we shrink it first.
        warnings.simplefilter("error")
        converted = to_optuna(ours)  # type: ignore[arg-type]
    assert converted == expected


def test_space_conversion_keeps_parameter_order() -> None:
    space: SearchSpace = {
        "z": IntDistribution(low=0, high=3),
        "a": CategoricalDistribution(choices=["x"]),
        "m": FloatDistribution(low=0.0, high=1.0),
    }
    assert list(to_optuna_space(space)) == ["z", "a", "m"]


MIXED_SPACE: SearchSpace = {
    "lr": FloatDistribution(low=1e-5, high=1e-1, log=True),
    "rank": IntDistribution(low=2, high=64, log=True),
    "optimizer": CategoricalDistribution(choices=["adam", "sgd"]),
}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("tpe", ["lr", "rank", "optimizer"]),
        ("gp", ["lr", "rank", "optimizer"]),
        ("qmc", ["lr", "rank", "optimizer"]),
        # Optuna's CMA-ES has no categorical support: those fall back to random sampling.
        ("cmaes", ["lr", "rank"]),
        ("random", []),
    ],
)
def test_modelled_params_per_sampler_kind(kind: str, expected: list[str]) -> None:
    assert modelled_params(kind, MIXED_SPACE) == expected  # type: ignore[arg-type]


def test_every_sampler_kind_has_an_entry() -> None:
    assert set(MODELLED_TYPES) == {"tpe", "random", "qmc", "gp", "cmaes"}


TRICKY: SearchSpace = {
    "c": CategoricalDistribution(choices=[None, True, 1, 1.0, "1"]),
    "n": IntDistribution(low=0, high=3),
}


@pytest.mark.parametrize(
    ("value", "index"),
    [(None, 0), (True, 1), (1, 2), (1.0, 3), ("1", 4)],
    ids=["none", "bool", "int", "float", "str"],
)
def test_choices_round_trip_by_type_not_by_equality(value: object, index: int) -> None:
    encoded = encode_params(TRICKY, {"c": value, "n": 2, "extra": "dropped"})
    assert encoded == {"c": index, "n": 2}
    decoded = decode_params(TRICKY, encoded)
    assert decoded == {"c": value, "n": 2} and type(decoded["c"]) is type(value)


@pytest.mark.parametrize(("params", "error"), [({"c": "2", "n": 0}, ValueError), ({"n": 0}, KeyError)])
def test_encoding_rejects_unknown_choices_and_missing_params(params: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        encode_params(TRICKY, params)


def test_a_proposer_learns_which_of_the_equal_choices_is_best() -> None:
    space: SearchSpace = {"c": CategoricalDistribution(choices=[True, 1, 1.0])}
    proposer = Proposer(space, SamplerSpec(kind="tpe", n_startup_trials=2, seed=0), study_seed=0)
    # Only the int 1 scores well. Merged with True and 1.0 (Optuna's == matching) it
    # would look average, and TPE would pick it about a third of the time.
    choices = [True, 1, 1.0] * 6
    scores = [0.0 if type(choice) is int else 1.0 for choice in choices]
    proposer.observe(Observation({"c": c}, 0, 1.0, score, seq) for seq, (c, score) in enumerate(zip(choices, scores)))
    picks = [proposer.propose(number)["c"] for number in range(20)]
    assert sum(type(pick) is int for pick in picks) >= 15

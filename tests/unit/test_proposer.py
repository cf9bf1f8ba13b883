"""Proposer: every sampler kind, rung choice, determinism, incremental observe, learning, cost."""

from __future__ import annotations

import importlib.util
import math
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pytest

from hpo_service.domain.space import CategoricalDistribution as Cat, FloatDistribution as Float, IntDistribution as Int
from hpo_service.domain.space import SearchSpace, validate_params
from hpo_service.domain.spec import SamplerSpec
from hpo_service.errors import InvalidInput
from hpo_service.sampling import MODEL_KINDS, Observation, Proposer, ensure_sampler_available
from hpo_service.sampling import proposer as proposer_module

SPACE: SearchSpace = {
    "lr": Float(low=1e-5, high=1e-1, log=True),
    "dropout": Float(low=0.0, high=0.5, step=0.15),  # grid 0, .15, .3, .45
    "width": Int(low=8, high=64),
    "rank": Int(low=2, high=256, log=True),
    "layers": Int(low=1, high=10, step=3),  # grid 1, 4, 7, 10
    "optimizer": Cat(choices=["adam", "sgd", None]),
    "heads": Int(low=4, high=4),  # single-valued: GP and CMA-ES leave it to the fallback
}
# max(n_startup_trials=5, len(SPACE) + 1) = 8 observations make a rung usable (CMA-ES: 10).
ENOUGH = 12
NEEDS = {"gp": ("torch", "scipy"), "cmaes": ("cmaes",)}


def _needs(kind: str) -> pytest.MarkDecorator:
    missing = [m for m in NEEDS.get(kind, ()) if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"sampler {kind!r} needs {missing}: install it to run these cases")


ALL_KINDS = [pytest.param(kind, id=kind, marks=_needs(kind)) for kind in ("random", "qmc", "tpe", "gp", "cmaes")]


def _score(params: dict[str, Any]) -> float:
    return float((math.log10(params["lr"]) + 3) ** 2 + (params["dropout"] - 0.3) ** 2 + (params["optimizer"] != "adam"))


def _observations(n: int, rung: int = 0, first_seq: int = 1, seed: int = 0) -> list[Observation]:
    source = Proposer(SPACE, SamplerSpec(kind="random"), study_seed=seed)
    return [Observation(p, rung, 1.0, _score(p), first_seq + i) for i, p in enumerate(map(source.propose, range(n)))]


def _assert_inside(params: dict[str, Any]) -> None:
    assert list(params) == list(SPACE)
    validate_params(SPACE, params)
    assert math.isclose(params["dropout"] / 0.15, round(params["dropout"] / 0.15), abs_tol=1e-9)
    assert params["dropout"] <= 0.45 + 1e-12 and params["layers"] in (1, 4, 7, 10)
    assert all(isinstance(params[name], int) for name in ("width", "rank", "layers", "heads"))


def _proposer(kind: str, seed: int = 11, space: SearchSpace = SPACE, n_startup: int = 5) -> Proposer:
    spec = SamplerSpec(kind=kind, n_startup_trials=n_startup)  # type: ignore[arg-type]
    return Proposer(space, spec, study_seed=seed)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_proposals_lie_inside_the_space_before_and_after_a_model(kind: str) -> None:
    proposer = _proposer(kind)
    for number in range(3):
        _assert_inside(proposer.propose(number))
    proposer.observe(_observations(ENOUGH))
    assert proposer.model_rung == (0 if kind in MODEL_KINDS else None)
    for number in range(3, 6):
        _assert_inside(proposer.propose(number))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_same_seed_and_observations_give_the_same_proposals(kind: str) -> None:
    observations = _observations(ENOUGH)
    at_once, interleaved = _proposer(kind), _proposer(kind)
    at_once.observe(observations)
    # Another history of calls (proposals in between, overlapping batches) must not matter.
    for number, chunk in enumerate((observations[:4], observations[2:8], observations)):
        interleaved.observe(chunk)
        interleaved.propose(number)
    for number in (20, 21):
        assert at_once.propose(number) == interleaved.propose(number) == at_once.propose(number)
    assert _proposer(kind, seed=12).propose(0) != _proposer(kind, seed=11).propose(0)


def test_a_seed_in_the_spec_overrides_the_study_seed() -> None:
    def first(spec_seed: int | None, study_seed: int) -> dict[str, Any]:
        return Proposer(SPACE, SamplerSpec(kind="random", seed=spec_seed), study_seed).propose(0)

    assert first(5, 1) == first(5, 2)
    assert first(None, 1) != first(None, 2)


def test_qmc_points_are_indexed_by_trial_number_and_stratified() -> None:
    proposer = _proposer("qmc", space={"x": Float(low=0.0, high=1.0)})
    xs = [proposer.propose(number)["x"] for number in range(16)]
    # The first 2^4 points of a (scrambled) Sobol sequence put one point in each sixteenth.
    assert sorted(int(x * 16) for x in xs) == list(range(16))
    assert _proposer("qmc", space={"x": Float(low=0.0, high=1.0)}).propose(7)["x"] == xs[7]


LINE: SearchSpace = {"x": Float(low=-2.0, high=2.0)}
FIVE: SearchSpace = {f"p{i}": Float(low=0.0, high=1.0) for i in range(5)}


def _line_obs(n: int, rung: int = 0, optimum: float = 0.0, first_seq: int = 1, seed: int = 0) -> list[Observation]:
    """``n`` uniform points on LINE scored by a quadratic with its minimum at ``optimum``."""
    rng = random.Random(seed)
    xs = [rng.uniform(-2, 2) for _ in range(n)]
    return [Observation({"x": x}, rung, 1.0, (x - optimum) ** 2, first_seq + i) for i, x in enumerate(xs)]


# Threshold: max(n_startup_trials=4, len(space) + 1); CMA-ES at least 10.
@pytest.mark.parametrize(
    ("kind", "space", "counts", "expected"),
    [
        ("tpe", LINE, {}, None),
        ("tpe", LINE, {0: 3}, None),
        ("tpe", LINE, {0: 4}, 0),
        ("tpe", LINE, {0: 10, 1: 4, 2: 3}, 1),
        ("tpe", LINE, {0: 10, 2: 4}, 2),
        ("tpe", LINE, {1: 5, 0: 2}, 1),
        ("tpe", FIVE, {0: 5}, None),
        ("tpe", FIVE, {0: 6}, 0),
        pytest.param("gp", LINE, {0: 4, 1: 4}, 1, marks=_needs("gp")),
        pytest.param("cmaes", LINE, {0: 9}, None, marks=_needs("cmaes")),
        pytest.param("cmaes", LINE, {0: 10}, 0, marks=_needs("cmaes")),
        ("random", LINE, {0: 50}, None),
        ("qmc", LINE, {0: 50}, None),
    ],
)
def test_rung_choice_is_the_highest_rung_with_enough_observations(
    kind: str, space: SearchSpace, counts: dict[int, int], expected: int | None
) -> None:
    proposer = _proposer(kind, space=space, n_startup=4)
    for rung, count in counts.items():
        proposer.observe(Observation({n: 0.5 for n in space}, rung, 1.0, 1.0, 1000 * rung + i) for i in range(count))
    assert proposer.model_rung == expected


def test_tpe_models_the_chosen_rung() -> None:
    proposer = _proposer("tpe", space=LINE, n_startup=4)
    proposer.observe(_line_obs(30, rung=0, optimum=-1.0, first_seq=1, seed=1))
    proposer.observe(_line_obs(3, rung=1, optimum=1.0, first_seq=100, seed=2))
    assert proposer.model_rung == 0
    assert np.mean([proposer.propose(n)["x"] for n in range(10)]) < 0
    proposer.observe(_line_obs(7, rung=1, optimum=1.0, first_seq=200, seed=3))
    assert proposer.model_rung == 1
    assert np.mean([proposer.propose(n)["x"] for n in range(10)]) > 0


@dataclass
class _Counts:
    add_trial: int = 0  # observations added to a rung's Optuna study
    trials_built: int = 0  # FrozenTrials validated by the proposer (one per observation it keeps)
    trials_created: int = 0  # trials stored by Optuna (added or asked)
    most_trials_scanned: int = 0  # the most trials one of Optuna's trial queries visited


@contextmanager
def _counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Counts]:
    """Counts operations, so that cost tests never depend on wall-clock time."""
    counts = _Counts()
    storage = optuna.storages.InMemoryStorage
    add_trial, get_all, create_new_trial = optuna.Study.add_trial, storage.get_all_trials, storage.create_new_trial

    def counted_add_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        counts.add_trial += 1
        add_trial(study, trial)

    def counted_create_trial(**kwargs: Any) -> optuna.trial.FrozenTrial:
        counts.trials_built += 1
        return optuna.trial.create_trial(**kwargs)

    def counted_create_new_trial(self: Any, study_id: int, template_trial: Any = None) -> int:
        counts.trials_created += 1
        return create_new_trial(self, study_id, template_trial)

    def counted_get_all_trials(self: Any, study_id: int, deepcopy: bool = True, states: Any = None) -> Any:
        scanned = len(get_all(self, study_id, deepcopy=False))  # every trial the state filter visits
        counts.most_trials_scanned = max(counts.most_trials_scanned, scanned)
        return get_all(self, study_id, deepcopy=deepcopy, states=states)

    with monkeypatch.context() as patch:
        patch.setattr(optuna.Study, "add_trial", counted_add_trial)
        patch.setattr(proposer_module, "create_trial", counted_create_trial)
        patch.setattr(storage, "create_new_trial", counted_create_new_trial)
        patch.setattr(storage, "get_all_trials", counted_get_all_trials)
        yield counts


def _request_cost(kind: str, history: int, monkeypatch: pytest.MonkeyPatch, propose: bool = True) -> _Counts:
    """Operations of one API request after ``history`` observations: load the new row, propose."""
    observations = _line_obs(history + 1)
    proposer = _proposer(kind, space=LINE)
    proposer.observe(observations[:-1])
    with _counting(monkeypatch) as counts:
        proposer.observe(observations[-1:])
        if propose:
            proposer.propose(history)
    return counts


def test_random_request_cost_does_not_grow_with_history(monkeypatch: pytest.MonkeyPatch) -> None:
    small, large = _request_cost("random", 50, monkeypatch), _request_cost("random", 5000, monkeypatch)
    assert small == large == _Counts(trials_built=1, trials_created=1)  # validate the new row; ask once


def test_tpe_observe_of_one_new_observation_after_5000_is_one_add_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    large = _request_cost("tpe", 5000, monkeypatch, propose=False)
    assert large == _request_cost("tpe", 50, monkeypatch, propose=False)
    assert large == _Counts(add_trial=1, trials_built=1, trials_created=1)


def test_failed_asks_are_compacted_away(monkeypatch: pytest.MonkeyPatch) -> None:
    proposer = _proposer("tpe", space=LINE)
    proposer.observe(_line_obs(20))
    with _counting(monkeypatch) as counts:
        for number in range(150):
            proposer.propose(number)
    # 20 observations + at most max(64, 20) failed asks + the trial being asked.
    assert counts.most_trials_scanned <= 20 + 64 + 1


def test_observe_adds_only_unseen_observations(monkeypatch: pytest.MonkeyPatch) -> None:
    proposer = _proposer("tpe")
    first, second = _observations(10), _observations(5, first_seq=11, seed=1)
    assert (proposer.last_seq, proposer.version) == (-1, 0)
    proposer.observe(reversed(first))
    assert (proposer.last_seq, proposer.version) == (10, 1)
    with _counting(monkeypatch) as counts:
        proposer.observe(first)
        assert (counts.add_trial, proposer.version) == (0, 1)
        proposer.observe(first[5:] + second + second[:2])
        assert (counts.add_trial, proposer.version, proposer.last_seq) == (5, 2, 15)


@pytest.mark.parametrize(
    ("change", "score"),
    [({"lr": 1.0}, 1.0), ({"optimizer": "adamw"}, 1.0), ({"width": None}, 1.0), ({}, math.nan), ({}, math.inf)],
    ids=["out-of-range", "not-a-choice", "wrong-type", "nan", "inf"],
)
def test_unusable_observations_are_skipped_and_remembered(change: dict[str, Any], score: float) -> None:
    proposer = _proposer("tpe")
    good = _observations(1)[0]
    proposer.observe([Observation({**good.params, **change}, 0, 1.0, score, seq=7)])
    missing = {k: v for k, v in good.params.items() if k != "lr"}
    proposer.observe([Observation(missing, 0, 1.0, 1.0, seq=8)])
    assert (proposer.skipped, proposer.version, proposer.last_seq) == (2, 0, 8)
    proposer.observe([Observation({**good.params, "extra": 1}, 0, 1.0, 1.0, seq=9)])
    assert (proposer.skipped, proposer.version) == (2, 1)


def test_concurrent_observers_add_each_observation_once(monkeypatch: pytest.MonkeyPatch) -> None:
    proposer, observations = _proposer("tpe"), _observations(40)
    with _counting(monkeypatch) as counts:
        threads = [threading.Thread(target=proposer.observe, args=(observations,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert (counts.add_trial, proposer.last_seq) == (40, 40)


# False-failure rate: with observation seeds 0..999 (60 observations, 20 proposals each)
# the model lost to random 0 times for tpe and for cmaes, so the rate is below 0.3%
# (rule of three, 95%). The seed here is fixed, so this test is deterministic.
@pytest.mark.parametrize("kind", [pytest.param(kind, marks=_needs(kind)) for kind in ("tpe", "cmaes")])
def test_model_beats_random_on_a_quadratic(kind: str) -> None:
    def mean_distance(sampler: str, seed: int = 0) -> float:
        proposer = Proposer(LINE, SamplerSpec(kind=sampler, seed=seed), study_seed=0)  # type: ignore[arg-type]
        proposer.observe(_line_obs(60, optimum=0.3, seed=seed))
        return float(np.mean([abs(proposer.propose(1000 + n)["x"] - 0.3) for n in range(20)]))

    assert mean_distance(kind) < mean_distance("random")


def test_a_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "cmaes" else find_spec(name))
    for attempt in (lambda: ensure_sampler_available("cmaes"), lambda: _proposer("cmaes")):
        with pytest.raises(InvalidInput, match="'cmaes'"):
            attempt()


@pytest.mark.parametrize(
    ("space", "seed", "number"), [({}, 0, 0), (LINE, -1, 0), (LINE, 0, -1)], ids=["empty", "seed", "number"]
)
def test_invalid_arguments_are_rejected(space: SearchSpace, seed: int, number: int) -> None:
    with pytest.raises(ValueError):
        _proposer("random", seed=seed, space=space).propose(number)


@pytest.mark.parametrize(("kind", "space", "reads"), [
    ("random", SPACE, False),
    ("qmc", SPACE, False),
    ("tpe", SPACE, True),
    ("gp", SPACE, True),
    ("cmaes", SPACE, True),
    ("cmaes", {"optimizer": Cat(choices=["adam", "sgd"])}, False),  # nothing numeric: random sampling
])
def test_only_kinds_whose_proposals_depend_on_observations_ask_for_them(
    kind: str, space: SearchSpace, reads: bool
) -> None:
    assert Proposer(space, SamplerSpec(kind=kind, seed=1), 1).reads_observations is reads

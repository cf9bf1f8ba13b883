"""What a Proposer keeps per observation (finding F17: an API process's memory grew with the study).

A cached Proposer lives as long as its study is being sampled, so whatever it keeps per
observation is kept for every result of the study. It keeps only what a model reads: nothing
per observation for ``random`` and ``qmc``, and for the model kinds only the observations of
the model rung and the rungs above it (the model rung only moves up).
"""

from __future__ import annotations

import gc
import importlib.util
import random
import tracemalloc
from typing import Any

import pytest
from optuna.trial import FrozenTrial

from hpo_service.domain.space import CategoricalDistribution as Cat, FloatDistribution as Float, SearchSpace
from hpo_service.domain.spec import SamplerSpec
from hpo_service.sampling import Observation, Proposer

SPACE: SearchSpace = {"x": Float(low=-2.0, high=2.0), "y": Float(low=1e-4, high=1.0, log=True),
                      "kind": Cat(choices=["a", "b"])}
MODEL_KINDS = [pytest.param(kind, marks=pytest.mark.skipif(importlib.util.find_spec(module) is None,
                                                           reason=f"{kind} needs {module}"))
               for kind, module in (("tpe", "optuna"), ("cmaes", "cmaes"))]


def _hyperband_like(n: int, seed: int = 0) -> list[Observation]:
    """``n`` observations in seq order over four rungs, shaped like Hyperband with eta=3: most at
    rung 0, a third as many one rung up, and so on; the higher rungs fill later."""
    rng = random.Random(seed)
    observations = []
    for seq in range(1, n + 1):
        rung = 0
        while rung < 3 and rng.random() < 1 / 3:
            rung += 1
        params: dict[str, Any] = {"x": rng.uniform(-2, 2), "y": 10 ** rng.uniform(-4, 0), "kind": rng.choice("ab")}
        observations.append(Observation(params, rung, 3.0**rung, (params["x"] - 0.5) ** 2 + rung, seq))
    return observations


def _live_frozen_trials() -> int:
    gc.collect()
    return sum(type(o) is FrozenTrial for o in gc.get_objects())  # type(): no __getattr__ of lazy modules


def test_random_proposer_keeps_nothing_per_observation() -> None:
    """It used to keep every seq it had seen (a set: about 70 bytes an observation, forever)."""
    proposer = Proposer(SPACE, SamplerSpec(kind="random"), study_seed=1)
    observations = _hyperband_like(8000)
    proposer.observe(observations[:1000])
    proposer.propose(0)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start in range(1000, 8000, 500):  # as the API does: a batch of new rows, then a proposal
            proposer.observe(observations[start:start + 500])
            proposer.propose(start)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert proposer.last_seq == 8000
    assert grown < 7000 * 8, f"{grown / 7000:.0f} bytes kept per observation"


def test_observations_at_or_below_last_seq_are_ignored() -> None:
    proposer = Proposer(SPACE, SamplerSpec(kind="tpe", n_startup_trials=4), study_seed=1)
    observations = _hyperband_like(40)
    proposer.observe(observations[10:20])
    assert (proposer.last_seq, proposer.version) == (20, 1)
    proposer.observe(observations[:20])  # seen already, or older than what was seen
    assert (proposer.last_seq, proposer.version) == (20, 1)
    proposer.observe(observations[15:25] + observations[22:23])
    assert (proposer.last_seq, proposer.version) == (25, 2)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_model_kinds_keep_only_the_model_rung_and_above(kind: str) -> None:
    observations = _hyperband_like(3000)
    baseline = _live_frozen_trials()
    proposer = Proposer(SPACE, SamplerSpec(kind=kind, n_startup_trials=10), study_seed=1)  # type: ignore[arg-type]
    for start in range(0, 3000, 250):
        proposer.observe(observations[start:start + 250])
        proposer.propose(start)
    model = proposer.model_rung
    assert model == 3
    at_model = sum(o.rung >= model for o in observations)
    kept = _live_frozen_trials() - baseline
    # The model rung's observations, the template trial, failed asks (tpe: at most max(64, count)).
    assert kept <= 2 * at_model + 70, f"{kept} FrozenTrials kept, {at_model} observations at the model rung"
    assert kept < len(observations) / 5


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_releasing_lower_rungs_does_not_change_proposals(kind: str) -> None:
    """A proposer fed in small batches with proposals in between (lower rungs released along the
    way) proposes what one rebuilt from the whole history at once proposes."""
    observations = _hyperband_like(600, seed=3)
    incremental = Proposer(SPACE, SamplerSpec(kind=kind, n_startup_trials=10), study_seed=7)  # type: ignore[arg-type]
    for start in range(0, 600, 40):
        incremental.observe(observations[start:start + 40])
        incremental.propose(start)
    rebuilt = Proposer(SPACE, SamplerSpec(kind=kind, n_startup_trials=10), study_seed=7)  # type: ignore[arg-type]
    rebuilt.observe(observations)
    assert incremental.model_rung == rebuilt.model_rung == 3
    for number in (1000, 1001, 1002):
        assert incremental.propose(number) == rebuilt.propose(number)

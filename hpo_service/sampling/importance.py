"""Parameter importance from stored observations, with Optuna's importance evaluators.

The observations are (params, score) pairs at one budget level, score lower-is-better;
they go into a throwaway in-memory Optuna study, never into a sampler.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.importance import (
    BaseImportanceEvaluator,
    FanovaImportanceEvaluator,
    MeanDecreaseImpurityImportanceEvaluator,
    PedAnovaImportanceEvaluator,
)

from hpo_service.domain.space import SearchSpace
from hpo_service.sampling.distributions import encode_params, to_optuna_space

EVALUATORS = ("ped_anova", "fanova", "mean_decrease_impurity")
# fANOVA and mean decrease impurity fit scikit-learn random forests; PED-ANOVA needs nothing more.
NEEDS_SKLEARN = {"fanova", "mean_decrease_impurity"}
MIN_OBSERVATIONS = 2


def evaluator_available(name: str) -> bool:
    return name in EVALUATORS and (name not in NEEDS_SKLEARN or importlib.util.find_spec("sklearn") is not None)


def _evaluator(name: str, seed: int) -> BaseImportanceEvaluator:
    if name == "fanova":
        return FanovaImportanceEvaluator(seed=seed)
    if name == "mean_decrease_impurity":
        return MeanDecreaseImpurityImportanceEvaluator(seed=seed)
    return PedAnovaImportanceEvaluator()


def param_importances(
    space: SearchSpace, observations: Iterable[tuple[dict[str, Any], float]], evaluator: str = "ped_anova",
    seed: int = 0,
) -> tuple[dict[str, float], int]:
    """(importance per parameter, normalised to sum 1, in decreasing order; observations used).

    Observations whose params do not fit the space are skipped. Raises ValueError for an
    unknown or unavailable evaluator, or when fewer than ``MIN_OBSERVATIONS`` remain.
    """
    if not evaluator_available(evaluator):
        raise ValueError(f"importance evaluator {evaluator!r} is not available "
                         f"(choose from {', '.join(e for e in EVALUATORS if evaluator_available(e))})")
    distributions = to_optuna_space(space)
    trials = []
    for params, score in observations:
        try:
            encoded = encode_params(space, params)
        except (KeyError, ValueError):
            continue
        trials.append(optuna.trial.create_trial(params=encoded, distributions=distributions, value=score))
    if len(trials) < MIN_OBSERVATIONS:
        raise ValueError(f"{len(trials)} usable observations; importance needs at least {MIN_OBSERVATIONS}")
    variable = [name for name, dist in distributions.items() if not dist.single()]
    if not variable:
        return {}, len(trials)
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(logging.WARNING)  # "A new study created in memory" on every call is noise
    try:
        study = optuna.create_study(direction="minimize")
        study.add_trials(trials)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PED-ANOVA is marked experimental
            result = optuna.importance.get_param_importances(
                study, evaluator=_evaluator(evaluator, seed), params=variable
            )
    finally:
        logger.setLevel(level)
    return {name: float(value) for name, value in result.items()}, len(trials)

"""Proposal strategies: Optuna samplers run in memory behind the ``Proposer`` protocol.

Optuna is imported only inside this package (the architecture's dependency rule).
"""

from hpo_service.sampling.cache import ProposerCache
from hpo_service.sampling.distributions import MODELLED_TYPES, modelled_params, to_optuna, to_optuna_space
from hpo_service.sampling.observations import Observation
from hpo_service.sampling.proposer import MODEL_KINDS, Proposer, ensure_sampler_available

__all__ = [
    "MODELLED_TYPES",
    "MODEL_KINDS",
    "Observation",
    "Proposer",
    "ProposerCache",
    "ensure_sampler_available",
    "modelled_params",
    "to_optuna",
    "to_optuna_space",
]

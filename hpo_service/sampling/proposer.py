"""Propose configurations for one study with Optuna samplers that run in memory.

When each method is called
--------------------------
- ``Proposer(space, sampler, study_seed)`` when a study's proposer is not cached
  (first request, spec changed, evicted, process restarted). Raises
  ``InvalidInput`` when the sampler kind needs a package this process lacks
  (check that at study creation with ``ensure_sampler_available``).
- ``observe(observations)`` before each proposal, with the rung results whose
  ``seq`` is above ``last_seq``; anything at or below ``last_seq`` is ignored
  (seen already), so passing overlapping batches is safe.
- ``propose(trial_number)`` when the scheduler asks for a new configuration.

A proposal is a pure function of (seed, trial_number, the observations in the
order they were observed): two API processes, or one rebuilt after eviction,
propose the same configuration. That is why every proposal builds a fresh
Optuna sampler seeded from (seed, trial_number), and why nothing a proposal
leaves behind (a failed asked trial) can influence the model.

BOHB-style model choice: ``tpe``, ``gp`` and ``cmaes`` model the observations of
the highest rung holding at least ``max(n_startup_trials, len(space) + 1)`` of
them (``cmaes`` needs 10: its warm start keeps the top 10%) and sample at random
until one does. ``random`` never models; ``qmc`` always returns the Sobol point
whose index is the trial number (a counter would repeat points after a restart).
A Proposer is safe to share between threads: calls are serialised by a lock.

Memory (finding F17): a Proposer keeps O(1) per observation only where a model
reads it. ``random`` and ``qmc`` keep counts only. ``tpe`` and ``gp`` keep each
observation of a rung as a FrozenTrial (about 2.6 KB) and ``cmaes`` a projected
one (about 0.9 KB), but only for the model rung and the rungs above it: the model
rung only ever moves up (counts only grow), so a rung below it is never modelled
again and keeps just its count.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution as OptunaCategorical
from optuna.samplers import BaseSampler, CmaEsSampler, GPSampler, QMCSampler, RandomSampler, TPESampler
from optuna.storages import InMemoryStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState, create_trial

from hpo_service.domain.space import SearchSpace
from hpo_service.domain.spec import SamplerKind, SamplerSpec
from hpo_service.errors import InvalidInput
from hpo_service.sampling.distributions import decode_params, encode_params, to_optuna_space
from hpo_service.sampling.observations import Observation

_logger = logging.getLogger(__name__)

MODEL_KINDS = frozenset({"tpe", "gp", "cmaes"})
# Optuna imports these lazily and would fail only at the first model-based proposal.
_REQUIRED_MODULES = {"gp": ("torch", "scipy"), "cmaes": ("cmaes",)}
# cmaes.get_warm_start_mgd keeps floor(10% of n) solutions and needs at least one.
_CMA_MIN_OBSERVATIONS = 10
# Failed asked trials stay in a rung's study; rebuild it once they outnumber its
# observations so that they cost at most a constant factor (amortised O(1) per ask).
_COMPACT_MIN_FAILED = 64


# What each kind imports at its first proposal (qmc) or first model proposal (gp, cmaes), measured:
# 0.7, 2.3 and 0.5 s. That proposal runs in a lease's transaction, under the study lock (on SQLite,
# the database's write lock), so the modules are imported before: when a study is created, when a
# server starts, and before a lease takes the study lock (`warm_sampler`).
_LAZY_IMPORTS: dict[str, tuple[str, ...]] = {
    "qmc": ("scipy.stats",),
    "cmaes": ("scipy.stats",),
    "gp": ("torch", "scipy.optimize", "scipy.stats", "optuna._gp.gp", "optuna._gp.acqf",
           "optuna._gp.optim_mixed", "optuna._gp.prior", "optuna._gp.search_space"),
}
_WARMED: set[str] = set()
_WARMING = threading.Lock()


def warm_sampler(kind: str) -> None:
    """Import what ``kind`` would import at its first proposal; cheap once done. Best effort: a
    module missing here fails where it always did (``ensure_sampler_available`` says which)."""
    if kind in _WARMED:
        return
    with _WARMING:
        for module in _LAZY_IMPORTS.get(kind, ()):
            try:
                importlib.import_module(module)
            except ImportError:  # an optional package, or an Optuna without this private module
                _logger.debug("sampler %s: could not import %s ahead of its first proposal", kind, module)
        _WARMED.add(kind)


def ensure_sampler_available(kind: SamplerKind) -> None:
    """Raise ``InvalidInput`` if ``kind`` needs a package this process lacks.

    Call it when a study is created, so that a missing package is the submitter's
    422 then rather than a failure at the first proposal; ``Proposer`` calls it too.
    """
    for module in _REQUIRED_MODULES.get(kind, ()):
        if importlib.util.find_spec(module) is None:
            raise InvalidInput(
                f"sampler {kind!r} needs the Python package {module!r}, which this server "
                "does not have; choose another sampler kind or install it"
            )


class _Rung:
    """One rung's accepted observations, in the form the sampler kind reads them."""

    def __init__(self, with_study: bool, keeps: bool = True) -> None:
        self.count = 0
        self.failed_asks = 0
        self.keeps = keeps  # False once the rung is below the model rung: only its count matters
        self.study = _new_study(None) if with_study and keeps else None
        self.cma_trials: list[FrozenTrial] = []  # projected onto CMA-ES's numeric params

    def release(self) -> None:
        """Stop keeping observations: the rung will never be modelled again."""
        self.keeps, self.study, self.cma_trials, self.failed_asks = False, None, [], 0


class Proposer:
    """Proposals for one study; see the module docstring for when to call what."""

    def __init__(self, space: SearchSpace, sampler: SamplerSpec, study_seed: int) -> None:
        if not space:
            raise ValueError("the search space is empty")
        ensure_sampler_available(sampler.kind)
        _quiet_study_creation()
        # An explicit spec seed wins so that a user can reproduce a study exactly.
        self._seed = sampler.seed if sampler.seed is not None else study_seed
        if self._seed < 0:
            raise ValueError(f"seed must be >= 0, got {self._seed}")
        self._kind = sampler.kind
        self._n_startup = sampler.n_startup_trials
        self._domain_space = dict(space)
        self._space = to_optuna_space(space)
        numeric = {n: d for n, d in self._space.items() if not isinstance(d, OptunaCategorical)}
        self._cma_space = {name: dist for name, dist in numeric.items() if not dist.single()}
        self._min_observations = max(sampler.n_startup_trials, len(space) + 1)
        if self._kind == "cmaes":
            self._min_observations = max(self._min_observations, _CMA_MIN_OBSERVATIONS)
        # CMA-ES with nothing numeric to model is a random sampler; say so by never qualifying.
        self._models = self._kind in MODEL_KINDS and (self._kind != "cmaes" or bool(self._cma_space))
        # QMC and CMA-ES infer their search space from a completed trial; this one is
        # never used as an observation (CMA-ES reads source_trials, QMC only distributions).
        template_params = {name: _any_value(dist) for name, dist in self._space.items()}
        self._template = create_trial(params=template_params, distributions=self._space, value=0.0)
        self._rungs: dict[int, _Rung] = {}
        self._last_seq = -1
        self._version = 0
        self._skipped = 0
        self._lock = threading.Lock()

    @property
    def reads_observations(self) -> bool:
        """Whether observations can change a proposal: not for ``random``, ``qmc``, or ``cmaes`` over
        a space with nothing numeric. The caller need not load them then (for a study of 100,000
        results, reading them took 3 s at the first lease after a restart, under the study lock)."""
        return self._models

    @property
    def last_seq(self) -> int:
        """The highest ``seq`` observed; -1 before any, so ``seq > last_seq`` loads everything."""
        return self._last_seq

    @property
    def version(self) -> int:
        """Increments on each ``observe`` that added an observation (proposals may change)."""
        return self._version

    @property
    def skipped(self) -> int:
        """Observations ignored because of a non-finite score or params outside the space."""
        return self._skipped

    @property
    def model_rung(self) -> int | None:
        """The rung the next proposal models, or None when it is sampled without a model."""
        with self._lock:
            return self._model_rung()

    def observe(self, observations: Iterable[Observation]) -> None:
        """Add the observations whose ``seq`` is above ``last_seq``, oldest first.

        Only the highest ``seq`` is remembered, not every one seen (that set grew by about
        70 bytes an observation, forever): an observation at or below ``last_seq`` counts as
        seen. The one caller loads rows with ``seq > last_seq``, so nothing it passes is lost.
        """
        with self._lock:
            added = False
            for obs in sorted((o for o in observations if o.seq > self._last_seq), key=lambda o: o.seq):
                if obs.seq <= self._last_seq:  # the same seq twice in one batch
                    continue
                self._last_seq = obs.seq
                added = self._add(obs) or added
            if added:
                self._version += 1

    def propose(self, trial_number: int) -> dict[str, Any]:
        """Parameters for trial ``trial_number`` (>= 0), one value per space parameter."""
        if trial_number < 0:
            raise ValueError(f"trial_number must be >= 0, got {trial_number}")
        seed = _derive_seed(self._seed, trial_number)
        with self._lock:
            rung = self._model_rung()
            if self._kind == "qmc":
                sampler: BaseSampler = _IndexedQMCSampler(trial_number, seed=_derive_seed(self._seed))
                params = _ask_once(_new_study(sampler, self._template), self._space)
            elif rung is None:
                params = _ask_once(_new_study(RandomSampler(seed=seed)), self._space)
            elif self._kind == "cmaes":
                params = _ask_once(_new_study(self._cma_sampler(rung, seed), self._template), self._space)
            else:
                params = self._ask_rung_study(self._rungs[rung], seed)
        return decode_params(self._domain_space, params)

    # --- internals --------------------------------------------------------------

    def _model_rung(self) -> int | None:
        if not self._models:
            return None
        ready = [index for index, rung in self._rungs.items() if rung.count >= self._min_observations]
        return max(ready, default=None)

    def _release_rungs_below(self, model: int) -> None:
        for index, rung in self._rungs.items():
            if index < model and rung.keeps:
                rung.release()

    def _add(self, obs: Observation) -> bool:
        try:
            if not math.isfinite(obs.score):
                raise ValueError(f"score {obs.score} is not finite")
            params = encode_params(self._domain_space, obs.params)
            trial = create_trial(params=params, distributions=self._space, value=obs.score)
        except (KeyError, TypeError, ValueError) as exc:
            # One bad row must not stop a study's proposals forever; it is counted instead.
            _logger.warning("ignoring observation seq=%s: %s", obs.seq, exc)
            self._skipped += 1
            return False
        rung = self._rungs.get(obs.rung)
        if rung is None:
            model = self._model_rung()
            rung = self._rungs[obs.rung] = _Rung(with_study=self._kind in ("tpe", "gp"),
                                                 keeps=model is None or obs.rung >= model)
        rung.count += 1
        if not rung.keeps:
            return True
        if rung.count == self._min_observations and self._model_rung() == obs.rung:
            self._release_rungs_below(obs.rung)  # during the batch: a rebuild never holds them all
        if rung.study is not None:
            rung.study.add_trial(trial)
        if self._kind == "cmaes" and self._cma_space:
            numeric = {name: params[name] for name in self._cma_space}
            rung.cma_trials.append(create_trial(params=numeric, distributions=self._cma_space, value=obs.score))
        return True

    def _ask_rung_study(self, rung: _Rung, seed: int) -> dict[str, Any]:
        assert rung.study is not None
        if self._kind == "gp":
            # Fallback messages would repeat on every proposal; MODELLED_TYPES documents them.
            rung.study.sampler = GPSampler(seed=seed, n_startup_trials=self._n_startup, warn_independent_sampling=False)
        else:
            # No pending trials ever sit in this study, so the constant liar has nothing to do.
            rung.study.sampler = TPESampler(seed=seed, n_startup_trials=self._n_startup, constant_liar=False)
        params = _ask_once(rung.study, self._space)
        rung.failed_asks += 1
        if rung.failed_asks > max(_COMPACT_MIN_FAILED, rung.count):
            completed = rung.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            rung.study = _new_study(None, *completed)
            rung.failed_asks = 0
        return params

    def _cma_sampler(self, rung: int, seed: int) -> CmaEsSampler:
        # Optuna's CMA-ES learns only from trials it asked itself (it tags them with a
        # generation); trials added from the database carry no tag, so it would sample
        # its initial Gaussian forever. Warm-starting from the rung's observations
        # (WS-CMA-ES, Nomura et al. 2021) fits that Gaussian to the best 10% instead.
        source = self._rungs[rung].cma_trials
        return CmaEsSampler(seed=seed, n_startup_trials=1, source_trials=source, warn_independent_sampling=False)


class _IndexedQMCSampler(QMCSampler):
    """QMC whose point index is the trial number, not a counter kept in the study."""

    def __init__(self, index: int, seed: int) -> None:
        super().__init__(qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False)
        self._index = index

    def _find_sample_id(self, study: optuna.Study, search_space: dict[str, BaseDistribution]) -> int:
        return self._index


_STUDY_NAME = "hpo-service-proposer"


class _DropProposerStudyCreated(logging.Filter):
    """Drops Optuna's INFO line for each in-memory study we create (one per proposal)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.getMessage().endswith(": " + _STUDY_NAME))


def _quiet_study_creation() -> None:
    # Optuna's InMemoryStorage logs every study it creates, at INFO; it would be a
    # line per proposal in the API log. Only records naming our studies are dropped.
    storage_logger = logging.getLogger("optuna.storages._in_memory")
    if not any(isinstance(f, _DropProposerStudyCreated) for f in storage_logger.filters):
        storage_logger.addFilter(_DropProposerStudyCreated())


def _new_study(sampler: BaseSampler | None, *trials: FrozenTrial) -> optuna.Study:
    storage = InMemoryStorage()
    storage.create_new_study([StudyDirection.MINIMIZE], study_name=_STUDY_NAME)
    study = optuna.Study(study_name=_STUDY_NAME, storage=storage, sampler=sampler)
    study.add_trials(trials)
    return study


def _ask_once(study: optuna.Study, space: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """Ask one trial, then fail it: a RUNNING trial would count as pending for GP and TPE."""
    try:
        trial = study.ask(dict(space))
    except Exception:
        # ask() may raise after creating the trial; scan only on this rare path.
        for running in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(running.number, state=TrialState.FAIL)
        raise
    params = dict(trial.params)
    study.tell(trial, state=TrialState.FAIL)
    return params


def _derive_seed(*entropy: int) -> int:
    """A 32-bit seed (what numpy's RandomState accepts) from any non-negative ints."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])


def _any_value(dist: BaseDistribution) -> Any:
    if isinstance(dist, OptunaCategorical):
        return dist.choices[0]
    return dist.low  # type: ignore[attr-defined]

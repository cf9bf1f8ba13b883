"""The tools a user would pick instead, each at its documented defaults, charged by the same Ledger.

- ``random``: random search, every configuration trained for 52 epochs (Optuna's RandomSampler).
- ``optuna-tpe``: Optuna's TPESampler, no pruning: every trial trains 52 epochs.
- ``optuna-tpe-hyperband``: TPESampler with HyperbandPruner(min_resource=1, max_resource=52,
  reduction_factor=3). Trials report every epoch; ``should_prune`` is asked at epochs 1, 3, 9 and
  27, the only epochs at which that pruner can decide with these settings (its rungs are at
  ``min_resource * 3**k``; at any other epoch it answers "continue" without looking), so this is
  the same run as asking after every epoch, at a fraction of the cost. A pruned trial paid the
  epochs it trained.
- ``dehb``: DEHB 0.1.2 (Awad et al. 2021) through ask/tell, fidelities 52 * 3**-k (1.93, 5.78,
  17.3, 52) rounded up to whole epochs. DEHB does not resume a configuration from a checkpoint:
  every evaluation trains from scratch and pays all of its epochs.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from bench.lcbench import MAX_EPOCHS, LCBench
from bench.methods.budget import Ledger, TaskObjective, epochs_of

PRUNER_EPOCHS = (1, 3, 9, 27)
# A trial's curve is read from the surrogate in batches ending at these epochs (not at every epoch).
_BATCH_ENDS = (1, 3, 9, 27, MAX_EPOCHS)


def optuna_space(bench: LCBench) -> dict[str, Any]:
    from optuna.distributions import FloatDistribution, IntDistribution

    return {name: (IntDistribution(int(p.low), int(p.high), log=p.log) if p.kind == "int"
                   else FloatDistribution(p.low, p.high, log=p.log))
            for name, p in bench.params.items()}


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def run_full_trainings(objective: TaskObjective, ledger: Ledger, seed: int, sampler_kind: str) -> int:
    """Random search or TPE without pruning: 52-epoch trials until the budget is spent."""
    import optuna

    _quiet_optuna()
    sampler = (optuna.samplers.RandomSampler(seed=seed) if sampler_kind == "random"
               else optuna.samplers.TPESampler(seed=seed))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    space = optuna_space(objective.bench)
    while ledger.fits(MAX_EPOCHS):
        trial = study.ask(space)
        segment = objective.train(trial.params, 0, MAX_EPOCHS)
        ledger.charge(MAX_EPOCHS, MAX_EPOCHS, segment.accuracy)
        study.tell(trial, segment.accuracy)
    return len(study.trials)


def run_tpe_hyperband(objective: TaskObjective, ledger: Ledger, seed: int) -> int:
    """TPE with Optuna's HyperbandPruner, one epoch at a time."""
    import optuna
    from optuna.trial import TrialState

    _quiet_optuna()
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=MAX_EPOCHS, reduction_factor=3)
    # The pruner assigns brackets by a hash of the study name: fix it so that the seed decides everything.
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner,
                                study_name="lcbench-tpe-hyperband")
    space = optuna_space(objective.bench)
    while ledger.fits(1):
        trial = study.ask(space)
        curve: list[float] = []
        for epoch in range(1, MAX_EPOCHS + 1):
            if not ledger.fits(1):
                study.tell(trial, state=TrialState.FAIL)  # cut by the budget: it never finished
                return len(study.trials)
            if epoch > len(curve):  # one surrogate batch up to the next epoch the pruner can decide at
                upto = next(e for e in _BATCH_ENDS if e >= epoch)
                curve += objective.accuracies(trial.params, list(range(len(curve) + 1, upto + 1)))
            trial.report(curve[epoch - 1], epoch)
            pruned = epoch in PRUNER_EPOCHS and trial.should_prune()
            ledger.charge(1, epoch, curve[epoch - 1], ends_evaluation=pruned or epoch == MAX_EPOCHS)
            if pruned:
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, curve[-1])
    return len(study.trials)


def dehb_space(bench: LCBench, seed: int) -> Any:
    import ConfigSpace as CS

    space = CS.ConfigurationSpace(seed=seed)
    for name, p in bench.params.items():
        if p.kind == "int":
            space.add_hyperparameter(CS.UniformIntegerHyperparameter(name, int(p.low), int(p.high), log=p.log))
        else:
            space.add_hyperparameter(CS.UniformFloatHyperparameter(name, p.low, p.high, log=p.log))
    return space


def run_dehb(objective: TaskObjective, ledger: Ledger, seed: int, workdir: Path | None = None) -> int:
    """DEHB's ask/tell loop; ``fitness`` is -accuracy, ``cost`` the epochs."""
    from dehb import DEHB

    logging.getLogger("distributed").setLevel(logging.ERROR)
    configs: set[tuple[Any, ...]] = set()
    with tempfile.TemporaryDirectory(dir=workdir, prefix="dehb-") as folder:
        optimizer = DEHB(cs=dehb_space(objective.bench, seed), min_fidelity=1, max_fidelity=MAX_EPOCHS, eta=3,
                         n_workers=1, seed=seed, output_path=folder, log_level="ERROR", save_freq=None)
        try:
            while True:
                job = optimizer.ask()
                epochs = epochs_of(float(job["fidelity"]))
                if not ledger.fits(epochs):
                    break
                params = dict(job["config"])  # a ConfigSpace Configuration when given a space
                configs.add(tuple(sorted(params.items())))
                segment = objective.train(params, 0, epochs)
                ledger.charge(epochs, epochs, segment.accuracy)
                optimizer.tell(job, {"fitness": -segment.accuracy, "cost": float(epochs)})
        finally:
            optimizer.logger.remove()  # loguru's file sink inside ``folder``
    return len(configs)

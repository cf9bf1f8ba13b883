"""Trainer plugins, found by name through the `hpo_service.trainers` entry points.

Only registered names resolve: a name sent by a client is looked up in this
table and never imported or executed as a module path.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpo_service.workers.trainer import Trainer

ENTRY_POINT_GROUP = "hpo_service.trainers"

# Built-in trainers, so a source checkout works without an installed entry point.
_BUILTIN = {"synthetic": "trainers.synthetic:TRAINER", "adapter_lm": "trainers.adapter_lm:TRAINER",
            "mup_gpt": "trainers.mup_gpt:TRAINER"}


class UnknownTrainer(LookupError):
    def __init__(self, name: str) -> None:
        known = ", ".join(sorted(available_trainers())) or "none"
        super().__init__(f"trainer {name!r} is not registered; registered trainers: {known}")
        self.name = name


@lru_cache(maxsize=1)
def _table() -> dict[str, str]:
    table = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        table[ep.name] = ep.value
    return table


def available_trainers() -> list[str]:
    return sorted(_table())


def load_trainer(name: str) -> "Trainer":
    target = _table().get(name)
    if target is None:
        raise UnknownTrainer(name)
    module_name, _, attribute = target.partition(":")
    import importlib

    module = importlib.import_module(module_name)
    trainer: Trainer = getattr(module, attribute)
    return trainer

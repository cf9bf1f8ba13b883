"""Study spec validation, case by case: what is accepted, and what each error names."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from hpo_service.domain.space import validate_params
from hpo_service.domain.spec import StudySpec
from hpo_service.domain.states import Direction

BASE: dict[str, Any] = {
    "name": "s",
    "objective": {"metric": "loss"},
    "search_space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
    "trainer": {"name": "synthetic"},
}


def with_(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


VALID = [
    ("defaults", BASE),
    ("named space", with_(search_space="lora")),
    ("int with step", with_(search_space={"r": {"type": "int", "low": 4, "high": 64, "step": 4}})),
    ("float with step", with_(search_space={"d": {"type": "float", "low": 0, "high": 0.5, "step": 0.1}})),
    ("categorical mix", with_(search_space={"c": {"type": "categorical", "choices": ["a", 1, True, None]}})),
    ("asha with limit", with_(scheduler={"kind": "asha"}, limits={"max_trials": 10})),
    ("min equals max", with_(scheduler={"min_budget": 5, "max_budget": 5})),
]


@pytest.mark.parametrize(("case", "raw"), VALID, ids=[c for c, _ in VALID])
def test_valid_specs(case: str, raw: dict[str, Any]) -> None:
    StudySpec.model_validate(raw)


INVALID = [
    ("bad name", with_(name="has space"), "name"),
    ("unknown key", with_(extra=1), "extra"),
    ("unknown scheduler", with_(scheduler={"kind": "bohb"}), "scheduler.kind"),
    ("eta 1", with_(scheduler={"eta": 1}), "scheduler.eta"),
    ("zero budget", with_(scheduler={"min_budget": 0}), "scheduler.min_budget"),
    ("min above max", with_(scheduler={"min_budget": 10, "max_budget": 1}), "must be <= max_budget"),
    ("too many rungs", with_(scheduler={"min_budget": 1e-6, "max_budget": 1e6, "eta": 2}), "halvings"),
    ("low above high", with_(search_space={"x": {"type": "float", "low": 2, "high": 1}}), "swap them"),
    ("log of zero", with_(search_space={"x": {"type": "float", "low": 0, "high": 1, "log": True}}), "'low' > 0"),
    ("log with step", with_(search_space={"x": {"type": "float", "low": 1, "high": 2, "log": True, "step": 0.1}}),
     "drop one"),
    ("empty choices", with_(search_space={"x": {"type": "categorical", "choices": []}}), "choices"),
    ("duplicate choice", with_(search_space={"x": {"type": "categorical", "choices": [1, 1]}}), "duplicate"),
    ("unknown type", with_(search_space={"x": {"type": "normal", "low": 0, "high": 1}}), "type"),
    ("empty space", with_(search_space={}), "empty"),
    ("bad param name", with_(search_space={"1x": {"type": "int", "low": 0, "high": 1}}), "identifier"),
    ("path in space name", with_(search_space="../etc/passwd"), "file name in search_spaces"),
    ("trainer module path", with_(trainer={"name": "os.system"}), "trainer.name"),
    ("negative lease", with_(retry={"lease_seconds": -1}), "retry.lease_seconds"),
    ("infinite budget", with_(scheduler={"max_budget": float("inf")}), "finite"),
]


@pytest.mark.parametrize(("case", "raw", "names"), INVALID, ids=[c for c, _, _ in INVALID])
def test_invalid_specs_name_the_problem(case: str, raw: dict[str, Any], names: str) -> None:
    with pytest.raises(ValidationError) as error:
        StudySpec.model_validate(raw)
    text = str(error.value)
    assert names in text or names.replace(".", "\n  ") in text, text


@pytest.mark.parametrize(("direction", "value", "score"), [
    (Direction.MINIMIZE, 0.3, 0.3), (Direction.MAXIMIZE, 0.3, -0.3)])
def test_scores_are_lower_is_better(direction: Direction, value: float, score: float) -> None:
    assert direction.score(value) == score
    assert direction.value_of(score) == value


def test_validate_params_names_the_offender() -> None:
    spec = StudySpec.model_validate(BASE)
    validate_params(spec.space, {"lr": 0.01})
    with pytest.raises(ValueError, match="'lr'=5"):
        validate_params(spec.space, {"lr": 5})
    with pytest.raises(ValueError, match="'lr' is missing"):
        validate_params(spec.space, {})

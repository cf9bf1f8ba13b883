"""Every adapter kind has a search space whose every corner the trainer accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hpo_service.orchestration.spec_loading import load_named_space
from trainers.adapter_lm.adapters import PARAMS
from trainers.adapter_lm.config import AdapterLMConfig
from trainers.adapter_lm.params import parse_trial_params

SPACES = Path(__file__).resolve().parents[3] / "search_spaces"


def _corners(space: dict[str, Any]) -> list[dict[str, Any]]:
    """The all-low and all-high configurations, then each categorical choice on its own."""
    low = {n: d["choices"][0] if d["type"] == "categorical" else d["low"] for n, d in space.items()}
    high = {n: d["choices"][-1] if d["type"] == "categorical" else d["high"] for n, d in space.items()}
    single = [{**low, n: c} for n, d in space.items() if d["type"] == "categorical" for c in d["choices"]]
    return [low, high, *single]


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_each_kind_has_a_space_the_trainer_accepts(kind: str) -> None:
    space = load_named_space(kind, SPACES)
    assert space["learning_rate"]["log"] is True
    assert {"warmup_ratio", "weight_decay", "target_modules"} <= set(space)
    config = AdapterLMConfig(model="m", data_files=["d.jsonl"], max_budget=9, adapter=kind)  # type: ignore[arg-type]
    for params in _corners(space):
        trial = parse_trial_params(config, params)
        assert trial.kind == kind


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_each_space_cites_its_sources(kind: str) -> None:
    text = (SPACES / f"{kind}.yaml").read_text()
    assert "Sources" in text and "arXiv:" in text

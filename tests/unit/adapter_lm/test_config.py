"""The trainer's fixed config: what a study may set, and what it is refused with."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from trainers.adapter_lm.config import AdapterLMConfig

BASE: dict[str, Any] = {"model": "some/model", "data_files": ["a.jsonl"], "max_budget": 9}


def test_defaults_are_a_usable_config() -> None:
    config = AdapterLMConfig(**BASE)
    assert config.budget_unit == "epochs" and config.adapter == "lora" and config.precision == "auto"
    assert config.compile is None and config.fused_optimizer is None and config.attention == "sdpa"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"seq_lenght": 512}, "seq_lenght"),
        ({"data_files": ["corpus.csv"]}, "data_files"),
        ({"data_files": []}, "data_files"),
        ({"max_budget": 0}, "max_budget"),
        ({"eval_fraction": 0.9}, "eval_fraction"),
        ({"adapter": "prefix_tuning"}, "adapter"),
        ({"budget_unit": "tokens"}, "budget_unit"),
        ({"adam_betas": [0.9, 1.0]}, "adam_betas"),
        ({"max_grad_norm": float("nan")}, "max_grad_norm"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        AdapterLMConfig(**{**BASE, **change})
    assert field in str(error.value)


def test_study_validation_goes_through_the_registered_trainer() -> None:
    from hpo_service.workers.registry import load_trainer

    trainer = load_trainer("adapter_lm")
    assert trainer.config_model is AdapterLMConfig
    assert trainer.config_model.model_validate(BASE).max_budget == 9


def test_the_api_server_can_validate_studies_and_export_without_torch() -> None:
    """Loading the trainer by name (study validation) and exporting import no ML library."""
    import subprocess
    import sys

    code = ("import sys; from hpo_service.workers.registry import load_trainer; load_trainer('adapter_lm'); "
            "import trainers.adapter_lm.export; "  # the API server's adapter export path
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'safetensors') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"

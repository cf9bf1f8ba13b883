"""Export: every kind's checkpoint exports to a folder that loads back to identical outputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peft
import pytest
import torch

from hpo_service.workers.trainer import CheckpointError, TrainRequest
from tests.unit.adapter_lm.helpers import KIND_PARAMS, Recorder
from trainers.adapter_lm.adapters.peft_adapters import quiet_peft
from trainers.adapter_lm.config import PEFT_KINDS
from trainers.adapter_lm.export import CUSTOM_FORMAT, export_adapter, is_custom_export, load_adapter
from trainers.adapter_lm.params import parse_trial_params
from trainers.adapter_lm.training import _Slice


def _train(tmp_path: Path, config: Any, params: dict[str, Any]) -> tuple[Any, Path]:
    out = tmp_path / "checkpoint"
    request = TrainRequest(trial_id=1, params=params, config=config, budget_from=0, budget_to=config.max_budget,
                           checkpoint_in=None, checkpoint_out=out, seed=11)
    run = _Slice(request, config, parse_trial_params(config, params))
    run.run(Recorder())
    return run.model.eval(), out


def _fresh_base(tiny_model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)


@pytest.mark.parametrize("kind", sorted(KIND_PARAMS))
def test_export_loads_back_to_identical_outputs(
    tmp_path: Path, make_config: Callable[..., Any], tiny_model_dir: Path, kind: str
) -> None:
    params = KIND_PARAMS[kind] if kind != "adalora" else {**KIND_PARAMS[kind], "tinit_ratio": 0.0}
    trained, checkpoint = _train(tmp_path, make_config(adapter=kind, max_budget=3, report_every=3), params)
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = trained(input_ids=ids).logits
    exported = export_adapter(checkpoint, tmp_path / "exported")
    base = _fresh_base(tiny_model_dir)
    if kind in PEFT_KINDS:  # what a user of PEFT does with the folder, without our code
        assert not is_custom_export(exported)
        with quiet_peft():
            loaded = peft.PeftModel.from_pretrained(base, str(exported)).eval()
    else:
        assert json.loads((exported / "adapter_config.json").read_text())["format"] == CUSTOM_FORMAT
        loaded = load_adapter(base, exported)
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, expected, atol=1e-5)


def test_load_adapter_also_loads_peft_exports(tmp_path: Path, make_config: Callable[..., Any],
                                              tiny_model_dir: Path) -> None:
    _, checkpoint = _train(tmp_path, make_config(adapter="lora", max_budget=2, report_every=2), KIND_PARAMS["lora"])
    loaded = load_adapter(_fresh_base(tiny_model_dir), export_adapter(checkpoint, tmp_path / "out"))
    assert isinstance(loaded, peft.PeftModel) and not loaded.training


def test_export_refuses_what_it_cannot_vouch_for(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    with pytest.raises(CheckpointError, match="missing"):
        export_adapter(tmp_path, tmp_path / "out")
    _, checkpoint = _train(tmp_path, make_config(adapter="krona", max_budget=2, report_every=2), KIND_PARAMS["krona"])
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export_adapter(checkpoint, occupied)
    assert (occupied / "keep.txt").read_text() == "mine"
    weights = checkpoint / "export" / "adapter_model.safetensors"
    secret = tmp_path / "secret.txt"
    secret.write_text("not for export")
    original = weights.read_bytes()
    weights.unlink()
    weights.symlink_to(secret)  # a planted link must not make the export copy other files
    with pytest.raises(CheckpointError, match="not a plain file"):
        export_adapter(checkpoint, tmp_path / "via-link")
    weights.unlink()
    weights.write_bytes(original[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="checksum"):
        export_adapter(checkpoint, tmp_path / "tampered")
    assert not (tmp_path / "via-link").exists() and not (tmp_path / "tampered").exists()


def test_the_trainer_object_exports_for_the_api(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    from trainers.adapter_lm import TRAINER

    _, checkpoint = _train(tmp_path, make_config(adapter="lora", max_budget=2, report_every=2), KIND_PARAMS["lora"])
    out = TRAINER.export_adapter(checkpoint, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]

"""Checkpoint files: JSON + safetensors only, verified on read, optimizer state keyed by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hpo_service.workers.trainer import CheckpointError
from trainers.adapter_lm import checkpoint


def _write(folder: Path) -> None:
    checkpoint.write(folder, {"step": 3}, {"a": torch.ones(2)}, {"a::step": torch.tensor(3.0)},
                     checkpoint.rng_tensors(torch.device("cpu")))


def test_round_trip_verifies_every_file(tmp_path: Path) -> None:
    _write(tmp_path)
    loaded = checkpoint.read(tmp_path)
    assert loaded.payload["step"] == 3 and set(loaded.payload["files"]) == {
        checkpoint.ADAPTER_FILE, checkpoint.OPTIMIZER_FILE, checkpoint.EXTRA_FILE}
    assert torch.equal(loaded.adapter["a"], torch.ones(2)) and loaded.optimizer["a::step"].shape == ()


@pytest.mark.parametrize("damage", ["state", "tensor", "missing"])
def test_damage_is_a_checkpoint_error(tmp_path: Path, damage: str) -> None:
    _write(tmp_path)
    if damage == "state":
        document = json.loads((tmp_path / checkpoint.STATE_FILE).read_text())
        document["payload"]["step"] = 4
        (tmp_path / checkpoint.STATE_FILE).write_text(json.dumps(document))
    elif damage == "tensor":
        checkpoint.write(tmp_path / "other", {}, {"a": torch.zeros(2)}, {}, {})
        (tmp_path / checkpoint.ADAPTER_FILE).write_bytes((tmp_path / "other" / checkpoint.ADAPTER_FILE).read_bytes())
    else:
        (tmp_path / checkpoint.EXTRA_FILE).unlink()
    with pytest.raises(CheckpointError):
        checkpoint.read(tmp_path)


def test_optimizer_state_is_restored_by_parameter_name(tmp_path: Path) -> None:
    first, second = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([{"params": [first]}, {"params": [second]}], lr=0.1)
    (first.sum() + 2 * second.sum()).backward()
    optimizer.step()
    names = {id(first): "first", id(second): "second"}
    tensors = checkpoint.optimizer_tensors(optimizer, names)
    # The same parameters in another group order: names, not indices, find their state.
    fresh_first, fresh_second = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    other = torch.optim.AdamW([{"params": [fresh_second]}, {"params": [fresh_first]}], lr=0.1)
    checkpoint.load_optimizer(other, {id(fresh_first): "first", id(fresh_second): "second"}, tensors)
    assert torch.equal(other.state[fresh_second]["exp_avg"], optimizer.state[second]["exp_avg"])
    with pytest.raises(CheckpointError, match="unknown parameters"):
        checkpoint.load_optimizer(other, {id(fresh_first): "first", id(fresh_second): "renamed"}, tensors)

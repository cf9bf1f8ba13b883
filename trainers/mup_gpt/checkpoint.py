"""The trainer's checkpoint folder: everything an exactly resumed slice needs.

::

    state.json              step, identity (seed, params, config, width, corpus) and the
                            sha256 of every file below; written last, atomically
    model.safetensors       weights by parameter name
    optimizer.safetensors   AdamW moments and step counts, keyed "<parameter name>/<entry>"
    extra.safetensors       the batch-order generator's state and the running train-loss sum

Tensors go to safetensors and everything else to JSON: reading a checkpoint never unpickles,
so a checkpoint from the store cannot run code on a worker. The learning rate is not stored:
it is a function of the step, which is.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hpo_service.workers.trainer import CheckpointError

STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
EXTRA_FILE = "extra.safetensors"
FORMAT = 1


@dataclass
class Loaded:
    payload: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    extra: dict[str, torch.Tensor]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksum(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write(folder: Path, payload: dict[str, Any], model: dict[str, torch.Tensor],
          optimizer: dict[str, torch.Tensor], extra: dict[str, torch.Tensor]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, tensors in ((MODEL_FILE, model), (OPTIMIZER_FILE, optimizer), (EXTRA_FILE, extra)):
        save_file({key: value.detach().to("cpu").contiguous() for key, value in tensors.items()},
                  str(folder / name))
        files[name] = sha256_of(folder / name)
    payload = {**payload, "files": files}
    document = {"format": FORMAT, "payload": payload, "sha256": _checksum(payload)}
    partial = folder / f".{STATE_FILE}.partial"
    partial.write_text(json.dumps(document), encoding="utf-8")
    os.replace(partial, folder / STATE_FILE)  # a crash never leaves a state.json vouching for half a folder


def read(folder: Path) -> Loaded:
    """The verified checkpoint in ``folder``; CheckpointError if anything is missing or corrupt."""
    path = folder / STATE_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: checkpoint file is missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: checkpoint is unreadable ({exc})") from exc
    if not isinstance(document, dict) or not isinstance(document.get("payload"), dict):
        raise CheckpointError(f"{path}: not a mup_gpt checkpoint")
    if document.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {document.get('format')!r}")
    payload: dict[str, Any] = document["payload"]
    if document.get("sha256") != _checksum(payload):
        raise CheckpointError(f"{path}: checksum mismatch, the checkpoint is corrupt")
    tensors = [_read_tensors(folder, name, payload) for name in (MODEL_FILE, OPTIMIZER_FILE, EXTRA_FILE)]
    return Loaded(payload, *tensors)


def _read_tensors(folder: Path, name: str, payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    path = folder / name
    expected = payload.get("files", {}).get(name)
    try:
        if expected is None or sha256_of(path) != expected:
            raise CheckpointError(f"{path}: missing from the manifest or its checksum differs")
        return load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from exc


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Every optimizer state tensor as ``"<parameter name>/<entry>"`` (groups carry ``names``)."""
    state_dict = optimizer.state_dict()
    tensors = {}
    for group in state_dict["param_groups"]:
        for index, name in zip(group["params"], group["names"], strict=True):
            for entry, value in state_dict["state"].get(index, {}).items():
                tensors[f"{name}/{entry}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """The inverse of ``optimizer_tensors``; CheckpointError when the names do not match."""
    state_dict = optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    known: set[str] = set()
    for group in state_dict["param_groups"]:
        for index, name in zip(group["params"], group["names"], strict=True):
            known.add(name)
            entries = {key.partition("/")[2]: value for key, value in tensors.items()
                       if key.partition("/")[0] == name}
            if entries:
                state[index] = entries
    unknown = {key.partition("/")[0] for key in tensors} - known
    if unknown or (tensors and len(state) != len(known)):
        raise CheckpointError(f"optimizer state does not match the model (unknown: {sorted(unknown)[:3]})")
    optimizer.load_state_dict({"state": state, "param_groups": state_dict["param_groups"]})

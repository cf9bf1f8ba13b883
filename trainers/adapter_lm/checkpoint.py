"""The trainer's checkpoint folder: everything an exactly resumed slice needs, and an export.

::

    state.json              progress + identity + sha256 of every file below (written last)
    adapter.safetensors     adapter tensors by model name (parameters and adapter buffers)
    optimizer.safetensors   AdamW moments and step counts, keyed by parameter name
    extra.safetensors       RNG states and method state (score EMAs of AdaLoRA / dynamic rank)
    export/                 the adapter in a loadable format (see export.py)

Tensors go to safetensors and everything else to JSON: reading a checkpoint never unpickles,
so a checkpoint from the store cannot run code on a worker. ``state.json`` is replaced
atomically after the other files, so its presence and checksums vouch for the folder.
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
ADAPTER_FILE = "adapter.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
EXTRA_FILE = "extra.safetensors"
EXPORT_DIR = "export"
FORMAT = 1


@dataclass
class Loaded:
    payload: dict[str, Any]
    adapter: dict[str, torch.Tensor]
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


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors sharing storage (VeRA's projections are shared).
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def write(folder: Path, payload: dict[str, Any], adapter: dict[str, torch.Tensor],
          optimizer: dict[str, torch.Tensor], extra: dict[str, torch.Tensor]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, tensors in ((ADAPTER_FILE, adapter), (OPTIMIZER_FILE, optimizer), (EXTRA_FILE, extra)):
        save_file(_cpu(tensors), str(folder / name))
        files[name] = sha256_of(folder / name)
    payload = {**payload, "files": files}
    document = {"format": FORMAT, "payload": payload, "sha256": _checksum(payload)}
    partial = folder / f".{STATE_FILE}.partial"
    partial.write_text(json.dumps(document), encoding="utf-8")
    os.replace(partial, folder / STATE_FILE)


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
        raise CheckpointError(f"{path}: not an adapter_lm checkpoint")
    if document.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {document.get('format')!r}")
    payload: dict[str, Any] = document["payload"]
    if document.get("sha256") != _checksum(payload):
        raise CheckpointError(f"{path}: checksum mismatch, the checkpoint is corrupt")
    tensors = []
    for name in (ADAPTER_FILE, OPTIMIZER_FILE, EXTRA_FILE):
        file = folder / name
        try:
            if sha256_of(file) != payload["files"][name]:
                raise CheckpointError(f"{file}: checksum mismatch, the checkpoint is corrupt")
            tensors.append(load_file(str(file)))
        except (OSError, KeyError, SafetensorError) as exc:
            raise CheckpointError(f"{file}: unreadable ({exc})") from exc
    return Loaded(payload, *tensors)


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, torch.Tensor]:
    """AdamW state keyed ``"<param name>::<field>"`` (indices would break if groups change)."""
    out: dict[str, torch.Tensor] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            for field, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor):
                    out[f"{names[id(param)]}::{field}"] = value
    return out


def load_optimizer(optimizer: torch.optim.Optimizer, names: dict[int, str], tensors: dict[str, torch.Tensor]) -> None:
    state_dict = optimizer.state_dict()
    fields: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, field = key.partition("::")
        fields.setdefault(name, {})[field] = value
    index = 0
    restored: dict[int, dict[str, torch.Tensor]] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = fields.pop(names[id(param)], None)
            if state is not None:
                restored[index] = state
            index += 1
    if fields:
        raise CheckpointError(f"optimizer state for unknown parameters: {sorted(fields)[:3]}")
    state_dict["state"] = restored
    optimizer.load_state_dict(state_dict)  # casts moments to each parameter's device and dtype


def rng_tensors(device: torch.device) -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["rng.cuda"] = torch.cuda.get_rng_state(device)
    return out


def restore_rng(tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)

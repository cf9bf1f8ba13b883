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

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hpo_service.workers.trainer import CheckpointError
from trainers.adapter_lm.layout import (
    ADAPTER_FILE,
    EXPORT_DIR,
    EXTRA_FILE,
    FORMAT,
    OPTIMIZER_FILE,
    STATE_FILE,
    payload_checksum,
    read_payload,
    sha256_of,
    verified_file,
)

__all__ = ["ADAPTER_FILE", "EXPORT_DIR", "EXTRA_FILE", "OPTIMIZER_FILE", "STATE_FILE", "Loaded", "read", "write"]


@dataclass
class Loaded:
    payload: dict[str, Any]
    adapter: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    extra: dict[str, torch.Tensor]


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors sharing storage (VeRA's projections are shared).
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def write(folder: Path, payload: dict[str, Any], adapter: dict[str, torch.Tensor],
          optimizer: dict[str, torch.Tensor], extra: dict[str, torch.Tensor]) -> None:
    """Write the tensor files, then ``state.json`` with their digests (and those of ``export/``,
    which the caller writes first) atomically: a folder with a valid state.json is complete."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, tensors in ((ADAPTER_FILE, adapter), (OPTIMIZER_FILE, optimizer), (EXTRA_FILE, extra)):
        save_file(_cpu(tensors), str(folder / name))
        files[name] = sha256_of(folder / name)
    export = folder / EXPORT_DIR
    exported = {p.name: sha256_of(p) for p in sorted(export.iterdir()) if p.is_file()} if export.is_dir() else {}
    payload = {**payload, "files": files, "export_files": exported}
    document = {"format": FORMAT, "payload": payload, "sha256": payload_checksum(payload)}
    partial = folder / f".{STATE_FILE}.partial"
    partial.write_text(json.dumps(document), encoding="utf-8")
    os.replace(partial, folder / STATE_FILE)


def read(folder: Path) -> Loaded:
    """The verified checkpoint in ``folder``; CheckpointError if anything is missing or corrupt."""
    payload = read_payload(folder)
    tensors = []
    for name in (ADAPTER_FILE, OPTIMIZER_FILE, EXTRA_FILE):
        path = verified_file(folder, name, payload.get("files"))
        try:
            tensors.append(load_file(str(path)))
        except (OSError, SafetensorError) as exc:
            raise CheckpointError(f"{path}: unreadable ({exc})") from exc
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

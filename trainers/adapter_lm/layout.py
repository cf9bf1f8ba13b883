"""File names of a checkpoint folder and the checks on them: light (no torch), for the API server.

The API server exports adapters from checkpoints (hpo_service/workers/artifacts.py) and must
be able to verify a checkpoint without importing torch, so the names and the integrity
checks live here and both checkpoint.py and export.py use them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hpo_service.workers.trainer import CheckpointError

STATE_FILE = "state.json"
ADAPTER_FILE = "adapter.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
EXTRA_FILE = "extra.safetensors"
EXPORT_DIR = "export"
FORMAT = 1


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def payload_checksum(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def regular_file(path: Path) -> bool:
    """A plain file inside its folder: symlinks are refused, since they can point anywhere."""
    return not path.is_symlink() and path.is_file()


def read_payload(folder: Path) -> dict[str, Any]:
    """The verified payload of ``folder/state.json``; CheckpointError if missing or corrupt."""
    path = folder / STATE_FILE
    if path.is_symlink():
        raise CheckpointError(f"{path}: is a symbolic link; not a checkpoint")
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
    if document.get("sha256") != payload_checksum(payload):
        raise CheckpointError(f"{path}: checksum mismatch, the checkpoint is corrupt")
    return payload


def verified_file(folder: Path, name: str, digests: Any) -> Path:
    """``folder/name`` after checking it is a plain file with the recorded sha256."""
    path = folder / name
    expected = digests.get(name) if isinstance(digests, dict) else None
    if "/" in name or name.startswith(".") or not isinstance(expected, str):
        raise CheckpointError(f"{path}: not a file this checkpoint records")
    if not regular_file(path):
        raise CheckpointError(f"{path}: missing, or not a plain file")
    if sha256_of(path) != expected:
        raise CheckpointError(f"{path}: checksum mismatch, the checkpoint is corrupt")
    return path

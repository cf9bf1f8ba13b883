"""Exporting a trial's adapter from its checkpoint (shared by the API and the CLI).

A trainer that produces adapters exposes ``export_adapter(checkpoint_dir, out_dir) -> Path``
(e.g. trainers.adapter_lm writes a folder that ``peft.PeftModel.from_pretrained`` loads).
Checkpoints are read only through the configured `CheckpointStore`, which refuses URIs
outside its root, so a client cannot make the server read arbitrary paths.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path

from hpo_service.errors import Conflict, InvalidInput, NotFound
from hpo_service.workers.checkpoints import store_from_uri
from hpo_service.workers.registry import load_trainer
from hpo_service.workers.trainer import CheckpointError


def export_adapter_archive(trainer_name: str, checkpoint_uri: str | None, store_uri: str,
                           owner: tuple[int, int]) -> bytes:
    """A .tar.gz of the exported adapter under ``adapter/``, from the checkpoint of ``owner``
    (study id, trial id): a checkpoint URI that another trial committed is refused (Conflict),
    since the URI is whatever the trial's worker reported.

    PEFT's own adapter kinds load with ``peft.PeftModel.from_pretrained``; this project's
    (KronA, dynamic-rank, ETHER) with ``trainers.adapter_lm.export.load_adapter``.
    """
    trainer = load_trainer(trainer_name)
    export = getattr(trainer, "export_adapter", None)
    if export is None:
        raise InvalidInput(f"trainer {trainer_name!r} produces no adapter to export")
    if not checkpoint_uri:
        raise NotFound("the best trial has no checkpoint yet")
    try:
        store = store_from_uri(store_uri)
        committed_by = store.owner(checkpoint_uri)
        checkpoint = store.fetch(checkpoint_uri)
    except (CheckpointError, ValueError) as error:
        raise NotFound(f"the best trial's checkpoint cannot be read: {error}") from error
    if committed_by != owner:
        raise Conflict(f"the best trial's checkpoint {checkpoint_uri} was committed by trial {committed_by[1]} of "
                       f"study {committed_by[0]}, not by this trial (trial {owner[1]} of study {owner[0]}); "
                       "it is not served. Rerun the trial to get an adapter of its own.")
    with tempfile.TemporaryDirectory(prefix="hpo-export-") as scratch:
        try:
            folder = export(Path(checkpoint), Path(scratch) / "adapter")
        except CheckpointError as error:
            raise Conflict(f"the best trial's checkpoint is unusable, so its adapter cannot be exported: {error}"
                           ) from error
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            archive.add(folder, arcname="adapter")
        return buffer.getvalue()


def unpack_adapter_archive(data: bytes, out_dir: Path) -> Path:
    """Extract an archive from `export_adapter_archive` into ``out_dir`` (refusing unsafe members)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        archive.extractall(out_dir, filter="data")  # "data" refuses absolute paths, '..' and links out
    return out_dir / "adapter"

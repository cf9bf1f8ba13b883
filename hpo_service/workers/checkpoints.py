"""Checkpoint storage addressed by URI.

The server only ever sees URIs (a trial's ``checkpoint_uri``); workers turn them into local
folders with a ``CheckpointStore``. Today there is one store, ``file://``, for a local or
shared file system. An object store is one more class with the same three methods plus one
entry in ``_STORE_FACTORIES``: ``open_for_write`` hands out a local scratch folder,
``commit`` uploads it, ``fetch`` downloads into a cache folder.

Layout of the file store::

    <root>/study-<id>/trial-<id>/budget-<budget>-a<attempt>/   committed checkpoints
    <root>/.staging/                                 folders being written, and old copies
                                                     being replaced

One folder per lease attempt (finding F8): a worker that lost its lease while it was stalled
before its commit (frozen, partitioned) still commits, but into its own attempt's folder, so it
cannot replace the checkpoint the new lease holder committed and the server recorded. The server
refuses that worker's completion (stale lease), so its folder is recorded nowhere: it is left
behind as garbage (an orphan; deleting it is safe, nothing refers to it). A trial's attempt
changes whenever it is requeued, which is the only way a lease can be re-issued, so two lease
holders of one trial never share an attempt. ``budget-<budget>/`` (no attempt, the layout before
F8) is still read, so checkpoints committed by older workers still resume.

The staging folder sits under the root so that a commit is a rename within one file system,
which is atomic: a reader sees the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from hpo_service.workers.trainer import CheckpointError

STAGING_DIR = ".staging"
# The folder names of the layout, with the ids (and the attempt) as groups. The budget's characters
# (format_budget: digits, '.', 'e', '+', '-') hold no 'a', so the optional attempt suffix is
# unambiguous. Without it: the layout before F8, still read.
STUDY_FOLDER = re.compile(r"study-(\d+)")
TRIAL_FOLDER = re.compile(r"trial-(\d+)")
BUDGET_FOLDER = re.compile(r"budget-[0-9.e+-]+(?:-a(\d+))?")
_LAYOUT = (STUDY_FOLDER, TRIAL_FOLDER, BUDGET_FOLDER)
# A scratch folder in STAGING_DIR (open_for_write): "<study>-<trial>-<budget folder>-" + mkdtemp's suffix.
SCRATCH_FOLDER = re.compile(r"study-(\d+)-trial-(\d+)-budget-[0-9.e+-]+?(?:-a(\d+))?-[^-]+")


class CheckpointStore(Protocol):
    """Where the checkpoints of trial slices live.

    The worker calls ``fetch`` before a slice that resumes (``checkpoint_in``),
    ``open_for_write`` before every slice (``checkpoint_out``), and ``commit`` after the
    trainer returned, then reports the returned URI to the server.
    """

    def open_for_write(self, study_id: int, trial_id: int, budget: float, *, attempt: int | None = None) -> Path:
        """A new, empty local folder for the trainer to write a checkpoint into.

        The folder is scratch space until ``commit``; a worker that gives up on the slice
        may delete it. Raises ValueError for a negative id or attempt, or a non-finite budget.
        """
        ...

    def commit(
        self, local: Path, study_id: int, trial_id: int, budget: float, *, attempt: int | None = None
    ) -> str:
        """Store the files in ``local`` as the checkpoint at ``budget`` of lease ``attempt``; returns its URI.

        Atomic: readers see the previous checkpoint at that URI or the new one. Committing
        the same (study, trial, budget, attempt) again replaces the earlier checkpoint, so a
        retried commit succeeds. Different attempts never share a URI: a worker that lost its
        lease (whose trial was requeued as a later attempt) cannot replace the checkpoint of
        the new lease holder. Workers always pass the lease's ``attempt``; ``None`` writes the
        layout from before attempts were part of it. ``local`` belongs to the store
        afterwards. Raises CheckpointError if ``local`` is not a folder.
        """
        ...

    def fetch(self, uri: str) -> Path:
        """A local folder holding the checkpoint's files; treat it as read-only.

        Raises CheckpointError when the URI is not one this store handles, points outside
        the store, or names a checkpoint that does not exist.
        """
        ...

    def owner(self, uri: str) -> tuple[int, int]:
        """(study id, trial id) of the slice that committed the checkpoint at ``uri``.

        A worker token can report any URI as its trial's checkpoint; whoever serves or
        resumes a checkpoint checks that it is the trial's own with this. Raises
        CheckpointError like ``fetch`` for a URI that is not a checkpoint of this store.
        """
        ...


def format_budget(budget: float) -> str:
    """``3.0 -> "3"``, ``2.5 -> "2.5"``: the same budget always gives the same folder name."""
    if not math.isfinite(budget) or budget < 0:
        raise ValueError(f"checkpoint budget must be finite and >= 0, got {budget}")
    return str(int(budget)) if float(budget).is_integer() else repr(float(budget))


def _check_id(kind: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{kind} must be a non-negative integer, got {value!r}")


class FileCheckpointStore:
    """Checkpoints as folders under ``root``, addressed by ``file://`` URIs."""

    scheme = "file"

    def __init__(self, root: Path) -> None:
        # Resolved once, so that the containment check in fetch compares real paths.
        self.root = Path(root).expanduser().resolve()

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def location(self, study_id: int, trial_id: int, budget: float, *, attempt: int | None = None) -> Path:
        _check_id("study_id", study_id)
        _check_id("trial_id", trial_id)
        folder = f"budget-{format_budget(budget)}"
        if attempt is not None:
            _check_id("attempt", attempt)
            folder += f"-a{attempt}"
        return self.root / f"study-{study_id}" / f"trial-{trial_id}" / folder

    def open_for_write(self, study_id: int, trial_id: int, budget: float, *, attempt: int | None = None) -> Path:
        name = self.location(study_id, trial_id, budget, attempt=attempt).relative_to(self.root)
        staging = self._staging()
        prefix = "-".join(name.parts) + "-"
        return Path(tempfile.mkdtemp(prefix=prefix, dir=staging))

    def commit(
        self, local: Path, study_id: int, trial_id: int, budget: float, *, attempt: int | None = None
    ) -> str:
        final = self.location(study_id, trial_id, budget, attempt=attempt)
        local = Path(local).resolve()
        if not local.is_dir():
            raise CheckpointError(f"cannot commit {local}: not a folder")
        staging = self._staging()
        if local.parent == staging:
            ready = local  # written in place by the trainer: commit is a rename
        else:
            # Copy a foreign folder into staging first: the caller keeps its folder, and the
            # final step is still a rename on the store's own file system.
            ready = Path(tempfile.mkdtemp(prefix="import-", dir=staging))
            shutil.copytree(local, ready, dirs_exist_ok=True)
        _fsync_tree(ready)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._rename_into_place(ready, final)
        _fsync_dir(final.parent)
        return final.as_uri()

    def fetch(self, uri: str) -> Path:
        path = self._path_of(uri)
        if not path.is_dir():
            raise CheckpointError(f"checkpoint {uri} does not exist")
        return path

    def owner(self, uri: str) -> tuple[int, int]:
        study, trial, _budget = self._path_of(uri).relative_to(self.root).parts
        return int(study.removeprefix("study-")), int(trial.removeprefix("trial-"))

    def _staging(self) -> Path:
        staging = self.root / STAGING_DIR
        staging.mkdir(parents=True, exist_ok=True)
        return staging

    def _rename_into_place(self, ready: Path, final: Path) -> None:
        # rename() cannot replace a non-empty folder, so an earlier checkpoint is first moved
        # aside. A concurrent fetch in that instant gets CheckpointError, which is retryable.
        for _ in range(5):
            try:
                os.rename(ready, final)
                return
            except OSError:
                if not final.exists():
                    raise
            aside = self.root / STAGING_DIR / f"replaced-{uuid.uuid4().hex}"
            try:
                os.rename(final, aside)
            except FileNotFoundError:
                continue  # another commit moved it first; try again
            shutil.rmtree(aside, ignore_errors=True)
        raise CheckpointError(f"could not replace {final}: concurrent commits kept winning")

    def _path_of(self, uri: str) -> Path:
        """The folder ``uri`` names, refusing anything that is not a checkpoint of this store."""
        parts = urlsplit(uri)
        if parts.scheme != "file":
            raise CheckpointError(f"{uri!r} is not a file:// URI; this store is {self.uri}")
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise CheckpointError(f"{uri!r}: expected file:///absolute/path with no host or query")
        raw = Path(unquote(parts.path))
        if not raw.is_absolute() or ".." in raw.parts:
            raise CheckpointError(f"{uri!r}: the path must be absolute and contain no '..'")
        # resolve() follows symlinks, so a link inside the root that leads out is refused too.
        resolved = raw.resolve()
        if not resolved.is_relative_to(self.root):
            raise CheckpointError(f"{uri!r} is outside the checkpoint store {self.uri}")
        relative = resolved.relative_to(self.root).parts
        if len(relative) != len(_LAYOUT) or not all(
            pattern.fullmatch(part) for pattern, part in zip(_LAYOUT, relative, strict=True)
        ):
            raise CheckpointError(
                f"{uri!r} is not a checkpoint: expected {self.uri}/study-<id>/trial-<id>/budget-<b>-a<attempt>"
            )
        return resolved


def _fsync_tree(folder: Path) -> None:
    """Flush file contents before the rename publishes them, so a crash cannot leave a
    committed checkpoint with empty files."""
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _file_store(base_uri: str) -> CheckpointStore:
    parts = urlsplit(base_uri)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(
            f"checkpoint URI {base_uri!r} names host {parts.netloc!r}; "
            "write file:///absolute/path (three slashes) or a plain path"
        )
    path = Path(unquote(parts.path))
    if not path.is_absolute():
        raise ValueError(f"checkpoint URI {base_uri!r}: a file:// URI needs an absolute path")
    return FileCheckpointStore(path)


# One entry per URI scheme; an object store adds e.g. "s3": S3CheckpointStore.from_uri.
_STORE_FACTORIES: dict[str, Callable[[str], CheckpointStore]] = {"file": _file_store}


def supported_schemes() -> list[str]:
    return sorted(_STORE_FACTORIES)


def store_from_uri(base_uri: str) -> CheckpointStore:
    """The store for a base URI (``file:///abs/path``) or a plain local path.

    A relative plain path is taken relative to the current directory. Raises ValueError for
    an empty value or an unsupported scheme, naming the supported ones.
    """
    if not base_uri.strip():
        raise ValueError("checkpoint URI is empty; give file:///absolute/path or a plain path")
    scheme = urlsplit(base_uri).scheme.lower()
    if not scheme:
        return FileCheckpointStore(Path(base_uri))
    factory = _STORE_FACTORIES.get(scheme)
    if factory is None:
        supported = ", ".join(f"{name}://" for name in supported_schemes())
        raise ValueError(
            f"checkpoint URI {base_uri!r}: scheme '{scheme}://' is not supported yet; "
            f"supported: {supported} (or a plain local path)"
        )
    return factory(base_uri)

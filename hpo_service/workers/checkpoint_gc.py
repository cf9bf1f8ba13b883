"""Collect the checkpoint folders of a file store that nothing refers to (`hpo checkpoints gc`).

Garbage in a store comes from slices that never finished: a worker killed or preempted mid-slice
leaves its scratch folder in ``.staging``, and a worker that lost its lease still commits into
its own attempt's folder (F8), which the server then refuses to record. Checkpoints the database
refers to are never garbage, older budgets included: the best adapter is exported from the rung
result that scored best, and an unusable checkpoint falls back to an earlier one.

The collector is a client like a worker: it asks the API which checkpoints each trial still
needs (``GET /studies/{id}/checkpoints``) and deletes, on the file system it can see, only what
is provably dead:

- a folder changed after ``cutoff`` (the collector's start minus ``min_age``) is kept, whatever
  it is: a slice may be about to report it, and the references were read after that moment;
- the folders of a study the server does not show this token (unknown, or another project's)
  are left alone;
- a committed checkpoint is kept while its trial runs (its completion may be on the way) or
  while the trial or one of its rung results refers to it;
- a scratch folder is kept while its trial runs the attempt it is named for; other staging
  entries (copies being imported, replaced checkpoints being removed) are left over from
  crashes once they are older than the cutoff.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from hpo_service.client import HpoClient
from hpo_service.client_types import TrialCheckpoints
from hpo_service.errors import NotFound
from hpo_service.workers.checkpoints import BUDGET_FOLDER, SCRATCH_FOLDER, STAGING_DIR, STUDY_FOLDER, TRIAL_FOLDER

RUNNING = "running"


@dataclass(frozen=True)
class Entry:
    """A folder of the store the collector may delete."""

    path: Path
    study_id: int | None  # None: a staging entry that names no trial (an import, a replaced copy)
    trial_id: int | None
    attempt: int | None
    committed: bool  # a checkpoint under study-*/trial-*/, not a scratch folder in .staging


def scan(root: Path) -> Iterator[Entry]:
    """The store's checkpoint and scratch folders; anything not in the store's layout is not listed."""
    for study_dir in _folders(root):
        study = STUDY_FOLDER.fullmatch(study_dir.name)
        if study is None:
            continue
        for trial_dir in _folders(study_dir):
            trial = TRIAL_FOLDER.fullmatch(trial_dir.name)
            if trial is None:
                continue
            for budget_dir in _folders(trial_dir):
                budget = BUDGET_FOLDER.fullmatch(budget_dir.name)
                if budget is not None:
                    attempt = int(budget.group(1)) if budget.group(1) else None
                    yield Entry(budget_dir, int(study.group(1)), int(trial.group(1)), attempt, committed=True)
    for scratch_dir in _folders(root / STAGING_DIR):
        named = SCRATCH_FOLDER.fullmatch(scratch_dir.name)
        if named is None:
            yield Entry(scratch_dir, None, None, None, committed=False)
        else:
            attempt = int(named.group(3)) if named.group(3) else None
            yield Entry(scratch_dir, int(named.group(1)), int(named.group(2)), attempt, committed=False)


def verdict(entry: Entry, trials: dict[int, TrialCheckpoints] | None, changed_at: Callable[[], float],
            cutoff: float) -> str | None:
    """Why ``entry`` is garbage, or None to keep it. ``trials``: the references of the entry's study
    (None when the server does not show that study); ``changed_at``: the newest change in the
    folder's tree (called only for folders the references do not keep: it walks the tree)."""
    if entry.study_id is not None and trials is None:
        return None  # a study this token cannot see: not ours to judge
    trial = trials.get(entry.trial_id) if trials is not None and entry.trial_id is not None else None
    if trial is not None and trial["state"] == RUNNING:
        if entry.committed or entry.attempt in (None, trial["attempt"]):
            return None
    if entry.committed and trial is not None and _in_store(entry.path) in {_in_store(uri) for uri in trial["uris"]}:
        return None
    if changed_at() >= cutoff:
        return None
    if entry.study_id is None:
        return "left in staging by an interrupted import or replacement"
    if trial is None:
        return f"trial {entry.trial_id} is not in study {entry.study_id}"
    if not entry.committed:
        if trial["state"] == RUNNING:
            return f"scratch of attempt {entry.attempt}; trial {trial['trial_id']} now runs attempt {trial['attempt']}"
        return f"scratch of an unfinished slice; trial {trial['trial_id']} is {trial['state']}"
    return f"no trial or rung result refers to it; trial {trial['trial_id']} is {trial['state']}"


def _in_store(location: Path | str) -> tuple[str, ...]:
    """``study-<id>/trial-<id>/budget-<b>`` of a checkpoint's folder or URI. Compared instead of whole
    URIs: the node running the collector may mount a shared store under another path."""
    path = location if isinstance(location, Path) else Path(unquote(urlsplit(location).path))
    return path.parts[-3:]


def newest_change(folder: Path) -> float:
    """The latest mtime or ctime in ``folder``'s tree (a rename sets the ctime; files written
    deep inside do not touch the top folder's times)."""
    newest = 0.0
    for directory, _dirs, files in os.walk(folder):
        for name in [directory, *(os.path.join(directory, f) for f in files)]:
            try:
                stat = os.lstat(name)
            except FileNotFoundError:
                continue
            newest = max(newest, stat.st_mtime, stat.st_ctime)
    return newest


def folder_bytes(folder: Path) -> int:
    total = 0
    for directory, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except FileNotFoundError:
                continue
    return total


@dataclass
class Collection:
    """What a run found; ``deleted`` are (path, reason, bytes), only planned when ``dry_run``."""

    dry_run: bool
    deleted: list[tuple[Path, str, int]] = field(default_factory=list)
    kept: int = 0
    hidden_studies: set[int] = field(default_factory=set)

    @property
    def freed_bytes(self) -> int:
        return sum(size for _, _, size in self.deleted)


def collect(root: Path, references: Callable[[int], dict[int, TrialCheckpoints] | None], cutoff: float, *,
            dry_run: bool = False,
            on_study: Callable[[int, dict[int, TrialCheckpoints] | None], None] = lambda *_: None) -> Collection:
    """Delete (or with ``dry_run`` only list) the garbage under ``root``.

    ``references(study_id)`` reads a study's references from the server (None: the server does
    not show it); it is asked once per study, after ``cutoff`` was taken, and ``on_study`` is
    told what it answered (the slow part on a large study: progress)."""
    result = Collection(dry_run=dry_run)
    cache: dict[int, dict[int, TrialCheckpoints] | None] = {}
    for entry in scan(root):
        if entry.study_id is not None and entry.study_id not in cache:
            cache[entry.study_id] = references(entry.study_id)
            on_study(entry.study_id, cache[entry.study_id])
        trials = cache.get(entry.study_id) if entry.study_id is not None else {}
        if trials is None and entry.study_id is not None:
            result.hidden_studies.add(entry.study_id)
        reason = verdict(entry, trials, lambda: newest_change(entry.path), cutoff)
        if reason is None:
            result.kept += 1
            continue
        result.deleted.append((entry.path, reason, folder_bytes(entry.path)))
        if not dry_run:
            _delete(entry.path, root)
    return result


def _delete(folder: Path, root: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    # Empty trial-* and study-* folders go too; a folder that is not empty stays.
    for parent in list(folder.parents)[:2]:
        if parent == root or parent.name == STAGING_DIR:
            break
        try:
            parent.rmdir()
        except OSError:
            break


def _folders(path: Path) -> list[Path]:
    try:
        return sorted((p for p in path.iterdir() if p.is_dir() and not p.is_symlink()), key=lambda p: p.name)
    except FileNotFoundError:
        return []


def server_references(client: HpoClient) -> Callable[[int], dict[int, TrialCheckpoints] | None]:
    """``references`` for ``collect`` read over the API, a page of trials at a time."""

    def references(study_id: int) -> dict[int, TrialCheckpoints] | None:
        trials: dict[int, TrialCheckpoints] = {}
        after: int | None = 0
        while after is not None:
            try:
                page = client.checkpoint_references(study_id, after=after)
            except NotFound:
                return None
            trials.update((item["trial_id"], item) for item in page["items"])
            after = page["next_after"]
        return trials

    return references

"""Which checkpoint folders `hpo checkpoints gc` deletes: the rules as a table, then a real store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hpo_service.client_types import TrialCheckpoints
from hpo_service.workers.checkpoint_gc import Entry, collect, scan, verdict
from hpo_service.workers.checkpoints import FileCheckpointStore

ROOT = Path("/store")
OLD, CUTOFF, NEW = 100.0, 200.0, 300.0


def committed(trial: int = 7, budget: str = "3", attempt: int | None = 1, study: int = 1) -> Entry:
    folder = f"budget-{budget}" + (f"-a{attempt}" if attempt is not None else "")
    return Entry(ROOT / f"study-{study}" / f"trial-{trial}" / folder, study, trial, attempt, committed=True)


def scratch(trial: int = 7, attempt: int | None = 1, study: int = 1) -> Entry:
    return Entry(ROOT / ".staging" / f"study-{study}-trial-{trial}-budget-3-a{attempt}-x1", study, trial, attempt,
                 committed=False)


def refs(state: str, attempt: int = 1, uris: tuple[str, ...] = (), trial: int = 7) -> dict[int, TrialCheckpoints]:
    return {trial: {"trial_id": trial, "state": state, "attempt": attempt, "uris": list(uris)}}


# A URI of another mount point of the same store: the collector compares the path inside the store.
REFERENCED = ("file:///mnt/elsewhere/study-1/trial-7/budget-3-a1",)
IMPORT = Entry(ROOT / ".staging" / "import-abc", None, None, None, committed=False)

CASES: list[tuple[str, Entry, Any, float, str | None]] = [
    ("referenced by the trial or a rung result", committed(), refs("completed", 1, REFERENCED), OLD, None),
    ("referenced, older layout (no attempt)", committed(attempt=None),
     refs("paused", 1, ("file:///store/study-1/trial-7/budget-3",)), OLD, None),
    ("a refused commit of an earlier attempt", committed(attempt=1),
     refs("completed", 2, ("file:///store/study-1/trial-7/budget-3-a2",)), OLD, "no trial or rung result refers"),
    ("any commit of a running trial: its completion may be on the way", committed(attempt=1),
     refs("running", 2), OLD, None),
    ("unreferenced but changed after the cutoff", committed(), refs("stopped"), NEW, None),
    ("a trial that is not in the study", committed(trial=99), refs("completed"), OLD, "trial 99 is not in study 1"),
    ("the study is hidden from this token", committed(), None, OLD, None),
    ("scratch of the attempt a running trial is on", scratch(attempt=2), refs("running", 2), OLD, None),
    ("scratch of a killed slice, trial requeued to attempt 2", scratch(attempt=1), refs("running", 2), OLD,
     "now runs attempt 2"),
    ("scratch of a killed slice, trial since completed", scratch(attempt=1), refs("completed", 2), OLD,
     "scratch of an unfinished slice; trial 7 is completed"),
    ("scratch, trial pending (requeued)", scratch(attempt=1), refs("pending", 2), OLD, "trial 7 is pending"),
    ("scratch changed after the cutoff", scratch(attempt=1), refs("pending", 2), NEW, None),
    ("scratch of a hidden study", scratch(), None, OLD, None),
    ("an import left by a crash", IMPORT, {}, OLD, "interrupted import"),
    ("an import in progress", IMPORT, {}, NEW, None),
]


@pytest.mark.parametrize(("entry", "trials", "changed", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_verdict(entry: Entry, trials: Any, changed: float, reason: str | None) -> None:
    got = verdict(entry, trials, lambda: changed, CUTOFF)
    if reason is None:
        assert got is None
    else:
        assert got is not None and reason in got


def test_collect_on_a_real_store(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path / "store")

    def commit(trial: int, budget: float, attempt: int) -> str:
        folder = store.open_for_write(1, trial, budget, attempt=attempt)
        (folder / "weights.bin").write_bytes(b"x" * 1000)
        return store.commit(folder, 1, trial, budget, attempt=attempt)

    kept_best = commit(7, 1, 1)  # an older budget a rung result still refers to
    latest = commit(7, 3, 1)
    refused = commit(7, 3, 2)  # a worker that lost its lease committed anyway
    only_one = commit(8, 1, 1)  # trial 8's only checkpoint, refused: its folders go, and its empty trial folder
    killed = store.open_for_write(1, 9, 1, attempt=1)  # a worker died mid-slice
    (killed / "partial.bin").write_bytes(b"y" * 10)
    live = store.open_for_write(1, 10, 1, attempt=3)  # a slice in progress
    foreign = tmp_path / "store" / "notes"  # not in the store's layout: never touched
    foreign.mkdir()
    references = {
        7: {"trial_id": 7, "state": "completed", "attempt": 2, "uris": [kept_best, latest]},
        8: {"trial_id": 8, "state": "stopped", "attempt": 2, "uris": []},
        9: {"trial_id": 9, "state": "completed", "attempt": 2, "uris": []},
        10: {"trial_id": 10, "state": "running", "attempt": 3, "uris": []},
    }
    asked: list[int] = []

    def read(study_id: int) -> dict[int, TrialCheckpoints] | None:
        asked.append(study_id)
        return references  # type: ignore[return-value]

    planned = collect(store.root, read, cutoff=9e18, dry_run=True)
    assert {p for p, _, _ in planned.deleted} == {Path(refused[7:]), Path(only_one[7:]), killed}
    assert Path(refused[7:]).is_dir()  # a dry run deletes nothing

    done = collect(store.root, read, cutoff=9e18)
    assert {p for p, _, _ in done.deleted} == {Path(refused[7:]), Path(only_one[7:]), killed}
    assert done.freed_bytes == 2010 and done.kept == 3
    assert [e.path for e in scan(store.root)] == [Path(kept_best[7:]), Path(latest[7:]), live]
    assert not (store.root / "study-1" / "trial-8").exists() and foreign.is_dir()
    assert set(asked) == {1}

    assert collect(store.root, read, cutoff=0.0).deleted == []  # everything is newer than a cutoff at 0

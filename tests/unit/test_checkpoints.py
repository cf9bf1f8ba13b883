"""Checkpoint stores: one contract suite for every store, plus file-store specifics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hpo_service.workers.checkpoints import (
    STAGING_DIR,
    CheckpointStore,
    FileCheckpointStore,
    format_budget,
    store_from_uri,
)
from hpo_service.workers.trainer import CheckpointError

# Every CheckpointStore implementation is added here and must pass the contract tests.
STORES: list[object] = [
    pytest.param(lambda root: FileCheckpointStore(root), id="file"),
    pytest.param(lambda root: store_from_uri(root.as_uri()), id="file-from-uri"),
]
StoreFactory = Callable[[Path], CheckpointStore]


def _write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def _read(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): path.read_text()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# --- contract: every store -------------------------------------------------------------


@pytest.mark.parametrize("make_store", STORES)
def test_open_for_write_gives_a_new_empty_folder(make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    first = store.open_for_write(1, 2, 3.0)
    second = store.open_for_write(1, 2, 3.0)
    assert first.is_dir() and second.is_dir() and first != second
    assert list(first.iterdir()) == []


@pytest.mark.parametrize("make_store", STORES)
@pytest.mark.parametrize(
    "files",
    [
        {"state.json": "{}"},
        {"state.json": '{"a": 1}', "weights/adapter.bin": "\x00\x01", "notes.txt": "ü"},
    ],
)
def test_commit_then_fetch_round_trips_the_files(
    make_store: StoreFactory, tmp_path: Path, files: dict[str, str]
) -> None:
    store = make_store(tmp_path / "store")
    local = store.open_for_write(7, 11, 2.5)
    _write(local, files)
    uri = store.commit(local, 7, 11, 2.5)
    assert _read(store.fetch(uri)) == files


@pytest.mark.parametrize("make_store", STORES)
def test_commit_again_replaces_the_checkpoint(make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    uris = []
    for text in ("old", "new"):
        local = store.open_for_write(1, 1, 9)
        _write(local, {"state.json": text})
        uris.append(store.commit(local, 1, 1, 9))
    assert uris[0] == uris[1]
    assert _read(store.fetch(uris[1])) == {"state.json": "new"}


@pytest.mark.parametrize("make_store", STORES)
def test_checkpoints_of_different_budgets_are_kept_apart(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = make_store(tmp_path / "store")
    uris = {}
    for budget in (1, 3, 9):
        local = store.open_for_write(1, 1, budget)
        _write(local, {"budget": str(budget)})
        uris[budget] = store.commit(local, 1, 1, budget)
    assert {budget: _read(store.fetch(uri))["budget"] for budget, uri in uris.items()} == {
        1: "1",
        3: "3",
        9: "9",
    }


@pytest.mark.parametrize("make_store", STORES)
def test_checkpoints_of_different_lease_attempts_are_kept_apart(make_store: StoreFactory, tmp_path: Path) -> None:
    """F8: a worker that lost its lease (attempt 1) and commits late cannot replace the checkpoint
    that the new holder (attempt 2) committed at the same budget."""
    store = make_store(tmp_path / "store")
    new_holder = store.open_for_write(1, 1, 9, attempt=2)
    _write(new_holder, {"owner": "new holder"})
    recorded = store.commit(new_holder, 1, 1, 9, attempt=2)
    stale = store.open_for_write(1, 1, 9, attempt=1)
    _write(stale, {"owner": "stale worker"})
    orphan = store.commit(stale, 1, 1, 9, attempt=1)
    assert orphan != recorded
    assert _read(store.fetch(recorded)) == {"owner": "new holder"}
    assert _read(store.fetch(orphan)) == {"owner": "stale worker"}
    assert store.owner(recorded) == store.owner(orphan) == (1, 1)


@pytest.mark.parametrize("make_store", STORES)
def test_commit_again_in_the_same_attempt_replaces_the_checkpoint(make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    uris = []
    for text in ("old", "new"):
        local = store.open_for_write(1, 1, 9, attempt=3)
        _write(local, {"state.json": text})
        uris.append(store.commit(local, 1, 1, 9, attempt=3))
    assert uris[0] == uris[1]
    assert _read(store.fetch(uris[1])) == {"state.json": "new"}


@pytest.mark.parametrize("make_store", STORES)
def test_fetch_of_a_missing_checkpoint_raises(make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    local = store.open_for_write(1, 1, 1)
    uri = store.commit(local, 1, 1, 1)
    missing = uri.replace("budget-1", "budget-2")
    with pytest.raises(CheckpointError, match="does not exist"):
        store.fetch(missing)


@pytest.mark.parametrize("make_store", STORES)
def test_commit_of_a_missing_folder_raises(make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    with pytest.raises(CheckpointError, match="not a folder"):
        store.commit(tmp_path / "nowhere", 1, 1, 1)


@pytest.mark.parametrize("make_store", STORES)
@pytest.mark.parametrize(
    ("study_id", "trial_id", "budget"),
    [(-1, 1, 1.0), (1, -1, 1.0), (1, 1, -1.0), (1, 1, float("nan")), (1, 1, float("inf"))],
)
def test_invalid_address_is_a_value_error(
    make_store: StoreFactory, tmp_path: Path, study_id: int, trial_id: int, budget: float
) -> None:
    store = make_store(tmp_path / "store")
    with pytest.raises(ValueError):
        store.open_for_write(study_id, trial_id, budget)


@pytest.mark.parametrize("make_store", STORES)
@pytest.mark.parametrize("attempt", [-1, True, 1.0, "1"])
def test_invalid_attempt_is_a_value_error(make_store: StoreFactory, tmp_path: Path, attempt: object) -> None:
    store = make_store(tmp_path / "store")
    with pytest.raises(ValueError):
        store.open_for_write(1, 1, 1, attempt=attempt)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.commit(tmp_path, 1, 1, 1, attempt=attempt)  # type: ignore[arg-type]


# --- file store specifics ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "folder"),
    [(3, "budget-3"), (3.0, "budget-3"), (2.5, "budget-2.5"), (0.1, "budget-0.1"), (0, "budget-0")],
)
def test_file_layout(tmp_path: Path, budget: float, folder: str) -> None:
    store = FileCheckpointStore(tmp_path)
    local = store.open_for_write(4, 5, budget)
    uri = store.commit(local, 4, 5, budget)
    expected = tmp_path.resolve() / "study-4" / "trial-5" / folder
    assert uri == expected.as_uri()
    assert store.fetch(uri) == expected
    assert format_budget(budget) == folder.removeprefix("budget-")


@pytest.mark.parametrize(
    ("budget", "attempt", "folder"),
    [
        (3, 1, "budget-3-a1"),
        (3.0, 2, "budget-3-a2"),
        (2.5, 1, "budget-2.5-a1"),
        (0.1, 10, "budget-0.1-a10"),
        (0, 0, "budget-0-a0"),
        (1e-05, 7, "budget-1e-05-a7"),
        (2.5e-07, 3, "budget-2.5e-07-a3"),
        (3, None, "budget-3"),  # no attempt: the layout before F8
    ],
)
def test_file_layout_per_lease_attempt(tmp_path: Path, budget: float, attempt: int | None, folder: str) -> None:
    store = FileCheckpointStore(tmp_path)
    local = store.open_for_write(4, 5, budget, attempt=attempt)
    uri = store.commit(local, 4, 5, budget, attempt=attempt)
    expected = tmp_path.resolve() / "study-4" / "trial-5" / folder
    assert uri == expected.as_uri()
    assert store.location(4, 5, budget, attempt=attempt) == expected
    assert store.fetch(uri) == expected
    assert store.owner(uri) == (4, 5)


@pytest.mark.parametrize(
    ("relative", "owner"),
    [
        pytest.param("study-1/trial-2/budget-3-a1", (1, 2), id="per-attempt"),
        pytest.param("study-10/trial-20/budget-2.5-a12", (10, 20), id="per-attempt-fraction"),
        pytest.param("study-1/trial-2/budget-1e-05-a3", (1, 2), id="per-attempt-exponent"),
        pytest.param("study-1/trial-2/budget-3", (1, 2), id="before-F8"),
        pytest.param("study-7/trial-8/budget-0.1", (7, 8), id="before-F8-fraction"),
    ],
)
def test_both_layouts_are_read(tmp_path: Path, relative: str, owner: tuple[int, int]) -> None:
    """Checkpoints committed before F8 (``budget-<b>``, written here by hand as an older worker did)
    still resume and are still served, next to the per-attempt layout."""
    store = FileCheckpointStore(tmp_path / "store")
    folder = store.root / relative
    _write(folder, {"state.json": relative})
    assert _read(store.fetch(folder.as_uri())) == {"state.json": relative}
    assert store.owner(folder.as_uri()) == owner


@pytest.mark.parametrize(
    "relative",
    [
        pytest.param("study-1/trial-1/budget-3-a", id="attempt-empty"),
        pytest.param("study-1/trial-1/budget-3-a-1", id="attempt-negative"),
        pytest.param("study-1/trial-1/budget-3-ax", id="attempt-not-a-number"),
        pytest.param("study-1/trial-1/budget-3-a1-a2", id="two-attempts"),
        pytest.param("study-1/trial-1/budget-3a1", id="no-dash"),
        pytest.param("study-1/trial-1/budget-a1", id="no-budget"),
        pytest.param("study-1/trial-1/budget-3-A1", id="upper-case"),
        pytest.param("study-1/trial-1/budget-3-a1/inner", id="too-deep"),
        pytest.param("study-1/trial-1-a1/budget-3", id="attempt-on-the-trial"),
    ],
)
def test_malformed_attempt_folders_are_refused(tmp_path: Path, relative: str) -> None:
    store = FileCheckpointStore(tmp_path / "store")
    folder = store.root / relative
    folder.mkdir(parents=True)  # exists, so only the layout check can refuse it
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        store.fetch(folder.as_uri())
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        store.owner(folder.as_uri())


def test_commit_leaves_nothing_in_staging(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path)
    for text in ("first", "second"):  # the second commit replaces the first
        local = store.open_for_write(1, 1, 1)
        _write(local, {"state.json": text})
        store.commit(local, 1, 1, 1)
    assert list((tmp_path / STAGING_DIR).iterdir()) == []


def test_commit_of_a_foreign_folder_copies_it(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path / "store")
    foreign = tmp_path / "elsewhere"
    foreign.mkdir()
    _write(foreign, {"state.json": "x"})
    uri = store.commit(foreign, 1, 1, 1)
    assert _read(store.fetch(uri)) == {"state.json": "x"}
    assert _read(foreign) == {"state.json": "x"}  # the caller's folder is left alone


def test_uri_with_percent_encoding_round_trips(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path / "with space%")
    local = store.open_for_write(1, 1, 1)
    _write(local, {"a": "b"})
    uri = store.commit(local, 1, 1, 1)
    assert "%20" in uri
    assert _read(store.fetch(uri)) == {"a": "b"}


@pytest.mark.parametrize(
    "make_uri",
    [
        pytest.param(lambda root: "file:///etc", id="etc"),
        pytest.param(lambda root: "file:///etc/passwd", id="etc-passwd"),
        pytest.param(lambda root: f"{root.as_uri()}/../outside", id="dotdot-out"),
        pytest.param(
            lambda root: f"{root.as_uri()}/study-1/trial-1/budget-1/../../../../etc", id="dotdot-deep"
        ),
        pytest.param(lambda root: f"{root.as_uri()}/study-1/../study-1/trial-1/budget-1", id="dotdot-in"),
        pytest.param(lambda root: f"{root.as_uri()}/%2E%2E/outside", id="encoded-dotdot"),
        pytest.param(lambda root: root.as_uri(), id="root-itself"),
        pytest.param(lambda root: f"{root.as_uri()}/{STAGING_DIR}", id="staging"),
        pytest.param(lambda root: f"{root.as_uri()}/study-1", id="partial"),
        pytest.param(lambda root: f"file://otherhost{root}/study-1/trial-1/budget-1", id="host"),
        pytest.param(lambda root: f"{root}/study-1/trial-1/budget-1", id="plain-path"),
        pytest.param(lambda root: "study-1/trial-1/budget-1", id="relative"),
        pytest.param(lambda root: "s3://bucket/study-1/trial-1/budget-1", id="s3"),
        pytest.param(lambda root: f"{root.as_uri()}/study-1/trial-1/budget-1?x=1", id="query"),
        # The same with the per-attempt layout (F8).
        pytest.param(
            lambda root: f"{root.as_uri()}/study-1/trial-1/budget-1-a1/../../../../etc", id="attempt-dotdot-deep"
        ),
        pytest.param(
            lambda root: f"{root.as_uri()}/study-1/trial-1/budget-1-a1/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc",
            id="attempt-encoded-dotdot",
        ),
        pytest.param(
            lambda root: f"{root.as_uri()}/study-1/trial-1/budget-1-a1/../../../study-9/trial-9/budget-9-a1",
            id="attempt-dotdot-to-another-trial",
        ),
        pytest.param(lambda root: f"{root.as_uri()}/study-1/trial-1/budget-1-a1?x=1", id="attempt-query"),
        pytest.param(lambda root: f"file://otherhost{root}/study-1/trial-1/budget-1-a1", id="attempt-host"),
        pytest.param(lambda root: f"{root}/study-1/trial-1/budget-1-a1", id="attempt-plain-path"),
        pytest.param(lambda root: "s3://bucket/study-1/trial-1/budget-1-a1", id="attempt-s3"),
        pytest.param(lambda root: f"{root.as_uri()}/{STAGING_DIR}/study-1/trial-1/budget-1-a1", id="attempt-staging"),
    ],
)
def test_fetch_refuses_uris_outside_the_store(tmp_path: Path, make_uri: Callable[[Path], str]) -> None:
    root = tmp_path / "store"
    store = FileCheckpointStore(root)
    store.commit(store.open_for_write(1, 1, 1), 1, 1, 1)  # so that valid-looking targets exist
    store.commit(store.open_for_write(1, 1, 1, attempt=1), 1, 1, 1, attempt=1)
    store.commit(store.open_for_write(9, 9, 9, attempt=1), 9, 9, 9, attempt=1)
    (tmp_path / "outside").mkdir()
    with pytest.raises(CheckpointError):
        store.fetch(make_uri(root.resolve()))
    with pytest.raises(CheckpointError):
        store.owner(make_uri(root.resolve()))


@pytest.mark.parametrize("make_store", STORES)
@pytest.mark.parametrize(("study_id", "trial_id", "budget"), [(1, 1, 1.0), (7, 11, 2.5), (3, 123456789, 81.0)])
def test_owner_names_the_slice_that_committed_the_checkpoint(
    make_store: StoreFactory, tmp_path: Path, study_id: int, trial_id: int, budget: float
) -> None:
    store = make_store(tmp_path / "store")
    uri = store.commit(store.open_for_write(study_id, trial_id, budget), study_id, trial_id, budget)
    assert store.owner(uri) == (study_id, trial_id)


def test_fetch_refuses_a_symlink_that_leads_out_of_the_store(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    trial = tmp_path / "store" / "study-1" / "trial-1"
    trial.mkdir(parents=True)
    for folder in ("budget-1", "budget-1-a1"):
        (trial / folder).symlink_to(outside, target_is_directory=True)
        with pytest.raises(CheckpointError, match="outside"):
            store.fetch((trial / folder).as_uri())


# --- store_from_uri ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_base",
    [
        pytest.param(lambda root: root.as_uri(), id="file-uri"),
        pytest.param(lambda root: f"file://{root}", id="file-uri-unencoded"),
        pytest.param(lambda root: f"file://localhost{root}", id="localhost"),
        pytest.param(lambda root: str(root), id="plain-path"),
    ],
)
def test_store_from_uri_builds_a_file_store(tmp_path: Path, make_base: Callable[[Path], str]) -> None:
    store = store_from_uri(make_base(tmp_path))
    assert isinstance(store, FileCheckpointStore)
    assert store.root == tmp_path.resolve()


def test_store_from_uri_takes_a_relative_path_from_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = store_from_uri("checkpoints")
    assert isinstance(store, FileCheckpointStore)
    assert store.root == tmp_path.resolve() / "checkpoints"


@pytest.mark.parametrize(
    ("base_uri", "message"),
    [
        ("s3://bucket/prefix", r"'s3://' is not supported yet; supported: file://"),
        ("gs://bucket/prefix", r"'gs://' is not supported yet; supported: file://"),
        ("https://example.com/x", r"'https://' is not supported yet"),
        ("file://data/checkpoints", r"names host 'data'.*three slashes"),
        ("file:relative/path", r"needs an absolute path"),
        ("", r"empty"),
        ("   ", r"empty"),
    ],
)
def test_store_from_uri_rejects_what_it_cannot_serve(base_uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        store_from_uri(base_uri)


def test_store_from_uri_has_no_side_effects(tmp_path: Path) -> None:
    store_from_uri((tmp_path / "later").as_uri())
    assert not (tmp_path / "later").exists()


def test_uri_from_one_store_is_fetched_by_another_on_the_same_root(tmp_path: Path) -> None:
    writer = store_from_uri(tmp_path.as_uri())
    local = writer.open_for_write(2, 3, 27)
    _write(local, {"state.json": "shared"})
    uri = writer.commit(local, 2, 3, 27)
    reader = store_from_uri(str(tmp_path))
    assert _read(reader.fetch(uri)) == {"state.json": "shared"}

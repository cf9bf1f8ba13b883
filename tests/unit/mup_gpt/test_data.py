"""The stdlib corpus: deterministic, cached, split by whole documents; windows and the search space."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from hpo_service.orchestration.spec_loading import load_named_space
from trainers.mup_gpt import TrialParams
from trainers.mup_gpt.data import (
    SEPARATOR,
    _load,
    eval_windows,
    is_eval_document,
    load_corpus,
    sample_windows,
    split_documents,
    stdlib_documents,
)

SEARCH_SPACES = Path(__file__).resolve().parents[3] / "search_spaces"


def test_corpus_is_deterministic_and_cached(make_config: Callable[..., Any], tmp_path: Path) -> None:
    config = make_config(cache_dir=str(tmp_path), corpus_max_bytes=200_000)
    built = load_corpus(config)
    files = sorted(tmp_path.rglob("*.bin"))
    assert [path.name for path in files] == ["eval.bin", "train.bin"]
    _load.cache_clear()  # read back from the files, not from the per-process memo
    cached = load_corpus(config)
    assert cached.digest == built.digest
    assert torch.equal(cached.train, built.train) and torch.equal(cached.eval, built.eval)
    assert 150_000 < built.train.numel() + built.eval.numel() <= 200_000
    assert built.eval.numel() > 0


def test_documents_come_in_a_fixed_order_and_start_with_pydoc_topics() -> None:
    first = [name for name, _ in itertools.islice(stdlib_documents(), 3)]
    again = [name for name, _ in itertools.islice(stdlib_documents(), 3)]
    assert first == again
    assert first[0].startswith("pydoc_data.topics/")


def test_split_keeps_whole_documents_apart() -> None:
    documents = [(f"doc{i}", f"<{i}>".encode() * 50) for i in range(200)]
    train, held_out = split_documents(documents, max_bytes=1 << 20, eval_fraction=0.1)
    eval_names = {name for name, _ in documents if is_eval_document(name, 0.1)}
    assert 5 <= len(eval_names) <= 40  # about 10% of 200
    for name, content in documents:
        assert (content in held_out.split(SEPARATOR)) == (name in eval_names)
        assert (content in train.split(SEPARATOR)) == (name not in eval_names)


def test_split_stops_at_max_bytes_and_always_holds_something_out() -> None:
    documents = [(f"doc{i}", bytes(100)) for i in range(100)]
    train, held_out = split_documents(documents, max_bytes=5_000, eval_fraction=0.0001)
    assert len(train) + len(held_out) <= 5_000
    assert held_out


def test_file_corpus(make_config: Callable[..., Any], tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_bytes(bytes(range(256)) * 100)
    corpus = load_corpus(make_config(corpus="file", corpus_path=str(text), eval_fraction=0.1))
    assert (corpus.train.numel(), corpus.eval.numel()) == (23_040, 2_560)
    assert corpus.eval[:4].tolist() == [0, 1, 2, 3]


def test_windows() -> None:
    data = torch.arange(1000)  # int64 positions stand in for bytes, so windows show where they start
    batch = sample_windows(data, 4, 16, torch.Generator().manual_seed(0))
    assert batch.shape == (4, 17) and batch.dtype == torch.int64
    assert bool((batch[:, 1:] - batch[:, :-1] == 1).all())  # contiguous bytes
    again = sample_windows(data, 4, 16, torch.Generator().manual_seed(0))
    assert torch.equal(batch, again)
    fixed = eval_windows(data, 3, 16)
    assert fixed[:, 0].tolist() == [0, 492, 983]  # evenly spread, the last ending at the end
    with pytest.raises(ValueError, match="shorter than seq_len"):
        eval_windows(data[:10], 1, 16)


def test_search_space_loads_and_fits_the_trial_params() -> None:
    space = load_named_space("mup_gpt", SEARCH_SPACES)
    rate = space["learning_rate"]
    assert rate["log"] is True
    for bound in (rate["low"], rate["high"]):  # powers of two: a grid of 2**k points fits the range
        assert math.log2(bound) == round(math.log2(bound))
    middle = {name: (dist["low"] * dist["high"]) ** 0.5 if dist.get("log") else (dist["low"] + dist["high"]) / 2
              for name, dist in space.items()}
    TrialParams.model_validate(middle)

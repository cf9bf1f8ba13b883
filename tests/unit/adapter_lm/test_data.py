"""Reading, packing, splitting and batching the data."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from trainers.adapter_lm.data import (
    IGNORE_INDEX,
    PROMPT_TEMPLATE,
    DataError,
    Document,
    load_data,
    pack,
    read_documents,
    split,
)
from trainers.adapter_lm.model import load_tokenizer


@pytest.fixture
def tokenizer(make_config: Callable[..., Any]) -> Any:
    return load_tokenizer(make_config())


def _write(path: Path, lines: list[Any]) -> str:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines), encoding="utf-8")
    return str(path)


def test_jsonl_records_are_plain_text_or_instruction_pairs(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    path = _write(tmp_path / "d.jsonl", [
        {"text": "plain words"}, "", {"instruction": "Say hi", "response": "hi"},
        {"instruction": "Add", "input": "1 2", "response": "3"},
    ])
    docs = read_documents(make_config(data_files=[path]))
    assert docs[0] == Document("", "plain words")
    assert docs[1] == Document(PROMPT_TEMPLATE.format(instruction="Say hi"), "hi")
    assert "### Input:\n1 2" in docs[2].prompt and docs[2].response == "3"


@pytest.mark.parametrize("line", ["{not json", "[1, 2]", json.dumps({"instruction": "no response"})])
def test_malformed_records_name_file_and_line(tmp_path: Path, make_config: Callable[..., Any], line: str) -> None:
    path = _write(tmp_path / "bad.jsonl", [{"text": "fine"}, line])
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        read_documents(make_config(data_files=[path]))


def test_prompt_tokens_carry_no_loss_unless_asked(tokenizer: Any) -> None:
    docs = [Document("### Instruction:\nQ\n\n### Response:\n", "the answer")] * 20
    ids, labels = pack(docs, tokenizer, 16, train_on_prompt=False)
    assert ids.shape[1] == 16 and labels.shape == ids.shape
    masked = labels == IGNORE_INDEX
    assert masked.any() and (labels[~masked] == ids[~masked]).all()
    _, all_labels = pack(docs, tokenizer, 16, train_on_prompt=True)
    assert (all_labels == ids).all()


def test_documents_are_separated_by_eos_and_packed_without_padding(tokenizer: Any) -> None:
    ids, _ = pack([Document("", "x" * 50)] * 10, tokenizer, 8, train_on_prompt=True)
    flat = ids.flatten().tolist()
    assert flat.count(tokenizer.eos_token_id) >= 9
    assert ids.shape[0] == len(flat) // 8


def test_split_is_fixed_by_data_seed_not_by_the_trial() -> None:
    ids = torch.arange(200).view(50, 4)
    first, again, other = split(ids, ids, 0.2, 3), split(ids, ids, 0.2, 3), split(ids, ids, 0.2, 4)
    assert torch.equal(first.eval_ids, again.eval_ids) and first.eval_ids.shape[0] == 10
    assert not torch.equal(first.eval_ids, other.eval_ids)
    assert set(first.eval_ids[:, 0].tolist()).isdisjoint(first.train_ids[:, 0].tolist())


def test_batches_are_a_function_of_seed_and_step() -> None:
    rows = torch.arange(101).view(101, 1).expand(101, 4).contiguous()  # row i holds i: batches name rows
    data = split(rows, rows, 0.1, 0)
    per_epoch = data.steps_per_epoch(8, 2)
    assert per_epoch == data.train_ids.shape[0] // 16
    first = data.micro_batch(5, 2, 1, 8, 2)[0]
    assert torch.equal(first, data.micro_batch(5, 2, 1, 8, 2)[0])
    assert not torch.equal(first, data.micro_batch(6, 2, 1, 8, 2)[0])
    epoch = torch.cat([data.micro_batch(5, s, m, 8, 2)[0][:, 0] for s in range(per_epoch) for m in range(2)])
    assert len(set(epoch.tolist())) == per_epoch * 16  # no sequence twice in an epoch
    later = torch.cat([data.micro_batch(5, s, m, 8, 2)[0][:, 0] for s in range(per_epoch, 2 * per_epoch)
                       for m in range(2)])
    assert not torch.equal(epoch, later)  # a new order each epoch
    assert set(epoch.tolist()).isdisjoint(data.eval_ids[:, 0].tolist())


def test_load_data_caches_per_process(make_config: Callable[..., Any], tokenizer: Any) -> None:
    assert load_data(make_config(), tokenizer) is load_data(make_config(), tokenizer)


def test_too_little_data_is_a_data_error(tmp_path: Path, make_config: Callable[..., Any], tokenizer: Any) -> None:
    path = _write(tmp_path / "small.jsonl", [{"text": "only a few words"}])
    with pytest.raises(DataError):
        load_data(make_config(data_files=[path]), tokenizer)
    with pytest.raises(DataError, match="cannot read|No such file"):
        load_data(make_config(data_files=[str(tmp_path / "missing.jsonl")]), tokenizer)

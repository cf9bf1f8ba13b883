"""Local text / JSONL files -> token sequences packed to ``seq_len``, split into train and eval.

- ``.txt``: each file is one document.
- ``.jsonl``: one record per line, either ``{text_field: ...}`` (plain text) or
  ``{prompt_field: ..., response_field: ...}`` with an optional ``input_field`` (instruction
  pairs, rendered with ``PROMPT_TEMPLATE``). Instruction tokens carry no loss unless
  ``train_on_prompt``: the model should learn the answers, not the questions.

Documents are tokenized with the model's own tokenizer, each followed by EOS, concatenated
and cut into ``seq_len`` sequences (no padding; the remainder is dropped). Sequences, not
documents, are split with ``data_seed``, so every trial of a study sees the same eval set.

Batches are a pure function of ``(seed, step)``: epoch ``e`` visits the train sequences in a
permutation drawn from ``(seed, e)``. A resumed slice therefore needs no sampler state.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from trainers.adapter_lm.config import AdapterLMConfig

IGNORE_INDEX = -100  # label of tokens without loss (PyTorch's cross_entropy default)
PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
PROMPT_WITH_INPUT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
_CACHE_SIZE = 2  # a worker runs trials of one study after another: keep its data tokenized


class DataError(ValueError):
    """The data files cannot produce a training set (missing, malformed, too small)."""


@dataclass(frozen=True)
class Document:
    prompt: str  # text without loss unless train_on_prompt ("" for plain text)
    response: str


@dataclass(frozen=True)
class PackedData:
    train_ids: torch.Tensor  # (n_train, seq_len) int64
    train_labels: torch.Tensor
    eval_ids: torch.Tensor
    eval_labels: torch.Tensor

    def steps_per_epoch(self, batch_size: int, grad_accum_steps: int) -> int:
        return self.train_ids.shape[0] // (batch_size * grad_accum_steps)

    def micro_batch(
        self, seed: int, step: int, micro: int, batch_size: int, grad_accum_steps: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch ``micro`` of optimizer step ``step`` (0-based), from ``seed`` alone."""
        per_step = batch_size * grad_accum_steps
        steps = self.train_ids.shape[0] // per_step
        epoch, within = divmod(step, steps)
        order = _permutation(seed, epoch, self.train_ids.shape[0])
        start = within * per_step + micro * batch_size
        rows = order[start : start + batch_size]
        return self.train_ids[rows], self.train_labels[rows]

    def eval_batches(self, batch_size: int, max_batches: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = self.eval_ids.shape[0]
        for index, start in enumerate(range(0, count, batch_size)):
            if max_batches is not None and index >= max_batches:
                return
            yield self.eval_ids[start : start + batch_size], self.eval_labels[start : start + batch_size]


@lru_cache(maxsize=4)  # one epoch at a time is used; a permutation of 1M rows is 8 MB
def _permutation(seed: int, epoch: int, size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    return torch.randperm(size, generator=generator)


def read_documents(config: AdapterLMConfig) -> list[Document]:
    documents: list[Document] = []
    for name in config.data_files:
        path = Path(name)
        try:
            raw = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"data file {path}: cannot read it ({exc})") from exc
        if path.suffix == ".txt":
            if raw.strip():
                documents.append(Document("", raw))
            continue
        for number, line in enumerate(raw.splitlines(), start=1):
            if line.strip():
                documents.append(_record(config, line, f"{path}:{number}"))
    if not documents:
        raise DataError(f"no text in {', '.join(config.data_files)}")
    return documents


def _record(config: AdapterLMConfig, line: str, where: str) -> Document:
    try:
        record: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not JSON ({exc.msg})") from exc
    if not isinstance(record, dict):
        raise DataError(f"{where}: a record must be a JSON object")
    if isinstance(record.get(config.text_field), str):
        return Document("", record[config.text_field])
    instruction, response = record.get(config.prompt_field), record.get(config.response_field)
    if not (isinstance(instruction, str) and isinstance(response, str)):
        raise DataError(
            f"{where}: needs a string {config.text_field!r}, or {config.prompt_field!r} and {config.response_field!r}"
        )
    extra = record.get(config.input_field)
    if isinstance(extra, str) and extra.strip():
        return Document(PROMPT_WITH_INPUT_TEMPLATE.format(instruction=instruction, input=extra), response)
    return Document(PROMPT_TEMPLATE.format(instruction=instruction), response)


def pack(
    documents: list[Document], tokenizer: Any, seq_len: int, train_on_prompt: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, labels)`` of shape ``(n, seq_len)``: documents + EOS, concatenated and cut."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no EOS token to separate documents")
    prompts = _tokenize(tokenizer, [d.prompt for d in documents])
    responses = _tokenize(tokenizer, [d.response for d in documents])
    ids: list[int] = []
    labels: list[int] = []
    for prompt, response in zip(prompts, responses, strict=True):
        ids += prompt + response + [eos]
        labels += (prompt if train_on_prompt else [IGNORE_INDEX] * len(prompt)) + response + [eos]
    count = len(ids) // seq_len
    used = count * seq_len
    id_rows = torch.tensor(ids[:used], dtype=torch.long).view(count, seq_len)
    label_rows = torch.tensor(labels[:used], dtype=torch.long).view(count, seq_len)
    return id_rows, label_rows


def _tokenize(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    non_empty = [t for t in texts if t]
    encoded = iter(tokenizer(non_empty, add_special_tokens=False)["input_ids"]) if non_empty else iter([])
    return [list(next(encoded)) if t else [] for t in texts]


def split(ids: torch.Tensor, labels: torch.Tensor, eval_fraction: float, data_seed: int) -> PackedData:
    count = ids.shape[0]
    n_eval = max(1, round(count * eval_fraction))
    if count - n_eval < 1:
        raise DataError(f"{count} sequences of this length leave nothing to train on; add data or lower seq_len")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(data_seed))
    eval_rows, train_rows = order[:n_eval].sort().values, order[n_eval:].sort().values
    return PackedData(ids[train_rows], labels[train_rows], ids[eval_rows], labels[eval_rows])


def load_data(config: AdapterLMConfig, tokenizer: Any) -> PackedData:
    """Tokenized, packed and split data; cached per process for the files as they are now."""
    files = tuple((name, _stamp(Path(name))) for name in config.data_files)
    key = (files, getattr(tokenizer, "name_or_path", ""), len(tokenizer), config.seq_len, config.text_field,
           config.prompt_field, config.input_field, config.response_field, config.train_on_prompt,
           config.eval_fraction, config.data_seed)
    cached = _CACHE.get(key)
    if cached is None:
        ids, labels = pack(read_documents(config), tokenizer, config.seq_len, config.train_on_prompt)
        cached = split(ids, labels, config.eval_fraction, config.data_seed)
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = cached
    per_step = config.batch_size * config.grad_accum_steps
    if cached.steps_per_epoch(config.batch_size, config.grad_accum_steps) < 1:
        raise DataError(
            f"{cached.train_ids.shape[0]} training sequences are fewer than one step's {per_step}; "
            "add data or lower batch_size, grad_accum_steps or seq_len"
        )
    return cached


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError as exc:
        raise DataError(f"data file {path}: {exc.strerror or exc}") from exc
    return stat.st_mtime_ns, stat.st_size


_CACHE: dict[tuple[Any, ...], PackedData] = {}

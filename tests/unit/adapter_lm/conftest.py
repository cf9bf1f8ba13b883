"""Fixtures of the adapter_lm tests: a tokenizer and a tiny Llama trained here, and data files.

Nothing is downloaded. The tokenizer is a byte-level BPE (vocab 512) trained on the text of
``pydoc_data.topics``, which ships with Python; the model is a 2-layer Llama built from a
config and pre-trained for a few seconds on the same text, so that adapters have real
weights to adapt (multiplicative adapters such as OFT and ETHER can do little with random
weights). Both are built once per session and saved to a folder the trainer loads from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.tiny_lm import corpus, pretrain, train_tokenizer

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: tests never touch the network

try:
    import peft  # noqa: F401
    import tokenizers  # noqa: F401
    import torch
    import transformers  # noqa: F401
except ImportError:  # the `train` extra is not installed: these tests cannot run
    collect_ignore_glob = ["test_*.py"]
else:
    # Tiny matmuls gain nothing from threads, and on a busy 2-core CI box OpenMP threads
    # spinning against each other made every step ~10x slower.
    torch.set_num_threads(1)

PRETRAIN_STEPS = 80


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a pre-trained tiny Llama and its tokenizer, as `from_pretrained` reads it."""
    from trainers.adapter_lm.model import model_from_config, tiny_config

    folder = tmp_path_factory.mktemp("tiny-llama")
    text = corpus()
    tokenizer = train_tokenizer(text)
    torch.manual_seed(0)
    model = model_from_config(tiny_config(vocab_size=len(tokenizer)))
    ids = torch.tensor(tokenizer(text[:200_000])["input_ids"])
    pretrain(model, ids, PRETRAIN_STEPS)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Instruction pairs (JSONL) plus a plain-text file, both cut from the pydoc topics."""
    from pydoc_data.topics import topics

    folder = tmp_path_factory.mktemp("data")
    pairs = folder / "pairs.jsonl"
    with pairs.open("w", encoding="utf-8") as handle:
        for key in sorted(topics):
            record = {"instruction": f"Explain the Python topic '{key}'.", "response": topics[key][:400]}
            handle.write(json.dumps(record) + "\n")
    plain = folder / "plain.txt"
    plain.write_text(corpus()[200_000:215_000], encoding="utf-8")
    return [str(pairs), str(plain)]


@pytest.fixture
def make_config(tiny_model_dir: Path, data_files: list[str]) -> Callable[..., Any]:
    """``make_config(**overrides)``: a small, fast AdapterLMConfig on the tiny model."""
    from trainers.adapter_lm.config import AdapterLMConfig

    def build(**overrides: Any) -> AdapterLMConfig:
        settings: dict[str, Any] = {
            "model": str(tiny_model_dir), "data_files": data_files, "seq_len": 64, "batch_size": 8,
            "eval_fraction": 0.1, "eval_max_batches": 2, "budget_unit": "steps", "max_budget": 12,
            "report_every": 4, "device": "cpu", "precision": "fp32",
        }
        settings.update(overrides)
        return AdapterLMConfig(**settings)

    return build


@pytest.fixture
def tiny_model(tiny_model_dir: Path) -> Any:
    """A fresh copy of the pre-trained tiny model (adapters are injected in place)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)

"""A tiny causal LM on disk for end-to-end tests of the ``adapter_lm`` trainer; nothing is downloaded.

The worker processes (Ray actors) load the base model from a local folder, so the model and
its tokenizer are built here, in the test process, and saved where they can read them. As in
tests/unit/adapter_lm: a byte-level BPE tokenizer (vocab 512) trained on ``pydoc_data.topics``
(it ships with Python; tests/support/tiny_lm.py) and a 2-layer Llama built from a config, pre-trained for a few steps
so that adapters have real weights to adapt; the data are instruction pairs and plain text
cut from the same topics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.support.tiny_lm import corpus, pretrain, train_tokenizer

PRETRAIN_STEPS = 30


def build_tiny_lm(folder: Path) -> tuple[Path, list[str]]:
    """Write ``folder/model`` (tiny Llama + tokenizer, as ``from_pretrained`` reads it) and two data
    files; returns the model folder and the data files, ready for ``trainer.params``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from trainers.adapter_lm.model import model_from_config, tiny_config

    torch.set_num_threads(1)
    text = corpus()
    tokenizer = train_tokenizer(text[:300_000])
    torch.manual_seed(0)
    model = model_from_config(tiny_config(vocab_size=len(tokenizer)))
    pretrain(model, torch.tensor(tokenizer(text[:100_000])["input_ids"]), PRETRAIN_STEPS)
    model_dir = folder / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    from pydoc_data.topics import topics

    pairs, plain = folder / "pairs.jsonl", folder / "plain.txt"
    with pairs.open("w", encoding="utf-8") as handle:
        for key in sorted(topics)[:120]:
            record = {"instruction": f"Explain the Python topic '{key}'.", "response": topics[key][:300]}
            handle.write(json.dumps(record) + "\n")
    plain.write_text(text[200_000:210_000], encoding="utf-8")
    return model_dir, [str(pairs), str(plain)]

"""A tiny causal LM on disk for end-to-end tests of the ``adapter_lm`` trainer; nothing is downloaded.

The worker processes (Ray actors) load the base model from a local folder, so the model and
its tokenizer are built here, in the test process, and saved where they can read them. As in
tests/unit/adapter_lm: a byte-level BPE tokenizer (vocab 512) trained on ``pydoc_data.topics``
(it ships with Python) and a 2-layer Llama built from a config, pre-trained for a few steps
so that adapters have real weights to adapt; the data are instruction pairs and plain text
cut from the same topics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

VOCAB_SIZE = 512
PRETRAIN_STEPS = 30


def _corpus() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def _tokenizer(text: str) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator([text], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


def build_tiny_lm(folder: Path) -> tuple[Path, list[str]]:
    """Write ``folder/model`` (tiny Llama + tokenizer, as ``from_pretrained`` reads it) and two data
    files; returns the model folder and the data files, ready for ``trainer.params``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from trainers.adapter_lm.model import model_from_config, tiny_config

    torch.set_num_threads(1)
    text = _corpus()
    tokenizer = _tokenizer(text[:300_000])
    torch.manual_seed(0)
    model = model_from_config(tiny_config(vocab_size=len(tokenizer)))
    ids = torch.tensor(tokenizer(text[:100_000])["input_ids"])
    rows = ids[: ids.numel() // 64 * 64].view(-1, 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(PRETRAIN_STEPS):
        batch = rows[torch.randint(0, rows.shape[0], (8,), generator=generator)]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
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

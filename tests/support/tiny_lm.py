"""The pieces of a tiny causal LM for tests, built here: nothing is downloaded.

A byte-level BPE tokenizer trained on the text of ``pydoc_data.topics`` (it ships with
Python) and a short pre-training loop, so that adapters have real weights to adapt. Used by
the adapter_lm unit fixtures (tests/unit/adapter_lm/conftest.py) and the end-to-end model on
disk (tests/e2e/tiny_lm.py). torch, tokenizers and transformers are imported on use: they are
the `train` extra.
"""

from __future__ import annotations

from typing import Any

VOCAB_SIZE = 512


def corpus() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def train_tokenizer(text: str) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator([text], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


def pretrain(model: Any, ids: Any, steps: int, seq_len: int = 64, batch: int = 8) -> None:
    """``steps`` of AdamW (lr 3e-3) on random rows of ``ids`` cut into ``seq_len`` tokens (seeded)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    usable = ids[: ids.numel() // seq_len * seq_len].view(-1, seq_len)
    for _ in range(steps):
        rows = usable[torch.randint(0, usable.shape[0], (batch,), generator=generator)]
        loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

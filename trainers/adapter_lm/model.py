"""Loading the base model and tokenizer; tiny and 1B-shaped Llama configs for tests and benchmarks.

A ``model`` that is an existing folder is loaded from it; anything else is a hub name. The
hub is only contacted when neither ``HF_HUB_OFFLINE`` nor ``TRANSFORMERS_OFFLINE`` is set:
with either, the name must already be in the local cache (``local_files_only``), so a worker
on an offline cluster fails fast with a clear message instead of hanging on the network.
``trust_remote_code`` is never enabled: a study's params must not run code on workers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from trainers.adapter_lm.config import AdapterLMConfig

_TRUE = frozenset({"1", "true", "yes", "on"})


class ModelLoadError(ValueError):
    """The base model or its tokenizer cannot be loaded (missing, offline, unsupported)."""


def offline() -> bool:
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _source(name: str) -> tuple[str, bool]:
    """``(what to pass to from_pretrained, local_files_only)``."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path), True
    return name, offline()


def select_device(config: AdapterLMConfig) -> torch.device:
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was asked for, but no CUDA device is available")
    if config.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def autocast_dtype(config: AdapterLMConfig, device: torch.device) -> torch.dtype | None:
    """bf16 when asked for, or on ``auto`` where the device computes bf16 natively; else None."""
    if config.precision == "bf16":
        return torch.bfloat16
    if config.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def load_tokenizer(config: AdapterLMConfig) -> Any:
    from transformers import AutoTokenizer

    name, local_only = _source(config.tokenizer or config.model)
    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=local_only, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"tokenizer {name!r}: {_hint(exc, local_only)}") from exc


def load_base_model(config: AdapterLMConfig, device: torch.device, weights_dtype: torch.dtype) -> Any:
    """The frozen base model on ``device``, in train mode, its weights in ``weights_dtype``."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # one bar per trial would drown the log
    name, local_only = _source(config.model)
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(
            name, local_files_only=local_only, trust_remote_code=False, dtype=weights_dtype,
            attn_implementation=config.attention,
        )
    except (OSError, ValueError, ImportError) as exc:
        raise ModelLoadError(f"model {name!r}: {_hint(exc, local_only)}") from exc
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if max_positions is not None and config.seq_len > max_positions:
        raise ModelLoadError(f"seq_len {config.seq_len} exceeds the model's {max_positions} positions")
    model.to(device)
    model.train()  # from_pretrained returns eval mode; adapter dropout needs train mode
    return model


def _hint(exc: Exception, local_only: bool) -> str:
    where = " (offline: it must be a local folder or already in the hub cache)" if local_only else ""
    return f"{exc}{where}"


def tiny_config(vocab_size: int = 512, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                intermediate: int = 128, max_positions: int = 512) -> Any:
    """A Llama-shaped config small enough to train in milliseconds per step on a CPU."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       max_position_embeddings=max_positions, tie_word_embeddings=False)


def llama_1b_config(max_positions: int = 2048) -> Any:
    """The benchmark's ~1.1B Llama shape (TinyLlama-like, with full multi-head attention)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=max_positions,
                       tie_word_embeddings=False)


def model_from_config(model_config: Any, attention: str = "sdpa", dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu") -> Any:
    """A randomly initialised causal LM from a config (tests and benchmarks; no download).

    Built directly on ``device``: initialising a 1B model on the CPU and copying it takes longer
    than the benchmark it is for.
    """
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        model: Any = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
            model_config, dtype=dtype, attn_implementation=attention
        )
    model.train()
    return model

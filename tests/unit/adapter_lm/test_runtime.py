"""The compute path: chunked loss equals the plain loss, eval leaves no trace, optimizer options."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from trainers.adapter_lm.adapters import build_adapter, parse_adapter_params
from trainers.adapter_lm.data import IGNORE_INDEX
from trainers.adapter_lm.runtime import LossComputer, chunked_cross_entropy, evaluate, make_optimizer


def test_chunked_cross_entropy_equals_the_full_one_in_value_and_gradient() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(30, 8, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 30, (50,))
    labels[::7] = IGNORE_INDEX
    chunked = chunked_cross_entropy(hidden, weight, labels, chunk=16)
    full = F.cross_entropy(hidden @ weight.t(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    assert torch.allclose(chunked, full)
    chunked_grads = torch.autograd.grad(chunked, (hidden, weight))
    full_grads = torch.autograd.grad(full, (hidden, weight))
    assert all(torch.allclose(a, b) for a, b in zip(chunked_grads, full_grads, strict=True))


def test_loss_computer_chunked_and_plain_paths_agree(tiny_model: Any, make_config: Callable[..., Any]) -> None:
    ids = torch.randint(0, 512, (3, 20), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :5] = IGNORE_INDEX
    cpu = torch.device("cpu")
    chunked = LossComputer(tiny_model, make_config(chunked_loss=True), cpu, None)
    plain = LossComputer(tiny_model, make_config(chunked_loss=False), cpu, None)
    assert chunked.chunked and not plain.chunked
    assert torch.allclose(chunked(ids, labels), plain(ids, labels), rtol=1e-5)


def test_evaluate_restores_train_mode_and_uses_no_randomness(tiny_model: Any, make_config: Callable[..., Any]) -> None:
    from trainers.adapter_lm.data import load_data
    from trainers.adapter_lm.model import load_tokenizer

    config = make_config()
    adapter = build_adapter("lora", tiny_model, parse_adapter_params("lora", {"dropout": 0.5}), total_steps=10)
    data = load_data(config, load_tokenizer(config))
    loss = LossComputer(adapter.model, config, torch.device("cpu"), None)
    adapter.model.train()
    state = torch.get_rng_state()
    first = evaluate(adapter.model, loss, data, 4, 2)
    assert adapter.model.training and torch.equal(state, torch.get_rng_state())
    assert first == evaluate(adapter.model, loss, data, 4, 2)


def test_optimizer_is_plain_adamw_on_cpu_with_base_lr_per_group(
    tiny_model: Any, make_config: Callable[..., Any]
) -> None:
    adapter = build_adapter("dora", tiny_model, parse_adapter_params("dora", {}), total_steps=10)
    optimizer = make_optimizer(adapter, 1e-3, 0.1, make_config(), torch.device("cpu"))
    assert not optimizer.defaults["fused"]
    assert [(g["base_lr"], g["weight_decay"]) for g in optimizer.param_groups] == [(1e-3, 0.1), (1e-3, 0.0)]


def test_gradient_checkpointing_changes_memory_not_numbers(tmp_path: Any, make_config: Callable[..., Any]) -> None:
    from tests.unit.adapter_lm.helpers import KIND_PARAMS, run_slice

    plain = run_slice(tmp_path, make_config(max_budget=2, report_every=2), KIND_PARAMS["lora"], 0, 2)[0]
    checkpointed = run_slice(tmp_path, make_config(max_budget=2, report_every=2, gradient_checkpointing=True),
                             KIND_PARAMS["lora"], 0, 2)[0]
    assert checkpointed.metrics["train_loss"] == pytest.approx(plain.metrics["train_loss"], rel=1e-5)
    assert checkpointed.metrics["eval_loss"] == pytest.approx(plain.metrics["eval_loss"], rel=1e-5)

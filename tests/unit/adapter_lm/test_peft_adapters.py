"""PEFT adapters: params -> PEFT config, LoRA+ groups, the LoKr fast path, AdaLoRA state."""

from __future__ import annotations

from typing import Any

import peft
import pytest
import torch

from trainers.adapter_lm.adapters import build_adapter, parse_adapter_params
from trainers.adapter_lm.adapters.peft_adapters import enable_fast_lokr, peft_config

TARGETS = ["q_proj", "v_proj"]


@pytest.mark.parametrize(
    ("kind", "raw", "config_type", "fields"),
    [
        ("lora", {"rank": 4, "alpha": 8, "use_rslora": True}, peft.LoraConfig,
         {"r": 4, "lora_alpha": 8, "use_rslora": True, "use_dora": False}),
        ("dora", {"rank": 4}, peft.LoraConfig, {"r": 4, "use_dora": True}),
        ("lokr", {"rank": 2, "decompose_both": True}, peft.LoKrConfig, {"r": 2, "decompose_both": True}),
        ("loha", {"rank": 2, "module_dropout": 0.1}, peft.LoHaConfig, {"r": 2, "module_dropout": 0.1}),
        ("adalora", {"init_rank": 6, "target_rank": 2, "tinit_ratio": 0.1, "tfinal_ratio": 0.2},
         peft.AdaLoraConfig, {"init_r": 6, "target_r": 2, "tinit": 10, "tfinal": 20, "total_step": 100}),
        ("vera", {"rank": 16, "d_initial": 0.2}, peft.VeraConfig, {"r": 16, "d_initial": 0.2, "save_projection": True}),
        ("randlora", {"rank": 8, "alpha": 100}, peft.RandLoraConfig, {"r": 8, "randlora_alpha": 100}),
        ("oft", {"block_size": 16, "coft": True}, peft.OFTConfig, {"oft_block_size": 16, "coft": True, "r": 0}),
    ],
)
def test_params_map_onto_peft_configs(
    kind: str, raw: dict[str, Any], config_type: type, fields: dict[str, Any]
) -> None:
    config = peft_config(kind, parse_adapter_params(kind, raw), TARGETS, total_steps=100)
    assert isinstance(config, config_type)
    assert {k: getattr(config, k) for k in fields} == fields


def test_unknown_params_are_refused() -> None:
    with pytest.raises(ValueError, match="lora_rank"):
        parse_adapter_params("lora", {"lora_rank": 8})


@pytest.mark.parametrize("total_steps", [1, 2, 3, 10])
def test_adalora_schedule_fits_any_number_of_steps(total_steps: int) -> None:
    raw = {"tinit_ratio": 0.5, "tfinal_ratio": 0.49}
    config = peft_config("adalora", parse_adapter_params("adalora", raw), TARGETS, total_steps)
    assert config.total_step - config.tinit - config.tfinal >= 1  # PEFT's budgeting phase
    with pytest.raises(ValueError, match="tinit_ratio"):
        parse_adapter_params("adalora", {"tinit_ratio": 0.5, "tfinal_ratio": 0.5})


def test_loraplus_gives_b_matrices_a_larger_learning_rate(tiny_model: Any) -> None:
    params = parse_adapter_params("dora", {"rank": 4, "loraplus_lr_ratio": 16, "target_modules": "qv"})
    adapter = build_adapter("dora", tiny_model, params, total_steps=10)
    groups = adapter.optimizer_groups(1e-3, 0.01)
    names = {id(p): n for n, p in adapter.trainable_parameters()}
    by_lr = {(round(g["base_lr"], 9), g["weight_decay"]): {names[id(p)].split(".")[-3] for p in g["params"]}
             for g in groups}
    assert by_lr[(1.6e-2, 0.01)] == {"lora_B"}
    assert by_lr[(1e-3, 0.01)] == {"lora_A"}
    assert by_lr[(1e-3, 0.0)] == {"lora_magnitude_vector"}  # vectors: no weight decay


@pytest.mark.parametrize("raw", [{"rank": 2}, {"rank": 2, "decompose_both": True}, {"rank": 64}])
def test_fast_lokr_forward_equals_peft_forward(tiny_model: Any, raw: dict[str, Any]) -> None:
    adapter = build_adapter("lokr", tiny_model, parse_adapter_params("lokr", raw), total_steps=10)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in adapter.model.named_parameters():
            if "lokr_" in name:
                param.normal_(std=0.1)  # PEFT zero-initialises one factor; make the update visible
    ids = torch.randint(0, 512, (2, 16))
    fast = adapter.model(input_ids=ids).logits
    for module in adapter.model.modules():
        if isinstance(module, peft.tuners.lokr.layer.Linear):
            del module._get_delta_activations  # back to PEFT's class method
    reference = adapter.model(input_ids=ids).logits
    assert torch.allclose(fast, reference, atol=1e-5)
    assert enable_fast_lokr(adapter.model) == 14


def test_autocast_runs_skip_pefts_input_cast(tiny_model: Any) -> None:
    adapter = build_adapter("lora", tiny_model, parse_adapter_params("lora", {}), total_steps=10, autocast=True)
    layers = [m for m in adapter.model.modules() if isinstance(m, peft.tuners.tuners_utils.BaseTunerLayer)]
    assert layers and not any(m.cast_input_dtype_enabled for m in layers)


def test_adalora_allocator_state_round_trips(tiny_model: Any) -> None:
    params = parse_adapter_params("adalora", {"init_rank": 4, "target_rank": 2, "target_modules": "qv"})
    adapter = build_adapter("adalora", tiny_model, params, total_steps=20)
    ids = torch.randint(0, 512, (2, 16))
    adapter.model(input_ids=ids).logits.sum().backward()
    adapter.after_optimizer_step(5)
    tensors, meta = adapter.extra_state()
    assert tensors and all("::" in key for key in tensors)
    allocator = adapter.model.base_model.rankallocator
    allocator.reset_ipt()
    adapter.load_extra_state(tensors, {"rank_pattern": {"x": [True, False]}})
    assert set(allocator.exp_avg_ipt) and adapter.model.peft_config["default"].rank_pattern == {"x": [True, False]}
    penalty = adapter.regularization(0)
    assert penalty is not None and float(penalty.detach()) > 0

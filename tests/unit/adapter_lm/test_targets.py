"""Target-module presets on a Llama-shaped model."""

from __future__ import annotations

from typing import Any

import pytest

from trainers.adapter_lm.adapters.targets import resolve_targets

LAYER = "model.layers.{}.{}"
ATTN = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
MLP = ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def _names(parts: list[str]) -> list[str]:
    return sorted(LAYER.format(i, p) for i in range(2) for p in parts)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("all_linear", _names(ATTN + MLP)),
        ("attn", _names(ATTN)),
        ("mlp", _names(MLP)),
        ("qv", _names(["self_attn.q_proj", "self_attn.v_proj"])),
        ("q_proj,down_proj", _names(["self_attn.q_proj", "mlp.down_proj"])),
        (["attn", "mlp"], _names(ATTN + MLP)),
        ("model.layers.1.mlp.up_proj", ["model.layers.1.mlp.up_proj"]),
    ],
)
def test_presets_and_names(tiny_model: Any, spec: str | list[str], expected: list[str]) -> None:
    assert resolve_targets(tiny_model, spec) == expected


def test_the_output_head_is_never_a_target(tiny_model: Any) -> None:
    assert "lm_head" not in resolve_targets(tiny_model, "all_linear")
    with pytest.raises(ValueError, match="matches no linear layer"):
        resolve_targets(tiny_model, "lm_head")

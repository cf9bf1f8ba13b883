"""Which linear layers an adapter wraps: named presets or explicit names.

Presets work on any decoder whose module paths follow the usual conventions (Llama, Mistral,
Qwen, GPT-2, ...), so a search space can say ``target_modules: [attn, all_linear]`` without
knowing the architecture:

- ``all_linear``: every linear layer except the output head (the head is vocab x hidden:
  adapting it is costly and rarely helps; PEFT's ``all-linear`` excludes it too);
- ``attn``: linear layers inside an attention block (a path part containing ``attn`` or
  ``attention``);
- ``mlp``: linear layers inside the feed-forward block (``mlp``, ``feed_forward``, ``ffn``);
- ``qv``: the query and value projections only (the original LoRA paper's choice).

Anything else is a comma-separated list of module-name suffixes, matched like PEFT does
(``q_proj`` matches ``model.layers.0.self_attn.q_proj``).
"""

from __future__ import annotations

from torch import nn

PRESETS = ("all_linear", "attn", "mlp", "qv")
_QV_NAMES = frozenset({"q_proj", "v_proj", "query", "value", "wq", "wv"})
_MLP_PARTS = ("mlp", "feed_forward", "ffn")


def _is_linear(module: nn.Module, allow_conv1d: bool) -> bool:
    if isinstance(module, nn.Linear):
        return True
    # GPT-2's Conv1D is a transposed linear layer; PEFT adapts it, our own adapters do not.
    return allow_conv1d and type(module).__name__ == "Conv1D"


def _in_block(name: str, needles: tuple[str, ...]) -> bool:
    return any(needle in part for part in name.split(".")[:-1] for needle in needles)


def resolve_targets(model: nn.Module, spec: str | list[str], *, allow_conv1d: bool = True) -> list[str]:
    """Full names of the layers to adapt, sorted; ValueError if none match."""
    names = [spec] if isinstance(spec, str) else list(spec)
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    linear = {
        name: module
        for name, module in model.named_modules()
        if name and _is_linear(module, allow_conv1d) and module is not head
    }
    chosen: set[str] = set()
    for item in names:
        for part in (p.strip() for p in item.split(",")):
            chosen.update(_match(part, linear))
    if not chosen:
        raise ValueError(f"target_modules {spec!r} matches no linear layer of this model")
    return sorted(chosen)


def _match(part: str, linear: dict[str, nn.Module]) -> set[str]:
    if part == "all_linear":
        return set(linear)
    if part == "attn":
        return {n for n in linear if _in_block(n, ("attn", "attention"))}
    if part == "mlp":
        return {n for n in linear if _in_block(n, _MLP_PARTS)}
    if part == "qv":
        return {n for n in linear if n.rsplit(".", 1)[-1] in _QV_NAMES}
    return {n for n in linear if n == part or n.endswith("." + part)}

"""Trainer throughput: plain PEFT (eager, AdamW, as a user writes it) vs this project's trainer.

On a Llama-shaped ~1.1B model built from a config (hidden 2048, 16 layers, intermediate
5632, 32 heads, vocab 32000; random weights: throughput does not depend on their values),
batch 16 x 1024 tokens, bf16, adapters on all linear layers. For each method it times

(a) plain PEFT: ``from_config(dtype=bfloat16)`` + ``get_peft_model`` + ``torch.optim.AdamW``
    and ``model(input_ids, labels=input_ids).loss.backward()``, no compile;
(b) ours: the trainer's own hot loop (``trainers.adapter_lm.runtime.StepRunner``) with the
    config a study would use on a GPU: bf16 base weights + fp32 adapters under bf16
    autocast, ``torch.compile`` of the backbone, fused AdamW, chunked cross-entropy, SDPA,
    and our forwards where PEFT's are slow (LoKr without the full-size update).

and prints tokens/s and peak memory for both and the ratio. KronA is not in PEFT; its
plain-PEFT baseline is the same update written as a PEFT LoKr with full (not low-rank)
factors of the same shapes, which is what a PEFT user would reach for.

Goals (issue 3): ours >= 1.6x plain PEFT for LoRA; DoRA and LoKr (ours) at least as fast as
plain-PEFT LoRA; peak memory equal or lower. Reference (one H200, plain PEFT eager): about
54k tokens/s for LoRA r=16, 30k for DoRA, 37k for LoKr.

Usage (from the repository root):

    .venv/bin/python bench/trainer_throughput.py                    # CUDA; skips without one
    .venv/bin/python bench/trainer_throughput.py --methods lora,dora --steps 20
    .venv/bin/python bench/trainer_throughput.py --device cpu --tiny # the code path, in seconds
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `trainers` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

METHODS = ("lora", "dora", "lokr", "krona")
GOAL_LORA_RATIO = 1.6


@dataclass(frozen=True)
class Shape:
    batch: int
    seq_len: int
    rank: int
    kron_factor: int  # a1 = a2 of KronA / the LoKr factor


@dataclass(frozen=True)
class Measurement:
    tokens_per_s: float
    peak_memory_mb: float | None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny model and batch: exercise the code path")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default 20, tiny 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5, tiny 1)")
    parser.add_argument("--no-compile", action="store_true", help="ours without torch.compile")
    args = parser.parse_args(argv)
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    return args


def _model_config(tiny: bool) -> Any:
    from trainers.adapter_lm.model import llama_1b_config, tiny_config

    return tiny_config(vocab_size=512, max_positions=128) if tiny else llama_1b_config(max_positions=1024)


def _peft_config(method: str, shape: Shape) -> Any:
    import peft

    common: dict[str, Any] = {"target_modules": "all-linear", "task_type": "CAUSAL_LM"}
    if method in ("lora", "dora"):
        return peft.LoraConfig(r=shape.rank, lora_alpha=2 * shape.rank, use_dora=method == "dora", **common)
    if method == "lokr":
        return peft.LoKrConfig(r=shape.rank, alpha=shape.rank, **common)
    # KronA as PEFT LoKr: full factors (r >= half the factor size) with KronA's shapes.
    return peft.LoKrConfig(r=10_000, alpha=1, decompose_factor=shape.kron_factor, **common)


def _our_params(method: str, shape: Shape) -> dict[str, Any]:
    if method in ("lora", "dora"):
        return {"rank": shape.rank, "alpha": 2 * shape.rank}
    if method == "lokr":
        return {"rank": shape.rank, "alpha": float(shape.rank)}
    return {"a_out": shape.kron_factor, "a_in": shape.kron_factor}


def _batch(shape: Shape, vocab: int, step: int) -> Any:
    import torch

    ids = torch.randint(0, vocab, (shape.batch, shape.seq_len), generator=torch.Generator().manual_seed(step))
    return ids, ids.clone()


def _time(run_step: Callable[[int], None], device: Any, shape: Shape, steps: int, warmup: int) -> Measurement:
    import torch

    for step in range(warmup):
        run_step(step)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for step in range(warmup, warmup + steps):
        run_step(step)
    if cuda:
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    return Measurement(steps * shape.batch * shape.seq_len / elapsed, peak)


def run_plain_peft(method: str, shape: Shape, args: argparse.Namespace, device: Any) -> Measurement:
    import peft
    import torch

    from trainers.adapter_lm.adapters.peft_adapters import quiet_peft
    from trainers.adapter_lm.model import model_from_config

    config = _model_config(args.tiny)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with quiet_peft():
        model = peft.get_peft_model(model_from_config(config, "sdpa", dtype, device), _peft_config(method, shape))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(index: int) -> None:
        ids, labels = _batch(shape, config.vocab_size, index)
        loss = model(input_ids=ids.to(device), labels=labels.to(device)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return _time(step, device, shape, args.steps, args.warmup)  # the caller releases the memory


def run_ours(method: str, shape: Shape, args: argparse.Namespace, device: Any) -> Measurement:
    import torch

    from trainers.adapter_lm.adapters import build_adapter, parse_adapter_params
    from trainers.adapter_lm.config import AdapterLMConfig
    from trainers.adapter_lm.model import model_from_config
    from trainers.adapter_lm.runtime import LossComputer, StepRunner, make_optimizer

    cuda = device.type == "cuda"
    settings = AdapterLMConfig.model_validate(dict(
        model="(built from a config)", data_files=["(random tokens).jsonl"], seq_len=shape.seq_len,
        batch_size=shape.batch, max_budget=1, adapter=method, precision="bf16" if cuda else "fp32",
        compile=cuda and not args.no_compile, fused_optimizer=cuda, chunked_loss=True, attention="sdpa",
        device=device.type, max_grad_norm=None,  # the baseline does not clip either
    ))
    autocast = torch.bfloat16 if cuda else None
    config = _model_config(args.tiny)
    torch.manual_seed(0)
    base = model_from_config(config, "sdpa", autocast or torch.float32, device)
    params = parse_adapter_params(method, {**_our_params(method, shape), "target_modules": "all_linear"})
    adapter = build_adapter(method, base, params, total_steps=1000, autocast=autocast is not None)
    optimizer = make_optimizer(adapter, 1e-4, 0.0, settings, device)
    runner = StepRunner(adapter, LossComputer(adapter.model, settings, device, autocast), optimizer, None)

    def step(index: int) -> None:
        runner.step(index, 1.0, [_batch(shape, config.vocab_size, index)])

    return _time(step, device, shape, args.steps, args.warmup)  # the caller releases the memory


def _release(device: Any) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()  # compiled graphs of one method must not count against the next


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def report(results: dict[str, tuple[Measurement, Measurement]]) -> list[str]:
    lines = [f"{'method':<8} {'plain PEFT tok/s':>17} {'ours tok/s':>11} {'ratio':>6} "
             f"{'plain peak MB':>14} {'ours peak MB':>13}"]
    for method, (plain, ours) in results.items():
        lines.append(f"{method:<8} {plain.tokens_per_s:>17,.0f} {ours.tokens_per_s:>11,.0f} "
                     f"{ours.tokens_per_s / plain.tokens_per_s:>5.2f}x {_mb(plain.peak_memory_mb):>14} "
                     f"{_mb(ours.peak_memory_mb):>13}")
    lines += goals(results)
    return lines


def goals(results: dict[str, tuple[Measurement, Measurement]]) -> list[str]:
    out = []
    if "lora" in results:
        plain_lora, ours_lora = results["lora"]
        ratio = ours_lora.tokens_per_s / plain_lora.tokens_per_s
        verdict = "met" if ratio >= GOAL_LORA_RATIO else "MISSED"
        out.append(f"goal lora >= {GOAL_LORA_RATIO}x plain PEFT: {ratio:.2f}x {verdict}")
        for method in ("dora", "lokr"):
            if method in results:
                rate = results[method][1].tokens_per_s
                verdict = "met" if rate >= plain_lora.tokens_per_s else "MISSED"
                out.append(f"goal {method} (ours) >= plain-PEFT lora: {rate:,.0f} vs {plain_lora.tokens_per_s:,.0f} "
                           f"{verdict}")
    for method, (plain, ours) in results.items():
        if plain.peak_memory_mb is not None and ours.peak_memory_mb is not None:
            verdict = "met" if ours.peak_memory_mb <= plain.peak_memory_mb else "MISSED"
            out.append(f"goal {method} peak memory <= plain PEFT: {verdict}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA device (use --device cpu --tiny to exercise the code path)")
        return 0
    device = torch.device(args.device)
    args.steps = args.steps or (2 if args.tiny else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 5)
    shape = Shape(batch=4, seq_len=64, rank=4, kron_factor=8) if args.tiny else Shape(16, 1024, 16, 32)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}; {'tiny' if args.tiny else '~1.1B Llama'}; batch {shape.batch} x {shape.seq_len}; "
          f"{args.warmup} warm-up + {args.steps} timed steps per run")
    results: dict[str, tuple[Measurement, Measurement]] = {}
    for method in args.methods.split(","):
        plain = run_plain_peft(method, shape, args, device)
        _release(device)
        ours = run_ours(method, shape, args, device)
        _release(device)
        results[method] = (plain, ours)
        print(f"  {method}: plain {plain.tokens_per_s:,.0f} tok/s, ours {ours.tokens_per_s:,.0f} tok/s", flush=True)
    lines = report(results)
    if args.tiny or device.type != "cuda":
        lines = [line for line in lines if not line.startswith("goal")]
        lines.append("(tiny/CPU run: exercises the code path; the goals are judged on CUDA at full size only)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

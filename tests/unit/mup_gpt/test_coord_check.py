"""The coordinate check of Tensor Programs V: what tells a broken muP from a working one.

Train each width for a few Adam steps at one learning rate, then measure every activation's
mean |coordinate| (embedding, each block's attention and MLP output, the logits) on fixed
held-out windows. Fit log2(scale) against log2(width) over widths 32..256 (three doublings)
and read off the fitted growth from 32 to 256.

- muP keeps every activation Theta(1) in width, after any fixed number of steps: the fitted
  growth of every tap must stay within [1/2, 2].
- SP's Adam updates move each coordinate by ~lr, and a layer sums fan_in of them coherently,
  so after a step the block outputs grow like the width (8x over three doublings) or faster
  (updates compound over steps); the logits grow too, sub-linearly in a run this short. The
  fitted growth of every block output must exceed 8, that of the logits 2.5.

Why these thresholds are safe: the runs are deterministic (fixed seeds, float32 on the CPU),
so the test cannot fail at random; what could move the numbers is a change of torch kernels
or of the corpus. Measured with torch 2.13 on CPython 3.11's stdlib, averaged over the two
seeds used here, the worst muP tap grows 0.73x (block 0's attention: two heads at width 32),
the other muP taps 0.89x-0.98x, while SP's block outputs grow 52x-63x and its logits 4.7x:
every value sits more than a factor 1.4 inside its threshold, and the theory predicts 1x and
>= 8x. A muP with one rule removed fails: without the 1/m hidden LR the block outputs grow
9x-32x, without the 1/m readout multiplier the logits grow 6.4x (tests below).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

import trainers.mup_gpt.model as model_module
import trainers.mup_gpt.parametrization as parametrization_module
from trainers.mup_gpt.config import TrialParams
from trainers.mup_gpt.model import activation_scales
from trainers.mup_gpt.parametrization import Parametrization, Rule, Shape
from trainers.mup_gpt.training import TrainingRun

WIDTHS = (32, 64, 128, 256)
STEPS = 3
LEARNING_RATE = 0.01
SEEDS = (0, 1)
MUP_BAND = (0.5, 2.0)
SP_BLOCK_GROWTH = 8.0
SP_LOGIT_GROWTH = 2.5


def fitted_growth(scales: list[float], widths: tuple[int, ...] = WIDTHS) -> float:
    """exp of the least-squares slope of log(scale) on log2(width), over the span of ``widths``."""
    xs = [math.log2(width) for width in widths]
    ys = [math.log(scale) for scale in scales]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    return math.exp(slope * (xs[-1] - xs[0]))


def growth_by_tap(make_config: Callable[..., Any], parametrization: Parametrization,
                  widths: tuple[int, ...] = WIDTHS, seeds: tuple[int, ...] = SEEDS) -> dict[str, float]:
    config = make_config(parametrization=parametrization, lr_schedule="constant")
    by_width: list[dict[str, float]] = []
    for width in widths:
        totals: dict[str, float] = {}
        for seed in seeds:
            run = TrainingRun(config, TrialParams(learning_rate=LEARNING_RATE, width=width), seed=seed)
            for _ in range(STEPS):
                run.train_step()
            for tap, scale in activation_scales(run.model, run.eval_batches[0]).items():
                totals[tap] = totals.get(tap, 0.0) + scale / len(seeds)
        by_width.append(totals)
    return {tap: fitted_growth([scales[tap] for scales in by_width], widths) for tap in by_width[0]}


def block_taps(growth: dict[str, float]) -> dict[str, float]:
    return {tap: value for tap, value in growth.items() if tap.startswith("block")}


def test_fitted_growth() -> None:
    assert fitted_growth([1.0, 2.0, 4.0, 8.0]) == pytest.approx(8.0)
    assert fitted_growth([3.0, 3.0, 3.0, 3.0]) == pytest.approx(1.0)
    assert fitted_growth([1.0, 0.5], (32, 256)) == pytest.approx(0.5)


def test_mup_activations_stay_flat_and_sp_activations_grow(make_config: Callable[..., Any]) -> None:
    mup = growth_by_tap(make_config, "mup")
    sp = growth_by_tap(make_config, "sp")
    low, high = MUP_BAND
    assert all(low <= value <= high for value in mup.values()), f"muP is not flat in width: {mup}"
    assert all(value > SP_BLOCK_GROWTH for value in block_taps(sp).values()), f"SP did not grow: {sp}"
    assert sp["logits"] > SP_LOGIT_GROWTH, f"SP logits did not grow: {sp}"
    assert set(mup) == {"embedding", "block0.attn", "block0.mlp", "block1.attn", "block1.mlp", "logits"}


def _without_hidden_lr_scaling(original: Callable[..., Rule]) -> Callable[..., Rule]:
    def rule_for(role: str, parametrization: Parametrization, shape: Shape, **kwargs: float) -> Rule:
        rule = original(role, parametrization, shape, **kwargs)
        if role in ("hidden", "query"):
            return Rule(rule.init_std, kwargs["learning_rate"], rule.weight_decay)
        return rule

    return rule_for


def test_the_check_catches_a_muP_without_the_hidden_learning_rate_rule(
    make_config: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parametrization_module, "rule_for",
                        _without_hidden_lr_scaling(parametrization_module.rule_for))
    growth = growth_by_tap(make_config, "mup", widths=(32, 256), seeds=(0,))
    assert max(block_taps(growth).values()) > MUP_BAND[1], growth


def test_the_check_catches_a_muP_without_the_readout_multiplier(
    make_config: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_module, "output_scale", lambda parametrization, shape, multiplier: multiplier)
    growth = growth_by_tap(make_config, "mup", widths=(32, 256), seeds=(0,))
    assert growth["logits"] > MUP_BAND[1], growth

"""bench/mup_transfer.py: its analysis from tables, and a clean skip without CUDA."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.mup_transfer import (
    PROFILES,
    best_log2_lr,
    cost_ratio,
    parse_args,
    training_flops,
    transfer_gap,
)

NAN, INF = math.nan, math.inf
ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("losses", "expected"),
    [
        ({-8: 2.0, -7: 1.5, -6: 1.7}, -7),
        ({-8: 2.0, -7: NAN, -6: 1.9}, -6),  # a diverged run is never the best
        ({-8: 1.5, -7: 1.5}, -8),  # ties go to the smaller learning rate
        ({-8: NAN, -7: INF}, None),
    ],
)
def test_best_log2_lr(losses: dict[int, float], expected: int | None) -> None:
    assert best_log2_lr(losses) == expected


@pytest.mark.parametrize(
    ("proxy", "target", "picked", "steps", "lost"),
    [
        ({-8: 2.0, -7: 1.0}, {-8: 3.0, -7: 2.0}, -7, 0.0, 0.0),  # transfers exactly
        ({-8: 2.0, -7: 1.0}, {-8: 2.0, -7: 2.5}, -7, 1.0, 0.5),  # one grid step off
        ({-6: 1.0, -8: 2.0}, {-6: NAN, -8: 2.0}, -6, 2.0, INF),  # the picked LR diverges at the target
        ({-6: NAN}, {-6: 1.0}, None, INF, INF),
    ],
)
def test_transfer_gap(proxy: dict[int, float], target: dict[int, float], picked: int | None, steps: float,
                      lost: float) -> None:
    assert transfer_gap(proxy, target) == (picked, steps, pytest.approx(lost))


def test_cost_of_the_default_profiles_is_within_the_goal() -> None:
    """A full sweep at both proxies costs under 10% of a sweep at the target, in both profiles."""
    for profile in PROFILES.values():
        def flops(width: int) -> float:
            return training_flops(width, profile.depth, 4, profile.seq_len, 256, tokens=1.0)

        assert cost_ratio(sum(flops(w) for w in profile.proxies), flops(profile.target)) < 0.10


def test_training_flops_table() -> None:
    # depth 1, width 8, mlp 4, seq 4, vocab 2, one token: 6 * (12 * 64 + 16) + 6 * 1 * 4 * 8
    assert training_flops(8, 1, 4, 4, 2, tokens=1.0) == 6 * (12 * 64 + 16) + 192


def test_the_full_benchmark_refuses_the_cpu() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--device", "cpu"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip without a CUDA device")
def test_skips_cleanly_without_cuda() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "mup_transfer.py")], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "skipped: no CUDA device"

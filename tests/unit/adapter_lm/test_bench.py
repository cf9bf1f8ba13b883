"""bench/trainer_throughput.py: skips cleanly without CUDA; its CPU path runs."""

from __future__ import annotations

import pytest
import torch

from bench import trainer_throughput


def test_without_cuda_it_skips_with_a_clear_line(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trainer_throughput.main([]) == 0
    assert capsys.readouterr().out.startswith("skipped: no CUDA device")


def test_tiny_cpu_run_exercises_both_sides(capsys: pytest.CaptureFixture[str]) -> None:
    assert trainer_throughput.main(["--device", "cpu", "--tiny", "--methods", "lora,krona", "--steps", "1",
                                    "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "plain PEFT tok/s" in out and "\nlora " in out and "\nkrona " in out
    assert not any(line.startswith("goal ") for line in out.splitlines())  # goals need CUDA at full size

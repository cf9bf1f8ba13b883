"""Fixtures of the mup_gpt tests: small configs over a small stdlib corpus cached once per session.

Nothing is downloaded: the corpus is the standard library's own sources. Everything runs on
the CPU in float32 with one intra-op thread (restored afterwards): small models gain nothing
from more, and results must not depend on how busy the machine is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

try:
    import safetensors  # noqa: F401
    import torch
except ImportError:  # torch / safetensors are not installed: these tests cannot run
    collect_ignore_glob = ["test_*.py"]

from hpo_service.workers.trainer import Directive

CORPUS_BYTES = 600_000


@dataclass
class FakeReporter:
    """Records every call; answers "stop" once a report reaches ``stop_at``."""

    stop_at: float | None = None
    reports: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    def report(self, step: float, metrics: dict[str, float]) -> Directive:
        self.reports.append((step, metrics))
        return "stop" if self.stop_at is not None and step >= self.stop_at else "continue"

    def log(self, message: str) -> None:
        self.logs.append(message)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mup-gpt-cache")


@pytest.fixture
def make_config(corpus_cache: Path) -> Callable[..., Any]:
    """``make_config(**overrides)``: a small, fast MupGptConfig on the CPU."""
    from trainers.mup_gpt.config import MupGptConfig

    def build(**overrides: Any) -> MupGptConfig:
        settings: dict[str, Any] = {
            "width": 32, "base_width": 32, "depth": 2, "head_dim": 16, "seq_len": 32, "batch_size": 8,
            "steps_per_unit": 3, "max_budget": 4, "report_every": 1, "eval_batches": 2,
            "corpus_max_bytes": CORPUS_BYTES, "cache_dir": str(corpus_cache), "device": "cpu", "dtype": "float32",
        }
        settings.update(overrides)
        return MupGptConfig(**settings)

    return build

"""Shared helpers of the adapter_lm tests: a recording reporter and a one-call slice runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo_service.workers.trainer import Directive, TrainRequest, TrainResult
from trainers.adapter_lm import TRAINER

# Per kind: params that train the tiny model visibly in a dozen steps.
KIND_PARAMS: dict[str, dict[str, Any]] = {
    "lora": {"learning_rate": 1e-2, "rank": 4, "alpha": 8},
    "dora": {"learning_rate": 1e-2, "rank": 4, "alpha": 8},
    "lokr": {"learning_rate": 1e-2, "rank": 4, "alpha": 4},
    "loha": {"learning_rate": 1e-2, "rank": 4, "alpha": 4},
    "adalora": {"learning_rate": 1e-2, "init_rank": 6, "target_rank": 4},
    "vera": {"learning_rate": 3e-2, "rank": 32},
    "randlora": {"learning_rate": 1e-2, "rank": 8},
    "oft": {"learning_rate": 1e-2, "block_size": 16},
    "krona": {"learning_rate": 1e-2, "a_out": 8, "a_in": 8},
    "dynamic_rank": {"learning_rate": 1e-2, "rank": 6, "target_rank": 4, "prune_interval": 2},
    "ether": {"learning_rate": 1e-2, "n_blocks": 4, "plus": True, "two_sided": True},
}


@dataclass
class Recorder:
    """Records reports and logs; answers "stop" once a report reaches ``stop_at``."""

    stop_at: float | None = None
    reports: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    def report(self, step: float, metrics: dict[str, float]) -> Directive:
        self.reports.append((step, dict(metrics)))
        return "stop" if self.stop_at is not None and step >= self.stop_at else "continue"

    def log(self, message: str) -> None:
        self.logs.append(message)

    def series(self, *names: str) -> list[tuple[float, ...]]:
        return [(step, *(metrics[n] for n in names)) for step, metrics in self.reports]


def run_slice(tmp_path: Path, config: Any, params: dict[str, Any], budget_from: float, budget_to: float,
              checkpoint_in: Path | None = None, *, seed: int = 7, recorder: Recorder | None = None,
              extra: dict[str, Any] | None = None) -> tuple[TrainResult, Recorder, Path]:
    out = tmp_path / f"ckpt-{budget_from:g}-{budget_to:g}-{seed}-{len(list(tmp_path.iterdir()))}"
    out.mkdir(parents=True)
    recorder = recorder or Recorder()
    request = TrainRequest(trial_id=3, params=params, config=config, budget_from=budget_from, budget_to=budget_to,
                           checkpoint_in=checkpoint_in, checkpoint_out=out, seed=seed, extra=extra or {})
    return TRAINER.train(request, recorder), recorder, out

"""Study specs shared by tests that need one in particular shape."""

from __future__ import annotations

from typing import Any


def one_trial_spec(name: str, *, lease_seconds: float, max_attempts: int) -> dict[str, Any]:
    """One trial of the synthetic trainer, 1 -> 3 at full budget (random scheduler): a study for
    tests of the lease protocol around a single trial."""
    return {
        "name": name,
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": {"x": {"type": "float", "low": 0, "high": 1}},
        "scheduler": {"kind": "random", "min_budget": 1, "max_budget": 3, "eta": 3},
        "sampler": {"kind": "random", "seed": 1},
        "trainer": {"name": "synthetic", "params": {}},
        "limits": {"max_trials": 1},
        "retry": {"lease_seconds": lease_seconds, "max_attempts": max_attempts},
    }

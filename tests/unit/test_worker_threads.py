"""Plain worker processes share the machine's cores instead of each taking all of them."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from hpo_service.cli import EXIT_USAGE, app
from hpo_service.workers.process import threads_per_process


@pytest.mark.parametrize(
    ("cpus", "concurrency", "requested", "environment", "expected"),
    [
        (16, 1, None, {}, None),  # one process: torch's default, every core
        (16, 4, None, {}, 4),
        (16, 3, None, {}, 5),
        (2, 3, None, {}, 1),  # more processes than cores: still one thread each
        (16, 4, 2, {}, 2),  # --threads wins
        (16, 1, 8, {}, 8),
        (16, 4, None, {"OMP_NUM_THREADS": "6"}, None),  # the user's own setting is kept
        (16, 4, 3, {"OMP_NUM_THREADS": "6"}, 3),
    ],
)
def test_threads_per_process(cpus: int, concurrency: int, requested: int | None, environment: dict[str, str],
                             expected: int | None) -> None:
    assert threads_per_process(cpus, concurrency, requested, environment) == expected


@pytest.mark.parametrize("torch_first", [False, True])
def test_cap_threads_limits_torch_whether_or_not_it_was_imported(torch_first: bool) -> None:
    code = (
        ("import torch\n" if torch_first else "")
        + "from hpo_service.workers.process import cap_threads\n"
        "cap_threads(1)\n"
        "import torch\n"
        "print(torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["1"]


def test_threads_with_ray_is_refused() -> None:
    result = CliRunner().invoke(app, ["worker", "--ray-address", "local", "--threads", "2"])
    assert result.exit_code == EXIT_USAGE, result.output
    assert "--threads sets the torch threads of plain worker processes" in " ".join(result.output.split())

"""The README's first Quick start command: `hpo demo` runs a whole study end to end.

scripts/demo installs into .venv and then execs exactly this; the install half is what the
test suite's own setup does, so here the demo runs from this environment, in an empty folder
(a fresh clone's working directory holds nothing the demo needs either).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_hpo_demo_runs_a_hyperband_study_to_the_end(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "hpo_service.cli", "demo", "--workers", "2"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "hpo demo: server http://127.0.0.1:" in output and "2 worker processes" in output
    assert re.search(r"\[\s*\d+\.\ds\] running: ", output), "no live progress lines"
    assert re.search(r"\[\s*\d+\.\ds\] completed: 49 trials ", output), output[-2000:]  # R=27, eta 3: 49
    assert "brackets and rungs" in output
    table = re.findall(r"│ (\d) +│ (\d) +│ (\d+) +│", output)
    assert [(int(b), int(r)) for b, r, _ in table] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2),
                                                        (2, 0), (2, 1), (3, 0)], output[-2000:]
    assert re.search(r"best trial \d+ \(number \d+\): value [0-9.]+ at budget 27, state completed", output)
    assert (tmp_path / ".hpo" / "demo" / "hpo.db").exists()

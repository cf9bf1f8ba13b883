"""A sampler's heavy modules are imported before its first proposal, which runs under the study lock.

qmc's first proposal imported scipy (0.7 s), gp's first model proposal torch and scipy (2.3 s),
inside a lease's transaction: other leases of the study waited, and on SQLite every write did.
Each case runs in a fresh interpreter, where nothing has imported them yet.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SETUP = """
    import sys
    from hpo_service.api.services import build_services
    from hpo_service.db.migrate import upgrade
    from hpo_service.orchestration.spec_loading import parse_spec, resolve_spec
    from hpo_service.settings import Settings
    url = "sqlite:///{db}"
    upgrade(url)
    settings = Settings(database_url=url)
    services = build_services(settings)
    spec = {{"name": "warm", "objective": {{"metric": "loss", "direction": "minimize"}}, "search_space": "synthetic",
            "scheduler": {{"kind": "random", "min_budget": 1, "max_budget": 1, "eta": 3}},
            "sampler": {{"kind": "qmc", "seed": 1}}, "trainer": {{"name": "synthetic", "params": {{}}}},
            "limits": {{"max_trials": 5}}}}
"""


def run(tmp_path: Path, body: str) -> str:
    script = textwrap.dedent(SETUP.format(db=tmp_path / "hpo.db")) + textwrap.dedent(body)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_creating_a_study_imports_its_samplers_modules(tmp_path: Path) -> None:
    out = run(tmp_path, """
        print("before:", "scipy.stats" in sys.modules)
        services.studies.create(resolve_spec(parse_spec(spec), settings.search_space_dir))
        print("after:", "scipy.stats" in sys.modules)
    """)
    assert out.split() == ["before:", "False", "after:", "True"]


@pytest.mark.slow
def test_a_starting_server_imports_the_modules_of_the_live_studies_samplers(tmp_path: Path) -> None:
    run(tmp_path, """
        services.studies.create(resolve_spec(parse_spec(spec), settings.search_space_dir))
    """)
    out = run(tmp_path, """
        print("before:", "scipy.stats" in sys.modules)
        print("kinds:", sorted(services.studies.warm_samplers_in_use()))
        print("after:", "scipy.stats" in sys.modules)
    """)
    assert out.split() == ["before:", "False", "kinds:", "['qmc']", "after:", "True"]

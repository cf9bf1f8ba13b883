"""Chaos, short: every scenario of tests/chaos/scenarios.py once, at CI scale, on PostgreSQL.

Real `hpo serve` and `hpo worker` processes; a study of 51 trials (Hyperband, max_budget 9,
3 sweeps) with the synthetic trainer per scenario; a fault injected while it runs; then the
audit of tests/chaos/audit.py must be clean and the best trial must equal the fault-free run's.

The scenarios run side by side (each on its own database, with its own processes): they
mostly wait on leases, sleeps and restarts, so together they take about as long as the
slowest one, not the sum. Side by side, PostgreSQL is taken away from one database only
(`pg_outage` mode ``database``: its sessions cut, new connections refused), never restarted
as a whole -- that would hit the other five, and any other test run on this server.
`bench/chaos.py` runs the long versions one at a time, with a real restart where it may.

Selecting one `test_scenario[...]` still runs them all (they share the fixture); one alone, at
this scale: `.venv/bin/python bench/chaos.py worker_sigkill --ci --out /tmp/chaos.md`.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import pytest

from tests.chaos.baseline import reference_for
from tests.chaos.scenarios import CI, SCENARIOS, ScenarioResult, assert_clean, run_scenario, study_spec
from tests.support import postgres as pg

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.xdist_group("chaos")]


@pytest.fixture(scope="module")
def results(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Every scenario's ScenarioResult (or the exception that stopped it), run concurrently once."""
    reference_for(study_spec("chaos", CI))  # the fault-free run, once, before the scenario threads ask for it
    folder = tmp_path_factory.mktemp("chaos")
    urls = {name: pg.create_throwaway_database(postgres_admin_url) for name in SCENARIOS}
    outcomes: dict[str, object] = {}
    try:
        with concurrent.futures.ThreadPoolExecutor(len(SCENARIOS), thread_name_prefix="chaos") as pool:
            futures = {name: pool.submit(run_scenario, name, folder / name, postgres_admin_url, url, CI,
                                         pg_mode="database")
                       for name, url in urls.items()}
            for name, future in futures.items():
                try:
                    outcomes[name] = future.result()
                except Exception as error:  # reported by that scenario's test; the others still count
                    outcomes[name] = error
        yield outcomes
    finally:
        for url in urls.values():
            pg.drop_database(postgres_admin_url, url)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario(scenario: str, results: dict[str, object]) -> None:
    result = results[scenario]
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, ScenarioResult)
    print(result.summary())
    for fault in result.faults:
        print(f"  {fault.kind}: trial {fault.trial_id} detected {fault.detected_s}s recovered {fault.recovered_s}s "
              f"down {fault.down_s}s {fault.note}")
    print(f"  details: {result.details}")
    assert result.faults, "nothing was injected"
    assert_clean(result)

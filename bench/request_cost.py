"""CPU per call of the worker protocol's hottest request, `POST /trials/{id}/reports`, split into
the use case and the HTTP stack around it.

bench/service_overhead.py measures the server's whole CPU per trial (11 HTTP requests). This
splits one request into its parts, on a throwaway PostgreSQL database, after 200 warm-up calls each:

1. in process, no HTTP: `TrialProtocol.report` (the lease check and the insert through
   SQLAlchemy, one transaction), as `hpo serve` builds it: process CPU and wall time per call;
2. over HTTP, one client calling one `hpo serve` process in turn: the server's CPU per
   `POST .../reports` (its /proc counters before and after), and the client's wall time;
3. over HTTP, `GET /api/v1/health` (no database, no authentication): what any request costs the
   server before the use case's own work.

(2) - (1) is what the HTTP stack (uvicorn, Starlette, FastAPI, pydantic, authentication) adds.

Usage (from the repository root):

    .venv/bin/python bench/request_cost.py --calls 2000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench`, `hpo_service` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.memory_growth import study_spec  # noqa: E402

WARM_UP = 200


def timed(calls: int, call: Callable[[], object], cpu_seconds: Callable[[], float]) -> tuple[float, float]:
    """(CPU ms, wall ms) per call of ``call``, measured after WARM_UP calls."""
    for _ in range(WARM_UP):
        call()
    cpu, wall = cpu_seconds(), time.perf_counter()
    for _ in range(calls):
        call()
    return (cpu_seconds() - cpu) / calls * 1000, (time.perf_counter() - wall) / calls * 1000


def in_process(url: str, calls: int) -> tuple[float, float]:
    from hpo_service.api.services import build_services
    from hpo_service.orchestration.spec_loading import parse_spec, resolve_spec
    from hpo_service.settings import Settings

    settings = Settings(database_url=url)
    services = build_services(settings)
    try:
        services.studies.create(resolve_spec(parse_spec(study_spec("request-cost", "random")),
                                             settings.search_space_dir))
        grant = services.protocol.lease("bench")
        assert grant is not None
        trial_id, token, step = grant.trial.id, grant.trial.lease_token, [0.0]

        def report() -> None:
            step[0] += 0.001
            services.protocol.report(trial_id, token, [(step[0], {"loss": 0.5})])

        return timed(calls, report, time.process_time)
    finally:
        services.close()


def over_http(url: str, calls: int) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory(prefix="hpo-request-cost-") as tmp:
        token = common.bootstrap_token(url, Path(tmp))
        with common.hpo_server(url, Path(tmp) / "server.log") as server, \
                common.client(server.url, token, retries=0, timeout=30.0) as client:
            client.create_study(study_spec("request-cost-http", "random"))
            grant = client.lease("bench", wait_s=5.0)
            assert grant is not None
            trial_id, lease_token, step = grant["trial_id"], grant["lease_token"], [0.0]

            def report() -> None:
                step[0] += 0.001
                client.report(trial_id, lease_token, [{"step": step[0], "metrics": {"loss": 0.5}}])

            def server_cpu() -> float:
                return common.process_cpu_seconds(server.pid)

            return {"report": timed(calls, report, server_cpu), "health": timed(calls, client.health, server_cpu)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--database-url", help="server for a throwaway database (default: as the tests)")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error("--calls must be positive")

    from hpo_service.db.migrate import upgrade

    admin = common.admin_url(args.database_url)
    with common.throwaway_database(admin) as url:
        upgrade(url)
        use_case = in_process(url, args.calls)
        http = over_http(url, args.calls)
    rows = [("TrialProtocol.report, in process (the use case)", use_case),
            ("POST /trials/{id}/reports over HTTP (server CPU)", http["report"]),
            ("GET /api/v1/health over HTTP (server CPU)", http["health"])]
    print(f"{args.calls} calls each, one step per report, PostgreSQL {common.server_version(admin)}")
    for label, (cpu, wall) in rows:
        print(f"  {label:<52} {cpu:6.2f} ms CPU  {wall:6.2f} ms wall per call")
    print(f"  the HTTP stack adds {http['report'][0] - use_case[0]:.2f} ms of server CPU per report")
    return 0


if __name__ == "__main__":
    sys.exit(main())

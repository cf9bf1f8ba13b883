"""CPU per call of the worker protocol's hottest use case, `TrialProtocol.report`, in process (no HTTP).

bench/service_overhead.py measures the server's whole CPU per trial (11 HTTP requests). This
splits off the part that is the use case itself -- the lease check and the insert through
SQLAlchemy, one transaction -- so that the rest is known to be the HTTP stack (uvicorn,
Starlette, FastAPI, pydantic). It builds the services as `hpo serve` does on a throwaway
PostgreSQL database, leases one trial, and times `--calls` reports of one step each
(process CPU time and wall time, after 200 warm-up calls).

Usage (from the repository root):

    .venv/bin/python bench/request_cost.py --calls 2000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench`, `hpo_service` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.memory_growth import study_spec  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--database-url", help="server for a throwaway database (default: as the tests)")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error("--calls must be positive")

    from hpo_service.api.services import build_services
    from hpo_service.db.migrate import upgrade
    from hpo_service.orchestration.spec_loading import parse_spec, resolve_spec
    from hpo_service.settings import Settings

    with common.throwaway_database(common.admin_url(args.database_url)) as url:
        upgrade(url)
        settings = Settings(database_url=url)
        services = build_services(settings)
        try:
            services.studies.create(resolve_spec(parse_spec(study_spec("request-cost", "random")),
                                                 settings.search_space_dir))
            grant = services.protocol.lease("bench")
            assert grant is not None
            trial_id, token = grant.trial.id, grant.trial.lease_token
            step = 0.0
            for calls in (200, args.calls):  # warm-up, then measured
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(calls):
                    step += 0.001
                    services.protocol.report(trial_id, token, [(step, {"loss": 0.5})])
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(f"TrialProtocol.report, one step per call, {args.calls} calls on PostgreSQL "
                  f"({common.server_version(common.admin_url(args.database_url))}): "
                  f"{cpu / args.calls * 1000:.2f} ms CPU and {wall / args.calls * 1000:.2f} ms wall per call")
        finally:
            services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The lease that makes a sampler's first proposal, with and without importing its modules ahead.

A sampler kind imports heavy modules at its first proposal (`qmc`: scipy) or its first model
proposal (`gp`: torch and scipy; `cmaes`: scipy), inside a lease's transaction and under the study
lock, where every other lease of the study waits (on SQLite, every write). hpo-service imports
them ahead (`warm_sampler`: at study creation, at server start, before a lease takes the lock).
Anchor: the same run with the warm-up switched off (what the code did before), side by side.

Each run is a fresh interpreter (nothing imported yet) on a throwaway SQLite database: create a
study of the `random` scheduler (one slice per trial), then lease and complete 40 trials, timing
each lease. Printed per kind: the creation, the slowest lease and where it was, the median lease.

Usage (from the repository root):

    .venv/bin/python bench/first_proposal.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRIALS = 40

RUN = """
import json, sys, tempfile, time, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {root!r})
import hpo_service.sampling.proposer as proposer
if not {warm}:
    proposer.warm_sampler = lambda kind: None  # the code before: modules load at the first proposal
    import hpo_service.orchestration.protocol as protocol, hpo_service.orchestration.studies as studies
    protocol.warm_sampler = studies.warm_sampler = proposer.warm_sampler
from hpo_service.api.services import build_services
from hpo_service.db.migrate import upgrade
from hpo_service.orchestration.spec_loading import parse_spec, resolve_spec
from hpo_service.settings import Settings
url = "sqlite:///" + tempfile.mkdtemp() + "/bench.db"
upgrade(url)
settings = Settings(database_url=url)
services = build_services(settings)
spec = {{"name": "first", "objective": {{"metric": "loss", "direction": "minimize"}}, "search_space": "synthetic",
        "scheduler": {{"kind": "random", "min_budget": 1, "max_budget": 1, "eta": 3}},
        "sampler": {{"kind": {kind!r}, "seed": 1}}, "trainer": {{"name": "synthetic", "params": {{}}}},
        "limits": {{"max_trials": {trials}}}}}
started = time.perf_counter()
services.studies.create(resolve_spec(parse_spec(spec), settings.search_space_dir))
create_ms = (time.perf_counter() - started) * 1000
leases = []
for number in range({trials}):
    started = time.perf_counter()
    grant = services.protocol.lease("bench")
    leases.append((time.perf_counter() - started) * 1000)
    services.protocol.complete(grant.trial.id, grant.trial.lease_token, {{"loss": (number * 7919 % 101) / 101}}, None)
print(json.dumps({{"create_ms": create_ms, "leases_ms": leases}}))
"""


def measure(kind: str, warm: bool) -> dict[str, object]:
    script = RUN.format(root=str(ROOT), warm=warm, kind=kind, trials=TRIALS)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} (warm={warm}) failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", default=["qmc", "gp", "cmaes"])
    args = parser.parse_args(argv)
    print(f"{TRIALS} leases per run, each run a fresh interpreter on SQLite; times in ms")
    print(f"{'sampler':<8} {'modules loaded':<22} {'create':>8} {'slowest lease (#)':>19} {'median lease':>13}")
    for kind in args.kinds:
        slowest = {}
        for warm in (False, True):
            run = measure(kind, warm)
            leases = run["leases_ms"]
            assert isinstance(leases, list)
            worst = max(range(len(leases)), key=leases.__getitem__)
            slowest[warm] = leases[worst]
            label = "ahead (hpo-service)" if warm else "at first proposal"
            print(f"{kind:<8} {label:<22} {run['create_ms']:8.0f} {leases[worst]:13.0f} (#{worst + 1:>2}) "
                  f"{statistics.median(leases):13.1f}")
        print(f"{kind:<8} slowest lease: {slowest[False] / slowest[True]:.1f}x shorter with the modules loaded ahead")
    return 0


if __name__ == "__main__":
    sys.exit(main())

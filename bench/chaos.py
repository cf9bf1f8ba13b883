"""Chaos, long: every scenario of tests/chaos/scenarios.py at LONG scale, one after the other.

A study of 294 trials (Hyperband, max_budget 27, eta 3, 6 sweeps; random sampler, seed 17)
with the synthetic trainer on 6 `hpo worker` processes and real `hpo serve` processes on
PostgreSQL, while faults are injected every few seconds until the study ends:

- worker_sigkill     SIGKILL of a random busy worker every 5 s, a replacement started each time
- worker_sigstop     SIGSTOP of a busy worker until its trial was finished elsewhere, then SIGCONT
                     (plus a scripted worker that sends a report and a completion on a dead lease)
- server_restart     SIGKILL of the API server every 5 s, restarted on the same port
- postgres_restart   PostgreSQL restarted 5 times, 7.5 s apart (`pg_ctlcluster restart` when this machine's
                     cluster serves the tests and we may restart it, else the study's database is
                     cut off and refused for 3 s; force with HPO_CHAOS_PG_RESTART=cluster|database)
- two_api_servers    two API servers, workers split; one of them SIGKILLed and restarted every 7.5 s
- checkpoint_damage  the checkpoints of every third trial deleted or corrupted as soon as committed

Then the audit of tests/chaos/audit.py: trials lost / completed twice, reports lost / duplicated,
values and best trial against a fault-free run of the same study, every requeue explained.

Usage (from the repository root):

    .venv/bin/python bench/chaos.py                          # all six, LONG scale (~20-30 min)
    .venv/bin/python bench/chaos.py worker_sigkill --ci      # one scenario at the CI scale
    .venv/bin/python bench/chaos.py --iterations 2           # a smaller study

A real PostgreSQL restart cuts every session on that server. On a machine other people's tests
use, give the benchmark a cluster of its own (Debian):

    pg_createcluster 15 chaos --port 5433 -- --auth=trust && pg_ctlcluster 15 chaos start
    .venv/bin/python bench/chaos.py --database-url postgresql://postgres@127.0.0.1:5433/postgres

Writes bench/results/chaos.md (--out); exit status 1 when any audit failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

DEFAULT_OUT = common.REPO_ROOT / "bench" / "results" / "chaos.md"


def _stats(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    if len(known) == 1:
        return f"{known[0]:.1f}"
    return f"{statistics.median(known):.1f} (max {max(known):.1f})"


def scenario_row(result: Any, command: str) -> list[Any]:
    audit = result.audit
    recovered = [f.recovered_s for f in result.faults]
    detected = [f.detected_s for f in result.faults]
    down = [f.down_s for f in result.faults]
    ok = "PASS" if not result.failures and audit.best_matches_reference else "FAIL"
    return [f"`{result.name}`", result.injected, len(result.faults), audit.trials, audit.trials_lost,
            audit.trials_duplicated, audit.reports_lost, audit.reports_duplicated,
            f"{audit.requeues} ({audit.requeues_unexplained} unexplained)",
            "yes" if audit.best_matches_reference else "NO", _stats(down), _stats(detected), _stats(recovered),
            f"{result.duration_s:.0f}", ok, f"`{command}`"]


HEADERS = ["scenario", "injected", "times", "trials", "lost", "completed twice", "reports lost",
           "reports duplicated", "requeues", "best = fault-free", "outage s (median, max)",
           "detected s (median, max)", "recovered s (median, max)", "study s", "audit", "reproduce"]


def details_section(result: Any) -> list[str]:
    audit = result.audit
    lines = [f"### `{result.name}`", "", result.summary(), ""]
    if result.details:
        shown = {k: v for k, v in result.details.items() if k != "frozen"}
        if shown:
            lines += [f"Details: `{shown}`", ""]
        for frozen in result.details.get("frozen", []):
            lines.append(f"- frozen worker {frozen['worker']} on trial {frozen['trial_id']} attempt "
                         f"{frozen['attempt']}: reports stored before the freeze {frozen['steps_at_freeze']}, "
                         f"refusal of its late calls in its log: {frozen['refusal_logged']}")
        lines.append("")
    lines.append(f"Requeue causes: {audit.requeue_causes or 'none'}; trial states: {audit.states}.")
    lines.append("")
    if result.faults:
        rows = [[f.kind, f.at.strftime("%H:%M:%S"), f.trial_id if f.trial_id is not None else "",
                 round(f.down_s, 1) if f.down_s is not None else "", f.detected_s if f.detected_s is not None else "",
                 f.recovered_s if f.recovered_s is not None else "", f.note] for f in result.faults[:40]]
        lines += [common.md_table(["fault", "at (UTC)", "trial", "outage s", "detected s", "recovered s", "note"],
                                  rows, "llrrrrl")]
        if len(result.faults) > 40:
            lines.append(f"\n... and {len(result.faults) - 40} more.")
        lines.append("")
    if result.failures:
        lines += ["Problems:", "", "```", *[p[:600] for p in result.failures[:20]], "```", ""]
    return lines


def main() -> int:
    common.stop_on_sigterm()
    from tests.chaos.scenarios import CI, LONG, SCENARIOS, run_scenario

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS), help=f"default: all ({', '.join(SCENARIOS)})")
    parser.add_argument("--ci", action="store_true", help="the CI scale (51 trials, a few faults)")
    parser.add_argument("--iterations", type=int, help="Hyperband sweeps (LONG: 6, 49 trials each)")
    parser.add_argument("--workers", type=int, help="worker processes (LONG: 6)")
    parser.add_argument("--database-url", help="server for throwaway databases (default: as the tests)")
    parser.add_argument("--keep-logs", type=Path, help="keep every process log in this folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    scale = CI if args.ci else LONG
    changes = {k: v for k, v in (("iterations", args.iterations), ("workers", args.workers)) if v}
    scale = dataclasses.replace(scale, **changes)
    admin = common.admin_url(args.database_url)
    rows, sections = [], []
    failed = False
    started = time.monotonic()
    for name in args.scenarios:
        command = f"python bench/chaos.py {name}" + (" --ci" if args.ci else "") + "".join(
            f" --{k} {v}" for k, v in changes.items())
        print(f"== {name} ({'CI' if args.ci else 'LONG'} scale) ...", flush=True)
        with common.throwaway_database(admin) as url, tempfile.TemporaryDirectory(prefix=f"hpo-chaos-{name}-") as tmp:
            folder = (args.keep_logs / name) if args.keep_logs else Path(tmp)
            try:
                result = run_scenario(name, folder, admin, url, scale)
            except Exception as error:  # a scenario that could not finish is a failure, the others still run
                failed = True
                rows.append([f"`{name}`", f"did not finish: {type(error).__name__}: {error}"[:300]] + [""] * 13
                            + [f"`{command}`"])
                print(f"   FAILED to finish: {error}", flush=True)
                continue
        print("   " + result.summary(), flush=True)
        for problem in result.failures[:10]:
            print("   PROBLEM: " + problem[:400], flush=True)
        failed = failed or bool(result.failures) or not result.audit.best_matches_reference
        rows.append(scenario_row(result, command))
        sections += details_section(result)
    text = "\n".join([
        "# Chaos runs", "",
        f"`python bench/chaos.py {' '.join(shlex.quote(a) for a in sys.argv[1:])}`".replace(" `", "`"),
        f"-- {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {time.monotonic() - started:.0f} s in all.", "",
        f"Machine: {common.cpu_model()}, {common.cpu_count()} cores, shared with other engineers' test runs "
        f"(load average at the end: {common.load_average()}); PostgreSQL {common.server_version(admin)} on the "
        "same machine.", "",
        f"Scale: Hyperband max_budget {scale.max_budget:g}, eta 3, {scale.iterations} sweeps, random sampler "
        f"(seed {scale.seed}), synthetic trainer sleeping {scale.sleep_per_unit:g} s per budget unit; "
        f"{scale.workers} workers; lease {scale.lease_seconds:g} s; faults every {scale.fault_interval_s:g} s "
        "(restarts every 1.5x that) until the study ends.", "",
        "Columns: *lost* = trials not completed or stopped at the end; *completed twice* = more than one "
        "finish or rung result per rung; *reports lost/duplicated* = budget steps 1..B of each trial "
        "missing or stored twice; *best = fault-free* = same trial, params and value as the same study "
        "run once without faults; *detected* = fault to the requeue decision naming it; *recovered* = "
        "fault to the next completed segment of the affected trial (of any trial for server and "
        "database restarts, counting only segments completed after the outage); *outage* = how long the "
        "server/database/worker was gone.", "",
        common.md_table(HEADERS, rows, "llrrrrrrlllllrll"), "",
        "## Per scenario", "", *sections,
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""What `hpo checkpoints gc` costs on a large study, against a bare walk of the same store.

A study of N finished trials (bench/preseed.py: COPY of the rows the service writes), each
with a committed checkpoint in a file store that its rung result refers to, plus garbage: the
scratch folders of killed slices and the commits of workers that had lost their leases (one of
each per `--garbage-every` trials). One `hpo serve` process on a throwaway PostgreSQL database.

- anchor: `os.walk` over the store, touching every folder (the least any collector does);
- ours: `collect` as `hpo checkpoints gc --min-age 0` runs it, first `--dry-run` and then for
  real, reading the references over HTTP (keyset pages of 1,000 trials).

Prints wall time, the server's CPU, what was deleted, and the ratio to the bare walk; checks
that every referenced checkpoint is still there afterwards.

Usage (from the repository root):

    .venv/bin/python bench/checkpoint_gc.py --trials 100000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` and `hpo_service` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.memory_growth import study_spec  # noqa: E402
from bench.preseed import preseed_ours  # noqa: E402

STEPS = 9


def build_store(root: Path, study_id: int, first_trial: int, trials: int, garbage_every: int) -> tuple[int, int]:
    """Committed checkpoints for every trial, garbage for some; returns (kept folders, garbage folders)."""
    from hpo_service.workers.checkpoints import FileCheckpointStore

    store = FileCheckpointStore(root)
    garbage = 0
    for trial_id in range(first_trial, first_trial + trials):
        folder = store.location(study_id, trial_id, STEPS, attempt=1)
        folder.mkdir(parents=True)
        (folder / "adapter.bin").write_bytes(b"w" * 64)
        if (trial_id - first_trial) % garbage_every == 0:
            refused = store.location(study_id, trial_id, STEPS, attempt=2)  # a fenced-off worker's commit
            refused.mkdir()
            (refused / "adapter.bin").write_bytes(b"w" * 64)
            scratch = store.open_for_write(study_id, trial_id, 3, attempt=2)  # a killed slice
            (scratch / "partial.bin").write_bytes(b"p" * 16)
            garbage += 2
    return trials, garbage


def bare_walk(root: Path) -> float:
    started = time.perf_counter()
    folders = sum(1 for _ in os.walk(root))
    assert folders > 0
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--garbage-every", type=int, default=100, help="one refused commit and one scratch per N trials")
    parser.add_argument("--database-url", help="server for a throwaway database (default: as the tests)")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.garbage_every < 1:
        parser.error("--trials and --garbage-every must be positive")

    from bench.service_overhead import search_space, trivial_loss
    from hpo_service.workers.checkpoint_gc import collect, scan, server_references

    admin = common.admin_url(args.database_url)
    with common.throwaway_database(admin) as url, tempfile.TemporaryDirectory(prefix="hpo-gc-bench-") as tmp:
        common.db_upgrade(url)
        token = common.bootstrap_token(url, Path(tmp))
        root = Path(tmp) / "store"
        with common.hpo_server(url, Path(tmp) / "server.log") as server, \
                common.client(server.url, token, timeout=60.0) as client:
            study = client.create_study(study_spec("gc-bench", "random"))
            conninfo = url.replace("postgresql+psycopg://", "postgresql://")
            started = time.perf_counter()
            preseed_ours(conninfo, study["id"], args.trials, STEPS, search_space(), trivial_loss)
            first = client.list_trials(study["id"], limit=1)["items"][0]["id"]
            uri = f"{root.resolve().as_uri()}/study-{study['id']}/trial-' || trial_id || '/budget-{STEPS}-a1"
            import psycopg

            with psycopg.connect(conninfo) as conn:
                conn.execute(f"UPDATE rung_results SET checkpoint_uri = '{uri}'")  # noqa: S608 - our own literal
            kept, garbage = build_store(root, study["id"], first, args.trials, args.garbage_every)
            print(f"{args.trials:,} trials pre-seeded, {kept:,} checkpoints + {garbage:,} garbage folders written "
                  f"in {time.perf_counter() - started:.0f} s", file=sys.stderr)

            walk_s = min(bare_walk(root) for _ in range(3))
            runs = {}
            for dry_run in (True, False):
                cpu, wall = common.process_cpu_seconds(server.pid), time.perf_counter()
                result = collect(root, server_references(client), cutoff=time.time(), dry_run=dry_run)
                runs[dry_run] = (time.perf_counter() - wall, common.process_cpu_seconds(server.pid) - cpu, result)
            remaining = sum(1 for entry in scan(root))

    print(f"PostgreSQL {common.server_version(admin)}, {common.cpu_count()} CPUs ({common.cpu_model()})")
    print(f"store: {kept:,} referenced checkpoints, {garbage:,} garbage folders; bare os.walk {walk_s:.2f} s (best of 3)")
    for dry_run, (wall, server_cpu, result) in runs.items():
        label = "hpo checkpoints gc --dry-run" if dry_run else "hpo checkpoints gc"
        print(f"  {label:<30} {wall:6.2f} s wall ({wall / walk_s:4.1f}x the bare walk), server CPU {server_cpu:5.2f} s, "
              f"{len(result.deleted):,} {'to delete' if dry_run else 'deleted'}, {result.kept:,} kept")
    real = runs[False][2]
    assert len(real.deleted) == garbage and remaining == kept, (len(real.deleted), garbage, remaining, kept)
    print(f"  afterwards: the {kept:,} referenced checkpoints remain, nothing else")
    return 0


if __name__ == "__main__":
    sys.exit(main())

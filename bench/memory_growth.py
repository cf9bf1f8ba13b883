"""What grows in an API process's memory as a study grows (finding F17), without HTTP.

Builds the services as `hpo serve` does (`build_services`, plus the dashboard's
`DashboardService`), creates a study like bench/load.py's (Hyperband 1..27, eta 3, the
`synthetic` space, random sampler by default) on a throwaway PostgreSQL database, and drives
lease -> report -> complete cycles through `TrialProtocol` from `--workers` simulated workers
(round robin, one report per step). Every `--read-every` finished segments it reads the
dashboard views the load test's readers poll (history, Hyperband table, trial table, curves,
parallel coordinates, the live stream's heads/changes; importance every 5th read).

With `--threads N` the calls run in a pool of N threads, as the API runs its use cases in
its thread pool: several pooled connections, several glibc malloc arenas. That is what makes
RSS grow much faster than the Python heap (finding F17): compare with `MALLOC_ARENA_MAX=2`.

After `--warmup` segments (imports, pools, caches warm) it starts tracemalloc and then,
every `--every` segments, collects garbage and records the process RSS and tracemalloc's
traced total (growth per finished segment since the row before). At the end it prints:

- the table and the growth per finished segment over the whole run, RSS after glibc's
  malloc_trim(0), and the resident memory by mapping (main heap, per-thread malloc arenas,
  pymalloc arenas, other anonymous memory, files) at the baseline, the end and after the trim;
- the allocation sites that grew most (by line; by traceback too with `--frames 8` or so,
  about ten times slower), in bytes per finished segment;
- the object types whose count grew most;
- the sizes of what the process keeps: the study's Proposer, the dashboard's VersionCache
  entries (HistoryLog, rung ledger, views), psycopg's per-connection statement caches and
  SQLAlchemy's compiled-statement cache.

Usage (from the repository root; 1,000 segments take about 50 s on a 2-core machine):

    .venv/bin/python bench/memory_growth.py --segments 3000 --threads 16     # as in F17
    MALLOC_ARENA_MAX=2 .venv/bin/python bench/memory_growth.py --segments 3000 --threads 16
    .venv/bin/python bench/memory_growth.py --segments 2000 --sampler tpe --no-dashboard
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import linecache
import re
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench`, `hpo_service` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

UNIT_STEPS = 1  # reports per budget unit (bench/load.py sends 10; reports are not kept in memory)


def study_spec(name: str, sampler: str) -> dict[str, Any]:
    return {
        "name": name,
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": "synthetic",
        "scheduler": {"kind": "hyperband", "min_budget": 1, "max_budget": 27, "eta": 3, "iterations": 1000},
        "sampler": {"kind": sampler, "seed": 5},
        "trainer": {"name": "synthetic", "params": {"noise": 0.0}},
        "retry": {"lease_seconds": 600, "max_attempts": 3},
    }


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def memory_map() -> Counter[str]:
    """Resident bytes by who mapped them (from /proc/self/smaps): glibc's main heap, its per-thread
    arenas (64 MiB-aligned anonymous mappings), pymalloc's 1 MiB arenas, other anonymous memory
    (large mallocs, numpy, thread stacks) and files (code, shared libraries)."""
    kinds: Counter[str] = Counter()
    kind = "other"
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return kinds
    for line in lines:
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            path = fields[5] if len(fields) > 5 else ""
            if path == "[heap]":
                kind = "malloc: main heap"
            elif path.startswith("/"):
                kind = "files (code, libraries)"
            elif path:
                kind = f"other {path}"
            elif start % (64 << 20) == 0 and end - start <= 64 << 20:
                kind = "malloc: thread arenas"
            elif end - start == 1 << 20:
                kind = "pymalloc arenas (1 MiB)"
            else:
                kind = "other anonymous (large mallocs, numpy, stacks)"
        elif fields[0] == "Rss:":
            kinds[kind] += int(fields[1]) * 1024
    return kinds


def malloc_trim() -> int | None:
    """RSS after glibc's malloc_trim(0), which returns the free memory of every malloc arena to the
    system: what RSS growth survives it is live (or fragmented) memory. None without glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return None
    return rss_bytes()


@dataclass
class Lease:
    trial_id: int
    token: str
    step: int
    last: int
    params: dict[str, Any]


def loss_of(params: dict[str, Any], budget: float) -> float:
    return abs(params.get("learning_rate", 0.01) - 0.01) + 1.0 / (1.0 + budget)


class Driver:
    """Simulated workers and dashboard readers. With ``threads`` > 1 their calls run in a thread
    pool, as the API runs its use cases (several threads, several pooled connections)."""

    def __init__(self, services: Any, dashboard: Any, study_id: int, workers: int, read_every: int,
                 reports_per_unit: int, threads: int) -> None:
        self.services, self.dashboard, self.study_id = services, dashboard, study_id
        self.leases: dict[str, Lease | None] = {f"mem-w{i}": None for i in range(workers)}
        self.read_every, self.per_unit = read_every, reports_per_unit
        self.segments = self.reads = 0
        self.report_mark = self.decision_mark = 0
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def run_until(self, segments: int) -> None:
        """Rounds in which every worker makes one call, until ``segments`` segments finished
        (a round in a thread pool may finish a few more)."""
        while self.segments < segments:
            names = list(self.leases)
            if self.pool is None:
                outcomes = []
                for name in names:
                    if self.segments >= segments:
                        break
                    outcomes.append(self.step(name))
                    if outcomes[-1] == "done":
                        self.segments += 1
                        if self.dashboard is not None and self.segments % self.read_every == 0:
                            self.read_dashboard()
            else:
                outcomes = list(self.pool.map(self.step, names))
                before, self.segments = self.segments, self.segments + outcomes.count("done")
                if self.dashboard is not None and self.segments // self.read_every > before // self.read_every:
                    self.read_dashboard()
            if all(o == "idle" for o in outcomes):
                raise RuntimeError("no worker could lease or report: the study ran out of work")

    def step(self, name: str) -> str:
        """One call of worker ``name``: "leased", "reported", "done" (completed a segment) or "idle"."""
        protocol = self.services.protocol
        lease = self.leases[name]
        if lease is None:
            grant = protocol.lease(name, [self.study_id])
            if grant is None:
                return "idle"
            trial = grant.trial
            self.leases[name] = Lease(trial.id, trial.lease_token, round(trial.budget_done * self.per_unit),
                                      round(trial.budget_target * self.per_unit), dict(trial.params))
            return "leased"
        if lease.step < lease.last:
            lease.step += 1
            position = lease.step / self.per_unit
            protocol.report(lease.trial_id, lease.token, [(position, {"loss": loss_of(lease.params, position)})])
            return "reported"
        budget = lease.last / self.per_unit
        protocol.complete(lease.trial_id, lease.token, {"loss": loss_of(lease.params, budget)},
                          f"file:///tmp/ckpt/{lease.trial_id}/{budget:g}")
        self.leases[name] = None
        return "done"

    def read_dashboard(self) -> None:
        d, sid = self.dashboard, self.study_id
        self.reads += 1
        reads: list[Callable[[], Any]] = [
            lambda: d.history(sid, 2000),
            lambda: d.hyperband(sid),
            lambda: d.trial_table(sid, state=None, bracket=None, rung=None, params=[], sort="number", limit=50,
                                  offset=0),
            lambda: d.curves(sid, 100, 10, 100, None),
            lambda: d.parallel(sid, None, 500, 50),
            lambda: d.changes(sid, self.report_mark, self.decision_mark, 500),
        ]
        if self.reads % 5 == 0:
            reads.append(lambda: d.importance(sid, "ped_anova", None, 1000))
        if self.pool is None:
            for read in reads:
                read()
        else:
            list(self.pool.map(lambda read: read(), reads))
        heads = d.heads([sid])
        self.report_mark, self.decision_mark = heads.report_id, heads.decision_id


def type_counts() -> Counter[str]:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def deep_size(obj: Any, seen: set[int] | None = None, limit: int = 2_000_000) -> int:
    """Approximate bytes reachable from ``obj`` (containers, dataclasses, slots), each object once."""
    seen = set() if seen is None else seen
    stack, total = [obj], 0
    while stack and len(seen) < limit:
        item = stack.pop()
        if id(item) in seen or isinstance(item, type) or callable(item) and not hasattr(item, "__dict__"):
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)) or type(item).__name__ == "deque":
            stack.extend(item)
        else:
            if hasattr(item, "__dict__") and not isinstance(item, type):
                stack.append(vars(item))
            for slot in getattr(type(item), "__slots__", ()):
                if hasattr(item, slot):
                    stack.append(getattr(item, slot))
    return total


def cache_sizes(services: Any, dashboard: Any) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    proposers = services.context.proposers
    with proposers._lock:
        entries = list(proposers._entries.values())
    for _hash, proposer in entries:
        rungs = getattr(proposer, "_rungs", {})
        observed = sum(r.count for r in rungs.values())
        rows.append((f"proposer: {observed} observations, model rung {proposer.model_rung}",
                     f"{deep_size(proposer) / 1024:.0f} KB"))
    if dashboard is not None:
        cache = dashboard.cache
        with cache._lock:
            items = list(cache._entries.items())
        rows.append(("dashboard VersionCache entries", str(len(items))))
        for key, (_stamp, _at, value) in items:
            rows.append((f"  {key[0]} {key[1:]}", f"{deep_size(value) / 1024:.0f} KB"))
    pool = services.context.engine.pool
    connections = [record.dbapi_connection for record in list(getattr(pool, "_pool").queue)
                   if record.dbapi_connection is not None]
    prepared = [c._prepared for c in connections if hasattr(c, "_prepared")]
    if prepared:
        keys = [key for p in prepared for key in (*p._counts, *p._names)]
        rows.append(("pooled connections (idle now)", str(len(connections))))
        rows.append(("psycopg statement caches: keys (counted + prepared)",
                     f"{len(keys)}, {sum(len(k[0]) for k in keys) / 1024:.0f} KB of SQL"))
        shapes: Counter[str] = Counter()
        largest: dict[str, int] = {}
        for sql, _types in keys:
            text = sql.decode(errors="replace")
            shape = " ".join(re.sub(r"\$\d+(, \$\d+)*", "$..", text).split())[:70]
            shapes[shape] += 1
            largest[shape] = max(largest.get(shape, 0), len(sql))
        for shape, n in shapes.most_common(6):
            rows.append((f"  {n} keys, largest {largest[shape]} B", shape))
    compiled = getattr(services.context.engine, "_compiled_cache", None)
    if compiled is not None:
        rows.append(("SQLAlchemy compiled cache entries", f"{len(compiled)} (capacity {compiled.capacity})"))
    return rows


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    print(common.text_table(headers, rows), flush=True)


def site_of(stat: tracemalloc.StatisticDiff, root: str, depth: int = 1) -> str:
    frames = [f for f in reversed(list(stat.traceback)) if "tracemalloc" not in f.filename]  # innermost first
    parts = []
    for frame in frames[:depth]:
        name = frame.filename.replace(root, "").replace(str(Path(sys.prefix)), "<venv>")
        parts.append(f"{name}:{frame.lineno}")
    return " <- ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=3000, help="finished segments to measure (3000)")
    parser.add_argument("--every", type=int, default=500, help="snapshot every N segments (500)")
    parser.add_argument("--warmup", type=int, default=200, help="segments before the baseline (200)")
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--reports-per-unit", type=int, default=UNIT_STEPS)
    parser.add_argument("--read-every", type=int, default=5, help="dashboard reads every N segments (5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="run the calls in a pool of this many threads, as the API does (1: all in this one)")
    parser.add_argument("--no-dashboard", action="store_true", help="workers only, no dashboard reads")
    parser.add_argument("--sampler", default="random", help="sampler kind of the study (random)")
    parser.add_argument("--frames", type=int, default=1,
                        help="tracemalloc traceback depth (1: fast; 10+ to see who calls a growing site, ~10x slower)")
    parser.add_argument("--top", type=int, default=15, help="growing sites to print (15)")
    parser.add_argument("--database-url", help="server for a throwaway database (default: as the tests)")
    args = parser.parse_args()

    from hpo_service.api.services import build_services
    from hpo_service.db.migrate import upgrade
    from hpo_service.orchestration.dashboard import DashboardService
    from hpo_service.orchestration.spec_loading import parse_spec, resolve_spec
    from hpo_service.settings import Settings

    admin = common.admin_url(args.database_url)
    root = str(common.REPO_ROOT) + "/"
    with common.throwaway_database(admin) as url:
        upgrade(url)
        settings = Settings(database_url=url)
        services = build_services(settings)
        dashboard = None if args.no_dashboard else DashboardService(services.context)
        try:
            spec = resolve_spec(parse_spec(study_spec("memory-growth", args.sampler)), settings.search_space_dir)
            study_id = services.studies.create(spec).id
            driver = Driver(services, dashboard, study_id, args.workers, args.read_every, args.reports_per_unit,
                            args.threads)
            started = time.monotonic()
            driver.run_until(args.warmup)
            gc.collect()
            tracemalloc.start(args.frames)
            base_segments, base_rss, base_counts = driver.segments, rss_bytes(), type_counts()
            base_map = memory_map()
            base_snapshot = tracemalloc.take_snapshot()
            base_traced = tracemalloc.get_traced_memory()[0]
            print(f"study {study_id}, sampler {args.sampler}, {args.workers} workers, {args.threads} thread(s), "
                  f"dashboard {'off' if dashboard is None else f'read every {args.read_every} segments'}; "
                  "B/seg: growth per finished segment since the row before", flush=True)
            headers = ["segments", "RSS MB", "traced MB", "RSS B/seg", "traced B/seg", "s"]
            rows = [[base_segments, f"{base_rss / 2**20:.1f}", f"{base_traced / 2**20:.2f}", "", "",
                     f"{time.monotonic() - started:.0f}"]]
            print_table(headers, rows)
            last = (base_segments, base_rss, base_traced)
            while driver.segments < base_segments + args.segments:
                driver.run_until(min(driver.segments + args.every, base_segments + args.segments))
                gc.collect()
                now = (driver.segments, rss_bytes(), tracemalloc.get_traced_memory()[0])
                done = now[0] - last[0]
                rows.append([now[0], f"{now[1] / 2**20:.1f}", f"{now[2] / 2**20:.2f}",
                             f"{(now[1] - last[1]) / done:.0f}", f"{(now[2] - last[2]) / done:.0f}",
                             f"{time.monotonic() - started:.0f}"])
                print(common.text_table(headers, rows[-1:]).splitlines()[-1], flush=True)
                last = now
            snapshot = tracemalloc.take_snapshot()
            counts = type_counts()
            measured = driver.segments - base_segments
            filters = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, linecache.__file__)]
            base_snapshot, snapshot = base_snapshot.filter_traces(filters), snapshot.filter_traces(filters)

            print(f"\n## Growth over {measured} finished segments (after a warm-up of {base_segments})\n")
            print_table(headers, rows)
            print(f"\nper finished segment: traced {(last[2] - base_traced) / measured:.0f} B, "
                  f"RSS {(last[1] - base_rss) / measured:.0f} B")
            end_map = memory_map()
            trimmed = malloc_trim()
            trim_map = memory_map()
            if trimmed is not None:
                print(f"after malloc_trim(0) (free heap memory glibc kept, given back): RSS {trimmed / 2**20:.1f} MB, "
                      f"{(trimmed - base_rss) / measured:.0f} B per finished segment above the baseline")
            print("\n## Resident memory by mapping (MB): baseline, end, after malloc_trim(0)\n")
            print_table(["mapping", "baseline", "end", "trimmed", "end B/seg"],
                        [[k, f"{base_map[k] / 2**20:.1f}", f"{end_map[k] / 2**20:.1f}", f"{trim_map[k] / 2**20:.1f}",
                          f"{(end_map[k] - base_map[k]) / measured:.0f}"]
                         for k in sorted(set(base_map) | set(end_map), key=lambda k: -end_map[k])])
            print()

            print("## Growing sites by line\n")
            stats = snapshot.compare_to(base_snapshot, "lineno")
            print_table(["B/seg", "blocks/seg", "site"],
                        [[f"{s.size_diff / measured:.0f}", f"{s.count_diff / measured:.2f}", site_of(s, root)]
                         for s in stats[:args.top]])
            if args.frames > 1:
                print("\n## Growing sites by traceback (innermost first)\n")
                stats = snapshot.compare_to(base_snapshot, "traceback")
                print_table(["B/seg", "blocks/seg", "traceback"],
                            [[f"{s.size_diff / measured:.0f}", f"{s.count_diff / measured:.2f}", site_of(s, root, 8)]
                             for s in stats[:args.top]])
            print("\n## Object types whose count grew\n")
            grown = sorted(((counts[t] - base_counts.get(t, 0), t) for t in counts), reverse=True)[:args.top]
            print_table(["type", "count now", "+ since baseline", "per segment"],
                        [[t, counts[t], d, f"{d / measured:.2f}"] for d, t in grown if d > 0])
            print("\n## Caches kept by the process\n")
            print_table(["what", "size"], [list(r) for r in cache_sizes(services, dashboard)])
        finally:
            tracemalloc.stop()
            driver.close()
            if dashboard is not None:
                dashboard.background.close()
            services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

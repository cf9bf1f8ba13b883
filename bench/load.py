"""Sustained load: 64 workers long-polling for leases and reporting every 100 ms, plus 10 dashboard
readers, against `hpo serve` on PostgreSQL on this machine -- first one API process, then two.

What each simulated client does (all in one asyncio process, aiohttp, keep-alive connections;
httpx's async client managed only ~130 requests/s per core here, aiohttp ~1000):

- worker (64): `POST /leases` (long poll, wait_s=10) -> every `--report-ms` one `POST .../reports`
  (one step of 0.1 budget units, the synthetic learning curve as `loss`) until the lease's
  `budget_to` or a `stop` directive -> `POST .../complete`; a heartbeat every lease_seconds/3.
- dashboard reader (10): an open study page of the dashboard (hpo_service/dashboard/page_study.js)
  on a study that changes all the time: its first load (8 requests), its live stream (server-sent
  events, reconnected every 25 s), and the reloads the stream triggers, at the page's throttles:
  summary, history, Hyperband table and trial table every 3 s, curves every 5 s, parallel
  coordinates and parameter importance every 15 s.

The study is Hyperband (min 1, max 27, eta 3, many sweeps: it never runs out of work), the
`synthetic` search space, random sampler. A budget unit is 10 reports, so a rung-0 trial is
leased, reported 10 times in 1 s and completed, and a top-rung segment lasts 18 s.

Measured after `--warmup` seconds, for `--seconds`: requests/s and p50/p99 latency per endpoint,
errors (transport errors, 5xx, any 4xx; 204 from /leases is the long poll's normal "no work"),
the resident memory of each API process at the start and the end (and every 30 s), the CPU
seconds of the API processes and of this generator, and PostgreSQL's active time for the database.

Usage (from the repository root):

    .venv/bin/python bench/load.py                               # 5 min with 1 API process, 5 min with 2
    .venv/bin/python bench/load.py --servers 1 --seconds 30      # a quick look
    .venv/bin/python bench/load.py --saturate 60                 # plus 60 s unpaced (reports back to back)
                                                                 # with 1 and 2 processes: the ceiling
Writes bench/results/load.md (--out) and prints the same tables; the API processes' memory over
the run is charted next to it (load.png; bench/load_memory.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import random
import shlex
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, load_memory  # noqa: E402

DEFAULT_OUT = common.REPO_ROOT / "bench" / "results" / "load.md"
LEASE_SECONDS = 60.0
UNIT_REPORTS = 10  # reports per budget unit: step = 0.1


def study_spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": "synthetic",
        "scheduler": {"kind": "hyperband", "min_budget": 1, "max_budget": 27, "eta": 3, "iterations": 1000},
        "sampler": {"kind": "random", "seed": 5},
        "trainer": {"name": "synthetic", "params": {"noise": 0.0}},
        "retry": {"lease_seconds": LEASE_SECONDS, "max_attempts": 3},
    }


# --- recording ------------------------------------------------------------------------------------


@dataclass
class Recorder:
    measuring: bool = False
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, dict[int, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    events: int = 0  # server-sent events the dashboard readers received while measuring

    def record(self, endpoint: str, seconds: float, status: int) -> None:
        if not self.measuring:
            return
        self.latencies[endpoint].append(seconds)
        self.statuses[endpoint][status] += 1
        if status >= 400 or status == 0:
            self.errors[endpoint].append(str(status))

    def error(self, endpoint: str, what: str) -> None:
        if self.measuring:
            self.statuses[endpoint][0] += 1
            self.errors[endpoint].append(what)


@dataclass
class Reply:
    status: int
    body: Any


async def call(http: Any, recorder: Recorder, endpoint: str, method: str, url: str, **kwargs: Any) -> Reply | None:
    started = time.perf_counter()
    try:
        async with http.request(method, url, **kwargs) as response:
            raw = await response.read()
            status = response.status
    except Exception as error:  # transport errors count as errors, the client keeps going
        recorder.error(endpoint, type(error).__name__)
        await asyncio.sleep(0.5)
        return None
    recorder.record(endpoint, time.perf_counter() - started, status)
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return Reply(status, body)


# --- simulated clients ---------------------------------------------------------------------------


async def worker(http: Any, recorder: Recorder, name: str, study_id: int, pace_s: float,
                 stop: asyncio.Event) -> None:
    from trainers.synthetic.curves import curve_for

    while not stop.is_set():
        response = await call(http, recorder, "POST /leases", "POST", "/api/v1/leases",
                              json={"worker_id": name, "wait_s": 10, "studies": [study_id]})
        if response is None or response.status != 200:
            continue
        lease = response.body
        trial, token = lease["trial_id"], lease["lease_token"]
        curve = curve_for(lease["params"], {})
        step = round(lease["budget_from"] * UNIT_REPORTS)
        last_heartbeat = time.monotonic()
        tick = time.monotonic()
        loss = curve.loss_at(lease["budget_from"])
        while step < round(lease["budget_to"] * UNIT_REPORTS) and not stop.is_set():
            step += 1
            position = step / UNIT_REPORTS
            loss = curve.loss_at(position)
            response = await call(http, recorder, "POST /trials/{id}/reports", "POST",
                                  f"/api/v1/trials/{trial}/reports",
                                  json={"lease_token": token, "reports": [{"step": position, "metrics": {"loss": loss}}]})
            if response is not None and response.status == 200 and response.body["directive"] == "stop":
                break
            if time.monotonic() - last_heartbeat > LEASE_SECONDS / 3:
                last_heartbeat = time.monotonic()
                await call(http, recorder, "POST /trials/{id}/heartbeat", "POST", f"/api/v1/trials/{trial}/heartbeat",
                           json={"lease_token": token})
            tick = max(tick + pace_s, time.monotonic())  # behind schedule: no burst to catch up
            await asyncio.sleep(tick - time.monotonic())
        if stop.is_set():
            return
        await call(http, recorder, "POST /trials/{id}/complete", "POST", f"/api/v1/trials/{trial}/complete",
                   json={"lease_token": token, "metrics": {"loss": loss}})


STREAM = "GET /studies/{id}/events (SSE)"  # latency = time to the first event; the stream itself lasts 25 s


async def events(http: Any, recorder: Recorder, study_id: int, stop: asyncio.Event) -> None:
    """The study page's live stream: held open, reconnected when the server ends it (every 25 s)."""
    last_id: str | None = None
    while not stop.is_set():
        started = time.perf_counter()
        headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_id} if last_id else {})}
        try:
            async with http.get(f"/api/v1/studies/{study_id}/events", headers=headers) as response:
                first = True
                async for line in response.content:
                    if first:
                        recorder.record(STREAM, time.perf_counter() - started, response.status)
                        first = False
                    if line.startswith(b"id:"):
                        last_id = line[3:].strip().decode()
                    elif line.startswith(b"event:"):
                        recorder.events += recorder.measuring
                if first:
                    recorder.record(STREAM, time.perf_counter() - started, response.status)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            recorder.error(STREAM, type(error).__name__)
            await asyncio.sleep(1.0)


async def reader(http: Any, recorder: Recorder, study_id: int, stop: asyncio.Event, rng: random.Random) -> None:
    """One open study page of the dashboard (hpo_service/dashboard/page_study.js) on a study that
    changes all the time: the first load (8 requests), the live stream, and the reloads its events
    trigger, each at its throttle's pace -- summary, history, Hyperband table and trial table every
    3 s, learning curves every 5 s, parallel coordinates and importance every 15 s."""
    base = f"/api/v1/studies/{study_id}"
    fast = [("GET /studies/{id}", base, None),
            ("GET /studies/{id}/history", f"{base}/history", {"max_points": 2000}),
            ("GET /studies/{id}/hyperband", f"{base}/hyperband", None),
            ("GET /studies/{id}/trial-table", f"{base}/trial-table", {"sort": "number", "limit": 50, "offset": 0})]
    curves = [("GET /studies/{id}/curves", f"{base}/curves", {"max_trials": 100, "top": 10, "max_points": 100})]
    slow = [("GET /studies/{id}/parallel", f"{base}/parallel", {"max_points": 500, "top": 50}),
            ("GET /studies/{id}/importance", f"{base}/importance", None)]

    async def load(requests: list[tuple[str, str, dict[str, Any] | None]]) -> None:
        await asyncio.gather(*(call(http, recorder, endpoint, "GET", url, params=params)
                               for endpoint, url, params in requests))

    await asyncio.sleep(rng.random() * 3)
    await load(fast + curves + slow + [("GET /studies/{id}/extensions", f"{base}/extensions", None)])
    stream = asyncio.create_task(events(http, recorder, study_id, stop))
    schedule = {"fast": time.monotonic() + 3, "curves": time.monotonic() + 5, "slow": time.monotonic() + 15}
    paces = {"fast": (3.0, fast), "curves": (5.0, curves), "slow": (15.0, slow)}
    try:
        while not stop.is_set():
            await asyncio.sleep(max(0.0, min(schedule.values()) - time.monotonic()))
            due = [name for name, at in schedule.items() if at <= time.monotonic()]
            for name in due:
                schedule[name] = time.monotonic() + paces[name][0]
            await load([request for name in due for request in paces[name][1]])
    finally:
        stream.cancel()


# --- one run -----------------------------------------------------------------------------------------


@dataclass
class RunResult:
    label: str
    servers: int
    seconds: float
    pace_ms: float
    recorder: Recorder
    rss_mb: list[list[tuple[float, float]]]  # per server: (t, MB)
    cpu: dict[str, float]
    load: str


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def drive(urls: list[str], token: str, study_id: int, args: argparse.Namespace, pace_s: float,
                seconds: float, pids: list[int], database: str, admin: str) -> tuple[Recorder, list[list[tuple[float, float]]],
                                                                          dict[str, float]]:
    import aiohttp

    recorder = Recorder()
    stop = asyncio.Event()
    headers = {"Authorization": f"Bearer {token}"}
    clients = [aiohttp.ClientSession(base_url=url, headers=headers, timeout=aiohttp.ClientTimeout(total=60),
                                     connector=aiohttp.TCPConnector(limit=256)) for url in urls]
    rng = random.Random(1)
    tasks = [asyncio.create_task(worker(clients[i % len(clients)], recorder, f"load-w{i}", study_id, pace_s, stop))
             for i in range(args.workers)]
    tasks += [asyncio.create_task(reader(clients[i % len(clients)], recorder, study_id, stop, random.Random(i)))
              for i in range(args.readers)]
    await asyncio.sleep(args.warmup)
    memory: list[list[tuple[float, float]]] = [[(0.0, rss_mb(pid))] for pid in pids]
    cpu_before = {"api": sum(common.process_cpu_seconds(p) for p in pids),
                  "postgres": common.database_stats(admin, database)["active_time"] / 1000,
                  "generator": common.process_cpu_seconds(_self_pid()), "machine": common.machine_busy_seconds()}
    recorder.measuring = True
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        await asyncio.sleep(min(30.0, seconds - elapsed))
        for series, pid in zip(memory, pids, strict=True):
            series.append((round(time.monotonic() - started), rss_mb(pid)))
    recorder.measuring = False
    cpu = {"api": sum(common.process_cpu_seconds(p) for p in pids) - cpu_before["api"],
           "postgres": common.database_stats(admin, database)["active_time"] / 1000 - cpu_before["postgres"],
           "generator": common.process_cpu_seconds(_self_pid()) - cpu_before["generator"],
           "machine": common.machine_busy_seconds() - cpu_before["machine"]}
    stop.set()
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        await client.close()
    _ = rng
    return recorder, memory, cpu


def _self_pid() -> int:
    import os

    return os.getpid()


def run_once(admin: str, servers: int, args: argparse.Namespace, pace_ms: float, seconds: float, label: str,
             scratch: Path) -> RunResult:
    with common.throwaway_database(admin) as url, contextlib.ExitStack() as stack:
        common.db_upgrade(url)
        token = common.bootstrap_token(url, scratch)
        assert token is not None
        started = [stack.enter_context(common.hpo_server(url, scratch / f"{label}-server-{i}.log"))
                   for i in range(servers)]
        with common.client(started[0].url, token) as client:
            study_id = client.create_study(study_spec(f"load-{label}"))["id"]
        print(f"[{label}] {servers} API process(es), {args.workers} workers (report every {pace_ms:g} ms), "
              f"{args.readers} readers; warm-up {args.warmup:g}s, measuring {seconds:g}s", flush=True)
        recorder, memory, cpu = asyncio.run(drive([s.url for s in started], token, study_id, args, pace_ms / 1000,
                                                  seconds, [s.pid for s in started], common.database_name(url),
                                                  admin))
        for server in started:
            if "Traceback" in server.log_tail(100_000):
                print(f"[{label}] server log has a traceback:\n{server.log_tail(3000)}", flush=True)
    return RunResult(label, servers, seconds, pace_ms, recorder, memory, cpu, common.load_average())


# --- report ------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def endpoint_rows(result: RunResult) -> list[list[Any]]:
    rows = []
    total = errors = 0
    for endpoint in sorted(result.recorder.statuses):
        latencies = result.recorder.latencies[endpoint]
        count = sum(result.recorder.statuses[endpoint].values())
        failed = len(result.recorder.errors[endpoint])
        total, errors = total + count, errors + failed
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(result.recorder.statuses[endpoint].items()))
        rows.append([f"`{endpoint}`", count, f"{count / result.seconds:.1f}", f"{percentile(latencies, 0.5) * 1000:.1f}",
                     f"{percentile(latencies, 0.99) * 1000:.1f}", f"{max(latencies, default=0) * 1000:.0f}", failed,
                     statuses])
    rows.append(["**all**", total, f"**{total / result.seconds:.1f}**", "", "", "", f"**{errors}**", ""])
    return rows


def summary_row(result: RunResult) -> list[Any]:
    rec = result.recorder
    total = sum(sum(s.values()) for s in rec.statuses.values())
    reports = sum(rec.statuses["POST /trials/{id}/reports"].values())
    errors = sum(len(e) for e in rec.errors.values())
    all_latencies = [x for endpoint, v in rec.latencies.items() if endpoint != STREAM for x in v]
    report_latencies = rec.latencies["POST /trials/{id}/reports"]
    memory = "; ".join(f"{series[0][1]:.0f} -> {series[-1][1]:.0f} (max {max(m for _, m in series):.0f})"
                       for series in result.rss_mb)
    return [result.label, result.servers, f"{result.pace_ms:g} ms" if result.pace_ms else "none",
            f"{result.seconds:g}", f"{total / result.seconds:.0f}", f"{reports / result.seconds:.0f}",
            f"{percentile(report_latencies, 0.5) * 1000:.1f} / {percentile(report_latencies, 0.99) * 1000:.1f}",
            f"{percentile(all_latencies, 0.5) * 1000:.1f} / {percentile(all_latencies, 0.99) * 1000:.1f}",
            errors, f"{rec.events / result.seconds:.0f}", memory, f"{result.cpu['api'] / result.seconds:.2f}", f"{result.cpu['postgres'] / result.seconds:.2f}",
            f"{result.cpu['generator'] / result.seconds:.2f}", f"{result.cpu['machine'] / result.seconds:.2f}"]


SUMMARY_HEADERS = ["run", "API procs", "report pace", "s", "req/s", "reports/s", "reports p50/p99 ms",
                   "all p50/p99 ms", "errors", "SSE events/s", "API RSS MB start -> end", "API cores", "PG active", "generator cores",
                   "machine busy cores"]


def write_report(results: list[RunResult], args: argparse.Namespace, admin: str, out: Path) -> str:
    command = "python bench/load.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    parts = [
        "# Sustained load", "",
        f"`{command.strip()}` -- {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit "
        f"{_commit()}.", "",
        f"Machine: {common.cpu_model()}, {common.cpu_count()} cores (shared with other engineers' test runs while "
        f"this ran: the load average is in each section), PostgreSQL {common.server_version(admin)} on the same "
        "machine, load generator (one asyncio process) on the same machine too.", "",
        f"Clients: {args.workers} workers long-polling `POST /leases` (wait_s=10) and reporting one step per "
        f"report (10 reports per budget unit) every `report pace`, heartbeat every {LEASE_SECONDS / 3:g} s, "
        f"complete at the end of each segment; {args.readers} dashboard readers, each an open study page: "
        "its live event stream (reconnected every 25 s) and the reloads the stream triggers at the page's "
        "throttles (summary, history, Hyperband table, trial table every 3 s; curves every 5 s; parallel "
        "coordinates and importance every 15 s). Study: Hyperband min 1 max 27 eta 3, 1000 sweeps (never "
        f"runs out of work). Counted after a {args.warmup:g} s warm-up. Errors: transport errors, 5xx and any "
        "4xx (204 from /leases is the long poll's normal answer). `all p50/p99` leaves out the event stream, "
        "whose latency is the time to its first event.", "",
        "## Summary", "", common.md_table(SUMMARY_HEADERS, [summary_row(r) for r in results]), "",
        "`API cores`, `generator cores`, `machine busy cores`: CPU seconds per wall second during the measured "
        "window (2.0 = both cores busy). `PG active`: seconds PostgreSQL's sessions of the database spent "
        "executing statements per wall second (pg_stat_database.active_time).", "",
    ]
    for result in results:
        parts += [f"## {result.label}: {result.servers} API process(es), report pace "
                  f"{result.pace_ms:g} ms" if result.pace_ms else
                  f"## {result.label}: {result.servers} API process(es), unpaced (reports back to back)", "",
                  f"Load average at the end: {result.load}.", "",
                  common.md_table(["endpoint", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors",
                                   "statuses"], endpoint_rows(result)), "",
                  "API process memory (RSS MB) over the window: " + "; ".join(
                      "server " + str(i) + ": " + ", ".join(f"{t:.0f}s {m:.0f}" for t, m in series)
                      for i, series in enumerate(result.rss_mb)), ""]
        errors = {e: n for e, n in _count_errors(result).items()}
        if errors:
            parts += ["Errors by kind: " + ", ".join(f"{k}: {v}" for k, v in errors.items()), ""]
    memory = {f"{r.label}, server {i}": series for r in results for i, series in enumerate(r.rss_mb)}
    png = out.with_suffix(".png")
    parts += ["## API process memory", "",
              "Growth per 10-minute window of the measured time (bench/load_memory.py; a process fills its "
              "pools and caches in its first minutes, so flat means the later windows, not start -> end):", "",
              load_memory.growth_table(memory), "", f"![API process RSS over the run]({png.name})", ""]
    text = "\n".join(parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    load_memory.draw_chart(memory, png, "API process memory under bench/load.py")
    return text


def _count_errors(result: RunResult) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for endpoint, errors in result.recorder.errors.items():
        for error in errors:
            counts[f"{endpoint} {error}"] += 1
    return dict(counts)


def _commit() -> str:
    import subprocess

    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=common.REPO_ROOT, capture_output=True,
                            text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=common.REPO_ROOT,
                           capture_output=True, text=True, check=False).stdout.strip()
    return (result.stdout.strip() or "?") + (" (+ uncommitted changes)" if dirty else "")


def main() -> int:
    common.stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 2], help="API process counts to run (1 2)")
    parser.add_argument("--seconds", type=float, default=300.0, help="measured seconds per run (300)")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before measuring (15)")
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--readers", type=int, default=10)
    parser.add_argument("--report-ms", type=float, default=100.0, help="report pace per worker (100 ms)")
    parser.add_argument("--saturate", type=float, default=0.0,
                        help="also run unpaced (reports back to back) this many seconds per server count")
    parser.add_argument("--database-url", help="server for a throwaway database (default: as the tests)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    admin = common.admin_url(args.database_url)
    results = []
    with tempfile.TemporaryDirectory(prefix="hpo-load-") as scratch:
        for servers in args.servers:
            results.append(run_once(admin, servers, args, args.report_ms, args.seconds, f"paced-{servers}",
                                    Path(scratch)))
            print(common.text_table(SUMMARY_HEADERS, [summary_row(results[-1])]), flush=True)
        if args.saturate:
            for servers in args.servers:
                results.append(run_once(admin, servers, args, 0.0, args.saturate, f"unpaced-{servers}",
                                        Path(scratch)))
                print(common.text_table(SUMMARY_HEADERS, [summary_row(results[-1])]), flush=True)
    print(write_report(results, args, admin, args.out))
    return 0 if not any(errors for r in results for errors in r.recorder.errors.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

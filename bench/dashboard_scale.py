"""Dashboard at scale: one study with 100,000 trials and 1,000,000 reports on PostgreSQL.

Seeds a throwaway database (bench/dashboard_seed.py: real Hyperband shape, COPY), starts
`hpo serve` on it as a user would, and measures:

1. each page's API calls, as the dashboard makes them: the first call after the server
   started (cold), calls after the study's version moved (what a live study costs: the
   per-version caches miss; the history is incremental), and repeated calls (cached);
2. each page in headless Chromium: time to DOMContentLoaded and until every chart and table
   of the page is drawn, first with a cold server and browser, then again;
3. the cost of quiet pages: N open live streams for S seconds with no writes, against no
   stream at all (server CPU, database transactions and backend CPU);
4. live latency: a report sent to a running trial until an open stream delivers it.

Prints a table and writes bench/results/dashboard_scale.md.

Usage (from the repository root):

    .venv/bin/python bench/dashboard_scale.py                       # 100k trials, 1M reports
    .venv/bin/python bench/dashboard_scale.py --trials 20000 --reports 200000   # quicker
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    REPO_ROOT,
    admin_url,
    bootstrap_token,
    database_name,
    db_upgrade,
    hpo_server,
    load_average,
    md_table,
    postgres_cpu_seconds,
    process_cpu_seconds,
    redact,
    server_version,
    throwaway_database,
)
from bench.dashboard_seed import SeedResult, seed  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results" / "dashboard_scale.md"
CHROMIUM = os.environ.get("HPO_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def page_calls(s: SeedResult) -> dict[str, list[str]]:
    """The API calls each page makes on load (as app.js / page_*.js issue them)."""
    study = f"/api/v1/studies/{s.study_id}"
    return {
        "Studies": ["/api/v1/studies?limit=50&offset=0"],
        "Study": [study, f"{study}/history?max_points=2000", f"{study}/curves?max_trials=100&top=10&max_points=100",
                  f"{study}/hyperband", f"{study}/parallel?max_points=500&top=50", f"{study}/importance",
                  f"{study}/extensions", f"{study}/trial-table?sort=number&limit=50&offset=0"],
        "Study: trials table": [f"{study}/trial-table?sort=-value&limit=50&offset=0",
                                f"{study}/trial-table?sort=value&limit=50&offset=50000",
                                f"{study}/trial-table?state=completed&param=learning_rate:0.0001:0.001"
                                "&param=optimizer%3Dlion&sort=param:lora_rank&limit=50&offset=0"],
        "Trial (20,000 reports)": [f"/api/v1/trials/{s.long_trial_id}/overview?max_points=2000"],
        "Trial (running)": [f"/api/v1/trials/{s.running_trial_id}/overview?max_points=2000"],
        "Workers": ["/api/v1/workers"],
    }


READY = {  # what must be on screen for a page to count as loaded
    "Studies": ("/#/", ["[data-testid=studies-table]"]),
    "Study": ("/#/study/{study}", ["[data-testid=history-chart] canvas", "[data-testid=curves-chart] canvas",
                                   "[data-testid=parallel-chart] canvas", "[data-testid=importance-chart] canvas",
                                   "[data-testid=hyperband-table]", "[data-testid=trials-table]"]),
    "Trial (20,000 reports)": ("/#/trial/{long}", ["[data-testid=trial-chart] canvas", "[data-testid=attempts-table]"]),
    "Workers": ("/#/workers", ["[data-testid=workers-table]"]),
}


# Views of a whole study are reused for up to a second whatever the version (a study that
# changes many times a second is recomputed at most once a second); "live" calls wait that out.
LIVE_WAIT_S = 1.1


def bump(url: str, study_id: int) -> None:
    """Move the study's version, as a result arriving would: per-version caches miss."""
    import psycopg

    from tests.support.postgres import libpq_url

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("UPDATE studies SET version = version + 1 WHERE id = %s", (study_id,))


def timed_get(client: httpx.Client, path: str) -> tuple[float, int]:
    start = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - start) * 1000
    response.raise_for_status()
    return elapsed, len(response.content)


def time_api(base: str, url: str, s: SeedResult, repeats: int, headers: dict[str, str]) -> list[list[Any]]:
    rows = []
    with httpx.Client(base_url=base, timeout=120, headers=headers) as client:
        for page, calls in page_calls(s).items():
            for path in calls:
                cold, size = timed_get(client, path)
                live = []
                for _ in range(repeats):
                    bump(url, s.study_id)
                    time.sleep(LIVE_WAIT_S)  # past the views' max age: every per-version cache misses
                    live.append(timed_get(client, path)[0])
                cached = [timed_get(client, path)[0] for _ in range(repeats)]
                rows.append([page, f"`{path.split('/api/v1', 1)[1]}`", f"{cold:.0f}", f"{statistics.median(live):.0f}",
                             f"{max(live):.0f}", f"{statistics.median(cached):.0f}", f"{size / 1024:.0f}"])
                print(f"  {page:24s} {path[:70]:70s} cold {cold:7.0f} ms  live {statistics.median(live):6.0f} ms")
    return rows


def time_browser(base: str, url: str, s: SeedResult, label: str, token: str) -> list[list[Any]]:
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for page_name, (route, selectors) in READY.items():
            bump(url, s.study_id)
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.request.post(f"{base}/api/v1/session", data={"token": token})  # the dashboard's cookie
            tab = context.new_page()
            answered: list[tuple[float, str]] = []  # when each API response (not the event stream) arrived

            def on_response(response: Any, answered: list[tuple[float, str]] = answered) -> None:
                if "/api/v1/" in response.url and not response.url.split("?")[0].endswith("/events"):
                    answered.append((time.perf_counter(), response.url.split("/api/v1", 1)[1].split("?")[0]))

            tab.on("response", on_response)
            start = time.perf_counter()
            tab.goto(base + route.format(study=s.study_id, long=s.long_trial_id), wait_until="commit")
            for selector in selectors:
                tab.wait_for_selector(selector, timeout=60_000)
            ready = (time.perf_counter() - start) * 1000
            dcl = tab.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
            errors = tab.evaluate("document.querySelectorAll('.message.error').length")
            last = (max(answered)[0] - start) * 1000 if answered else 0.0
            last_call = f"`{max(answered)[1]}`" if answered else ""
            rows.append([page_name, label, f"{dcl:.0f}", f"{last:.0f}", last_call, f"{ready:.0f}",
                         "none" if not errors else f"{errors} shown"])
            print(f"  {page_name:24s} {label:14s} DOMContentLoaded {dcl:6.0f} ms, API {last:6.0f} ms, "
                  f"drawn {ready:6.0f} ms")
            context.close()
        browser.close()
    return rows


def xact_commits(url: str) -> int:
    import psycopg

    from tests.support.postgres import libpq_url

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


def quiet_cost(base: str, url: str, pid: int, s: SeedResult, streams: int, seconds: float,
               headers: dict[str, str]) -> list[list[Any]]:
    """Server CPU, database transactions and backend CPU over ``seconds`` with ``streams`` open pages."""
    rows = []
    for count in (0, 1, streams):
        stop = threading.Event()

        def listen(stop: threading.Event = stop) -> None:
            path = f"{base}/api/v1/studies/{s.study_id}/events"
            while not stop.is_set():
                with httpx.stream("GET", path, params={"max_seconds": seconds + 30}, headers=headers,
                                  timeout=seconds + 60) as response:
                    for _line in response.iter_lines():
                        if stop.is_set():
                            return

        threads = [threading.Thread(target=listen, daemon=True) for _ in range(count)]
        for thread in threads:
            thread.start()
        time.sleep(2.0)  # connected, poller running
        cpu, db_cpu, xacts = process_cpu_seconds(pid), postgres_cpu_seconds(database_name(url)), xact_commits(url)
        time.sleep(seconds)
        time.sleep(1.0)  # statistics reach pg_stat_database with a delay
        rows.append([count, f"{seconds:.0f}", f"{(process_cpu_seconds(pid) - cpu) * 1000:.0f}",
                     f"{(postgres_cpu_seconds(database_name(url)) - db_cpu) * 1000:.0f}",
                     f"{xact_commits(url) - xacts - 2}"])  # minus our own two statistics reads
        stop.set()
        print(f"  {count:3d} open pages for {seconds:.0f} s: server CPU {rows[-1][2]} ms, "
              f"database CPU {rows[-1][3]} ms, {rows[-1][4]} transactions")
        for thread in threads:
            thread.join(timeout=seconds + 40)
    return rows


def live_latency(base: str, s: SeedResult, samples: int, headers: dict[str, str]) -> list[float]:
    """Seconds from posting a report to a running trial until an open stream delivers it."""
    latencies: list[float] = []
    arrived = threading.Event()
    sent_at = [0.0]

    def listen() -> None:
        path = f"{base}/api/v1/studies/{s.study_id}/events"
        with httpx.stream("GET", path, params={"max_seconds": 10 * samples + 30}, headers=headers,
                          timeout=None) as response:
            event = ""
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "reports":
                    if any(r["trial_id"] == s.running_trial_id for r in json.loads(line[5:])):
                        latencies.append(time.perf_counter() - sent_at[0])
                        arrived.set()
                if len(latencies) >= samples:
                    return

    threading.Thread(target=listen, daemon=True).start()
    time.sleep(2.0)
    with httpx.Client(base_url=base, timeout=30, headers=headers) as client:
        for k in range(samples):
            arrived.clear()
            sent_at[0] = time.perf_counter()
            client.post(f"/api/v1/trials/{s.running_trial_id}/reports", json={
                "lease_token": f"token-{s.running_trial_id}",
                "reports": [{"step": 100.0 + k, "metrics": {"loss": 0.5 - k / 100}}]}).raise_for_status()
            arrived.wait(timeout=10)
            time.sleep(0.7)  # land at different points of the poll interval
    return latencies


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--reports", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--streams", type=int, default=20, help="open pages for the quiet-cost measurement")
    parser.add_argument("--quiet-seconds", type=float, default=10.0)
    parser.add_argument("--admin-url", help="PostgreSQL server to create the throwaway database on")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    admin = admin_url(args.admin_url)
    started = dt.datetime.now(dt.UTC)
    load_at_start = load_average()
    with throwaway_database(admin) as url:
        db_upgrade(url)
        from tests.support.postgres import libpq_url

        t0 = time.perf_counter()
        seeded = seed(libpq_url(url), trials=args.trials, reports=args.reports)
        seed_s = time.perf_counter() - t0
        print(f"seeded {seeded} in {seed_s:.0f} s")
        logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"dashboard-scale-{os.getpid()}"
        logs.mkdir(parents=True, exist_ok=True)
        token = bootstrap_token(url, logs) or ""
        headers = {"Authorization": f"Bearer {token}"}
        with hpo_server(url, logs / "server.log") as server:
            print("browser, cold server:")
            first = time_browser(server.url, url, seeded, "cold server", token)
            print("API calls:")
            api_rows = time_api(server.url, url, seeded, args.repeats, headers)
            print("browser, again:")
            again = time_browser(server.url, url, seeded, "again", token)
            print("quiet pages:")
            quiet = quiet_cost(server.url, url, server.pid, seeded, args.streams, args.quiet_seconds, headers)
            latency = live_latency(server.url, seeded, 5, headers)
            memory = rss_mb(server.pid)
    report = render(args, seeded, seed_s, api_rows, first + again, quiet, latency, memory, admin, started,
                    load_at_start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)


def render(args: argparse.Namespace, s: SeedResult, seed_s: float, api_rows: list[list[Any]],
           browser_rows: list[list[Any]], quiet: list[list[Any]], latency: list[float], memory: float,
           admin: str, started: dt.datetime, load_at_start: str) -> str:
    sizes = "" if (args.trials, args.reports) == (100_000, 1_000_000) else \
        f" --trials {args.trials} --reports {args.reports}"
    command = f"`.venv/bin/python bench/dashboard_scale.py{sizes}`"
    return "\n".join([
        "# Dashboard at scale", "",
        f"{command}, {started:%Y-%m-%d %H:%M} UTC. One study: {s.trials:,} trials, {s.reports:,} reports, "
        f"{s.rung_results:,} rung results, {s.decisions:,} decisions (Hyperband R=81, eta=3; seeded with COPY in "
        f"{seed_s:.0f} s). PostgreSQL {server_version(admin)} at {redact(admin)}; {platform.machine()}, "
        f"{os.cpu_count()} CPUs (shared: load average {load_at_start} at the start, {load_average()} at the end); "
        "one `hpo serve` process.", "",
        "## API calls per page (milliseconds; KiB of JSON)", "",
        "cold: first call after the server started. live: after the study's version moved (median and worst of "
        f"{args.repeats}, each {LIVE_WAIT_S:g} s after the change, past the views' one-second reuse); every "
        "per-version cache misses, as on a study that is running. cached: repeated calls.", "",
        md_table(["page", "call", "cold", "live", "live worst", "cached", "KiB"], api_rows, "llrrrrr"), "",
        "## Pages in headless Chromium (milliseconds from navigation)", "",
        "last API answer: the page's last API response arrived; drawn: every chart and table of the page is on "
        "screen (each chart's data downsampled by the server).", "",
        md_table(["page", "run", "DOMContentLoaded", "last API answer", "last call", "drawn", "errors shown"],
                 browser_rows,
                 "llrrlrl"), "",
        "## Quiet pages", "",
        f"Open live streams on the study (no writes) for {args.quiet_seconds:.0f} s. One poll a second serves every "
        "open page of a server.", "",
        md_table(["open pages", "seconds", "server CPU ms", "database CPU ms", "transactions"], quiet), "",
        f"Live latency, report stored -> delivered to an open page: median {statistics.median(latency or [0]):.2f} s, "
        f"worst {max(latency or [0]):.2f} s ({len(latency)} samples; the poll runs once a second). "
        f"Server memory after the run: {memory:.0f} MiB RSS.", "",
    ])


if __name__ == "__main__":
    main()

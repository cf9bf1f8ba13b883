"""`hpo tune` against a live server and workers: every exit code, the JSON and JUnit files, reruns."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpo_service.db.migrate import upgrade
from tests.e2e.harness import Processes, free_port, wait_for

pytestmark = pytest.mark.slow


def spec(name: str, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": "synthetic",
        "scheduler": {"kind": "hyperband", "min_budget": 1, "max_budget": 9, "eta": 3},
        "sampler": {"kind": "random", "seed": 5},
        "trainer": {"name": "synthetic", "params": {"sleep_per_unit": 0.005}},
    }
    base.update(changes)
    return base


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str) -> Iterator[tuple[Processes, str]]:
    from tests.support import postgres as pg

    url = pg.create_throwaway_database(postgres_admin_url)
    upgrade(url)
    procs = Processes(tmp_path_factory.mktemp("tune"), url)
    server = procs.server()
    for i in range(2):
        procs.worker(server, f"worker-{i}")
    yield procs, server
    procs.stop_all()
    pg.drop_database(postgres_admin_url, url)


def tune(live: tuple[Processes, str], tmp: Path, study: dict[str, Any] | str, *args: str,
         server: str | None = None) -> tuple[int, dict[str, Any], str]:
    procs, default_server = live
    path = tmp / "study.yaml"
    path.write_text(study if isinstance(study, str) else yaml.safe_dump(study))
    out = tmp / "result.json"
    out.unlink(missing_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "hpo_service.cli", "tune", "-f", str(path), "--server", server or default_server,
         "--wait", "--json", str(out), "--junit", str(tmp / "junit.xml"), *args],
        env=procs.env, capture_output=True, text=True, timeout=180,
    )
    document = json.loads(out.read_text()) if out.exists() else {}
    return result.returncode, document, result.stderr


def test_target_met_exits_0_and_writes_the_reports(live: tuple[Processes, str], tmp_path: Path) -> None:
    code, result, log = tune(live, tmp_path, spec("met"), "--target", "loss<=10", "--target", "accuracy>=0.0")
    assert code == 0, log
    assert result["schema"] == "hpo-tune-result/1" and result["outcome"] == "target_met"
    assert result["study"]["status"] == "completed" and result["best"]["budget"] == 9
    assert set(result["best"]["params"]) == {"learning_rate", "weight_decay", "dropout", "rank", "optimizer"}
    assert [t["met"] for t in result["targets"]] == [True, True]
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "0"
    assert "best trials" in log and "PASS target loss<=10" in log


def test_rerun_attaches_to_the_same_study(live: tuple[Processes, str], tmp_path: Path) -> None:
    _, first, _ = tune(live, tmp_path, spec("rerun"))
    code, second, _ = tune(live, tmp_path, spec("rerun"))
    assert code == 0 and second["study"]["id"] == first["study"]["id"]


def test_target_missed_exits_2(live: tuple[Processes, str], tmp_path: Path) -> None:
    code, result, _ = tune(live, tmp_path, spec("missed"), "--target", "loss<=-1")
    assert code == 2 and result["outcome"] == "missed"
    assert result["targets"][0]["met"] is False
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"


def test_baseline_beaten_or_not(live: tuple[Processes, str], tmp_path: Path) -> None:
    # A tiny random study is the weak baseline; the same study as its own baseline cannot beat itself.
    weak = spec("weak-baseline", scheduler={"kind": "random", "min_budget": 1, "max_budget": 1},
                limits={"max_trials": 2})
    assert tune(live, tmp_path, weak)[0] == 0
    code, result, _ = tune(live, tmp_path, spec("strong"), "--baseline", "weak-baseline")
    assert code == 0 and result["baseline"]["beaten"] is True
    code, result, _ = tune(live, tmp_path, spec("strong"), "--baseline", "strong")
    assert code == 2 and result["baseline"]["beaten"] is False


def test_budget_exhausted_exits_3(live: tuple[Processes, str], tmp_path: Path) -> None:
    code, result, _ = tune(live, tmp_path, spec("budget", limits={"total_budget": 4}), "--target", "loss<=-1")
    assert code == 3 and result["outcome"] == "budget_exhausted"


def test_timeout_exits_3(live: tuple[Processes, str], tmp_path: Path) -> None:
    slow = spec("slow", trainer={"name": "synthetic", "params": {"sleep_per_unit": 5}})
    code, result, _ = tune(live, tmp_path, slow, "--timeout", "2s")
    assert code == 3 and result["outcome"] == "timed_out"


def test_unreachable_server_exits_4(live: tuple[Processes, str], tmp_path: Path) -> None:
    code, result, log = tune(live, tmp_path, spec("x"), server="http://127.0.0.1:1")
    assert code == 4 and result["outcome"] == "unreachable" and "cannot reach" in log


@pytest.mark.parametrize(("case", "study", "args", "names"), [
    ("invalid spec", spec("bad", scheduler={"kind": "hyperband", "min_budget": -1}), [], "scheduler.min_budget"),
    ("unknown trainer", spec("bad", trainer={"name": "nope"}), [], "trainer 'nope' is not registered"),
    ("bad target", spec("bad"), ["--target", "loss<"], "METRIC OP NUMBER"),
    ("bad timeout", spec("bad"), ["--timeout", "soon"], "--timeout"),
    ("not yaml", "{{{", [], "not valid YAML"),
])
def test_bad_usage_exits_64(live: tuple[Processes, str], tmp_path: Path, case: str, study: Any, args: list[str],
                            names: str) -> None:
    code, result, log = tune(live, tmp_path, study, *args)
    assert code == 64, log
    assert names in result["message"]


def test_a_wait_rides_out_a_restart_of_the_server(live: tuple[Processes, str], tmp_path: Path) -> None:
    """The server `hpo tune` polls is killed mid-study and comes back 5 s later (a deploy): far
    longer than the client's retries. The wait goes on and the gate still answers; before, the
    job ended with exit 4 "unreachable" while the study went on."""
    procs, live_server = live
    port = free_port()
    own = procs.server(port=port)
    path, out = tmp_path / "study.yaml", tmp_path / "result.json"
    path.write_text(yaml.safe_dump(spec("restart", trainer={"name": "synthetic", "params": {"sleep_per_unit": 0.2}})))
    waiting = subprocess.Popen(
        [sys.executable, "-m", "hpo_service.cli", "tune", "-f", str(path), "--server", own, "--wait",
         "--timeout", "3m", "--json", str(out)],
        env=procs.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        with procs.client(live_server) as client:
            study = wait_for(lambda: client.list_studies(name="restart")["items"], 60, "the study")[0]
            # A worker of its own (the module's workers may be busy with slower studies).
            procs.worker(live_server, "restart-worker", "--study", str(study["id"]))
            wait_for(lambda: client.get_study(study["id"])["trial_counts"].get("completed", 0)
                     + client.get_study(study["id"])["trial_counts"].get("paused", 0), 60, "a first segment")
        procs.servers[own].kill()
        procs.servers[own].wait()
        time.sleep(5)
        procs.server(port=port)
        output, _ = waiting.communicate(timeout=240)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, output
    assert "server unreachable for" in output and "still waiting" in output
    result = json.loads(out.read_text())
    assert result["outcome"] == "completed" and result["study"]["status"] == "completed"

"""Every `hpo` read/control command against a live server, with --json, and their exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpo_service.db.migrate import upgrade
from tests.e2e.harness import Processes, wait_for

pytestmark = pytest.mark.slow

SPEC = {
    "name": "cli-study",
    "objective": {"metric": "loss", "direction": "minimize"},
    "search_space": "synthetic",
    "scheduler": {"kind": "hyperband", "min_budget": 1, "max_budget": 9, "eta": 3},
    "sampler": {"kind": "tpe", "seed": 2},
    "trainer": {"name": "synthetic", "params": {"sleep_per_unit": 0.005}},
}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str) -> Iterator[tuple[Processes, str]]:
    from tests.support import postgres as pg

    url = pg.create_throwaway_database(postgres_admin_url)
    upgrade(url)
    procs = Processes(tmp_path_factory.mktemp("cli"), url)
    yield procs, procs.server()
    procs.stop_all()
    pg.drop_database(postgres_admin_url, url)


def hpo(live: tuple[Processes, str], *args: str, token: str | None = None) -> tuple[int, Any, str]:
    procs, server = live
    env = dict(procs.env)
    if token is not None:
        env["HPO_TOKEN"] = token
    result = subprocess.run([sys.executable, "-m", "hpo_service.cli", *args, "--server", server],
                            env=env, capture_output=True, text=True, timeout=120)
    try:
        payload = json.loads(result.stdout) if result.stdout.strip() else None
    except json.JSONDecodeError:
        payload = result.stdout
    return result.returncode, payload, result.stderr


def test_the_study_commands(live: tuple[Processes, str], tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    code, study, _ = hpo(live, "study", "create", "-f", str(spec_file), "--json")
    assert code == 0 and study["name"] == "cli-study"
    code, again, _ = hpo(live, "study", "create", "-f", str(spec_file), "--json")
    assert code == 0 and again["id"] == study["id"]  # idempotent

    procs, server = live
    worker = procs.worker(server, "cli-worker")
    code, listing, _ = hpo(live, "study", "list", "--json")
    assert code == 0 and [s["id"] for s in listing["items"]] == [study["id"]]
    wait_for(lambda: hpo(live, "study", "show", "cli-study", "--json")[1]["status"] == "completed", 120,
             "the study to finish", interval=1.0)
    worker.terminate()

    code, shown, _ = hpo(live, "study", "show", str(study["id"]), "--json")
    assert code == 0 and shown["rungs"] and shown["trial_counts"].get("completed")
    code, best, _ = hpo(live, "study", "best", "cli-study", "--json")
    assert code == 0 and best["budget"] == 9
    code, page, _ = hpo(live, "study", "trials", "cli-study", "--state", "completed", "--json")
    assert code == 0 and page["total"] == len(page["items"]) >= 1
    code, decisions, _ = hpo(live, "study", "decisions", "cli-study", "--json")
    assert code == 0 and decisions[-1]["kind"] == "completed"
    code, text, _ = hpo(live, "study", "show", "cli-study")
    assert code == 0 and "brackets and rungs" in text
    code, _, err = hpo(live, "study", "export-adapter", "cli-study", "--out", str(tmp_path / "adapter"))
    assert code == 64 and "produces no adapter" in err
    code, _, err = hpo(live, "study", "pause", "cli-study")
    assert code == 1 and "cannot pause" in err
    code, _, err = hpo(live, "study", "show", "no-such-study")
    assert code == 1 and "no study named" in err


def test_the_token_commands(live: tuple[Processes, str]) -> None:
    code, created, _ = hpo(live, "token", "create", "--name", "ci", "--scope", "read", "--json")
    assert code == 0 and created["token"].startswith("hpo_")
    code, rows, _ = hpo(live, "token", "list", "--json")
    assert code == 0 and "ci" in [r["name"] for r in rows] and all("token" not in r for r in rows)
    code, _, err = hpo(live, "token", "create", "--name", "x", "--scope", "admin", token=created["token"])
    assert code == 1 and "may not" in err  # a read token cannot mint tokens
    code, revoked, _ = hpo(live, "token", "revoke", str(created["id"]), "--json")
    assert code == 0 and revoked["revoked_at"]
    code, _, err = hpo(live, "study", "list", token=created["token"])
    assert code == 1 and "revoked" in err
    code, _, err = hpo(live, "token", "create", "--name", "x", "--scope", "boss")
    assert code == 64 and "scope" in err

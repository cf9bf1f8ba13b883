"""The terminal side of `hpo tune`: progress while waiting, the summary table, files, exit code."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from hpo_service.client import HpoClient
from hpo_service.errors import HpoError, InvalidInput, ServiceUnavailable
from hpo_service.tune import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Outcome,
    Target,
    UsageError,
    judge,
    parse_duration,
    top_trials,
    wait_for_study,
)
from hpo_service.tune_report import write_json, write_junit

console = Console(stderr=True)


class Progress:
    """A live status line on a terminal; one plain line per change otherwise (CI logs)."""

    def __init__(self) -> None:
        self._last = ""
        self._status = console.status("waiting for the study...") if console.is_terminal else None
        self._started = time.monotonic()

    def __call__(self, study: dict[str, Any]) -> None:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(study["trial_counts"].items()))
        best = f"{study['best']['value']:.6g}" if study["best"] else "-"
        self._show(f"study {study['id']} {study['status']}: {study['trials_created']} trials ({counts}); "
                   f"best {best}; budget {study['budget_spent']:.6g}")

    def unreachable(self, seconds: float, error: HpoError) -> None:
        """The server did not answer a poll; the wait goes on (see ``wait_for_study``)."""
        self._show(f"server unreachable for {seconds:.0f}s, still waiting: {error.message}")

    def _show(self, line: str) -> None:
        stamped = f"[{time.monotonic() - self._started:6.0f}s] {line}"
        if self._status is not None:
            self._status.update(stamped)
        elif line != self._last:
            console.print(stamped, soft_wrap=True, highlight=False)
        self._last = line

    def __enter__(self) -> "Progress":
        if self._status is not None:
            self._status.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._status is not None:
            self._status.stop()


def _print_summary(outcome: Outcome, trials: list[dict[str, Any]]) -> None:
    if trials:
        table = Table("trial", "value", "budget", "params", title="best trials")
        for t in trials:
            params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(t["params"].items()))
            table.add_row(str(t["id"]), f"{t['value']:.6g}" if t["value"] is not None else "-",
                          f"{t['budget_done']:g}", params)
        console.print(table)
    for check in outcome.targets:
        console.print(f"{'PASS' if check['met'] else 'FAIL'} target {check['expression']} (actual {check['actual']})")
    if outcome.baseline:
        base = outcome.baseline
        console.print(f"{'PASS' if base['beaten'] else 'FAIL'} baseline {base['study']}: {base['value']:.6g}")
    console.print(f"{outcome.outcome}: {outcome.message} (exit {outcome.exit_code})", highlight=False)


def _load_spec(file: Path) -> dict[str, Any]:
    try:
        spec = yaml.safe_load(file.read_text())
    except OSError as error:
        raise UsageError(f"cannot read {file}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise UsageError(f"{file} is not valid YAML/JSON: {error}") from None
    if not isinstance(spec, dict):
        raise UsageError(f"{file} must hold a mapping (the study spec)")
    return spec


def run_tune(*, file: Path, server: str, token: str | None, wait: bool, timeout: str | None, targets: list[str],
             baseline: str | None, json_out: Path | None, junit_out: Path | None,
             export_adapter: Path | None = None) -> int:
    started = time.monotonic()
    outcome: Outcome
    try:
        parsed = [Target.parse(t) for t in targets]
        timeout_s = parse_duration(timeout) if timeout else None
        spec = _load_spec(file)
        with HpoClient(server, token=token, retries=3) as client:
            study = client.create_study(spec)
            console.print(f"study {study['id']} ({study['name']}) on {server}", highlight=False)
            if not wait:
                outcome = Outcome(EXIT_OK, "submitted", "submitted; not waiting (pass --wait to gate on it)", study)
            else:
                with Progress() as progress:
                    study, timed_out = wait_for_study(client, study["id"], timeout_s, progress,
                                                      on_unreachable=progress.unreachable)
                outcome = judge(client, study, timed_out, parsed, baseline)
                outcome.top_trials = top_trials(client, study)
                if export_adapter is not None and outcome.best is not None:
                    from hpo_service.workers.artifacts import unpack_adapter_archive

                    folder = unpack_adapter_archive(client.best_adapter(study["id"]), export_adapter)
                    console.print(f"best adapter written to {folder}", highlight=False)
    except (UsageError, InvalidInput) as error:
        outcome = Outcome(EXIT_USAGE, "usage_error", str(error.message if isinstance(error, HpoError) else error))
    except ServiceUnavailable as error:
        outcome = Outcome(EXIT_FAILED, "unreachable", f"{error.message} (check --server and that it is running)")
    except HpoError as error:
        outcome = Outcome(EXIT_FAILED, "service_error", error.message)
    outcome.elapsed_s = time.monotonic() - started
    _print_summary(outcome, outcome.top_trials)
    if json_out:
        write_json(json_out, outcome, server)
    if junit_out:
        write_junit(junit_out, outcome)
    return outcome.exit_code

"""Human-readable output of the CLI (tables); `--json` bypasses all of this."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

out = Console()


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}"


def render_studies(studies: list[dict[str, Any]]) -> None:
    if not studies:
        out.print("no studies yet: create one with `hpo study create -f spec.yaml`")
        return
    table = Table("id", "name", "status", "scheduler", "objective", "trials", "best", "budget spent")
    for s in studies:
        spec = s["spec"]
        objective = f"{spec['objective']['metric']} ({spec['objective']['direction'][:3]})"
        best = s["best"]["value"] if s["best"] else None
        table.add_row(str(s["id"]), s["name"], s["status"], spec["scheduler"]["kind"], objective,
                      str(s["trials_created"]), fmt(best), fmt(s["budget_spent"]))
    out.print(table)


def render_study(study: dict[str, Any]) -> None:
    spec = study["spec"]
    scheduler = spec["scheduler"]
    out.print(f"[bold]study {study['id']}[/bold] {study['name']} - {study['status']}")
    out.print(f"  objective: {spec['objective']['direction']} {spec['objective']['metric']}; "
              f"scheduler {scheduler['kind']} (budget {scheduler['min_budget']:g}..{scheduler['max_budget']:g}, "
              f"eta {scheduler['eta']}); sampler {spec['sampler']['kind']}; trainer {spec['trainer']['name']}")
    counts = ", ".join(f"{state} {n}" for state, n in sorted(study["trial_counts"].items())) or "none yet"
    out.print(f"  trials: {study['trials_created']} ({counts}); budget spent {fmt(study['budget_spent'])}")
    if study["best"]:
        best = study["best"]
        out.print(f"  best: {fmt(best['value'])} (trial {best['trial_id']} at budget {fmt(best['budget'])})")


def render_rungs(rungs: list[dict[str, Any]]) -> None:
    if not rungs:
        return
    table = Table("bracket", "rung", "budget", "finished", "promoted", "best value", title="brackets and rungs")
    for r in rungs:
        table.add_row(str(r["bracket"]), str(r["rung"]), fmt(r["budget"]), str(r["results"]),
                      str(r["promoted"]), fmt(r["best_value"]))
    out.print(table)


def render_best(best: dict[str, Any]) -> None:
    trial = best["trial"]
    out.print(f"[bold]best trial {trial['id']}[/bold] (number {trial['number']}): value {fmt(best['value'])} "
              f"at budget {fmt(best['budget'])}, state {trial['state']}")
    table = Table("parameter", "value")
    for name, value in sorted(trial["params"].items()):
        table.add_row(name, fmt(value) if isinstance(value, float) else str(value))
    out.print(table)


def render_trials(page: dict[str, Any]) -> None:
    table = Table("id", "#", "state", "bracket", "rung", "budget", "value", "attempt", "params")
    for t in page["items"]:
        params = ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in sorted(t["params"].items()))
        table.add_row(str(t["id"]), str(t["number"]), t["state"], str(t["bracket"]), str(t["rung"]),
                      f"{t['budget_done']:g}/{t['budget_target']:g}", fmt(t["value"]), str(t["attempt"]), params)
    out.print(table)
    shown = len(page["items"])
    out.print(f"{page['offset'] + 1 if shown else 0}-{page['offset'] + shown} of {page['total']}")


def render_tokens(rows: list[dict[str, Any]]) -> None:
    table = Table("id", "name", "project", "scope", "prefix", "created", "expires", "revoked", "last used")
    for t in rows:
        table.add_row(str(t["id"]), t["name"], t["project"], t["scope"], t["prefix"] + "…",
                      (t["created_at"] or "")[:16], (t["expires_at"] or "-")[:16], (t["revoked_at"] or "-")[:16],
                      (t["last_used_at"] or "-")[:16])
    out.print(table)


def render_transfer(report: dict[str, Any]) -> None:
    out.print(f"[bold]muP transfer[/bold] on {report['param']}: stage {report['stage']} ({report['stage_name']}), "
              f"target {report['target']}")
    table = Table("proxy", "trials", "best value", "compute", title="stage 1: tuning at proxy width")
    for p in report["proxies"]:
        table.add_row(str(p["width"]), str(p["trials"]), fmt(p["best_value"]), fmt(p["compute"]))
    out.print(table)
    if report["transferred"]:
        out.print(f"stage 2: transferred configuration at width {report['target']}: "
                  f"{fmt(report['transferred']['value'])} (trial {report['transferred']['trial']})")
    if report["check"]:
        table = Table("grid step", "value", title="stage 3: transfer check")
        for row in report["check"]:
            table.add_row(str(row["grid_step"]), fmt(row["value"]))
        out.print(table)
        out.print(f"best of the check {fmt(report['best_check_value'])}; transfer gap "
                  f"{report['gap_grid_steps']} grid step(s)")
    if report["cost_vs_tuning_at_target"] is not None:
        out.print(f"tuning cost: {report['cost_vs_tuning_at_target']:.1%} of the same search at the target width, "
                  f"{report['cost_vs_one_target_run']:.2f}x one training at the target width")

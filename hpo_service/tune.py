"""`hpo tune`: submit a study, wait for it, gate on a target or a baseline (the CI contract).

Exit codes (also in the README):
  0  the target was met (without a target: the study completed, and beat the baseline if given)
  2  the study completed but missed the target / did not beat the baseline
  3  timed out, or the study's total budget ran out before the target was met
  4  the service or the workers failed (unreachable, study failed or cancelled, no trial finished)
  64 bad usage or an invalid spec (the message names the field)
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpo_service.client import HpoClient
from hpo_service.errors import HpoError, NotFound, ServiceUnavailable

EXIT_OK, EXIT_MISSED, EXIT_TIMEOUT, EXIT_FAILED, EXIT_USAGE = 0, 2, 3, 4, 64
RESULT_SCHEMA = "hpo-tune-result/1"
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq,
}
_TARGET = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(<=|>=|==|<|>)\s*([-+0-9.eE]+|nan|inf)\s*$")


class UsageError(ValueError):
    """Bad command-line input (exit 64)."""


@dataclass(frozen=True)
class Target:
    expression: str
    metric: str
    op: str
    threshold: float

    @classmethod
    def parse(cls, expression: str) -> "Target":
        match = _TARGET.match(expression)
        if not match:
            raise UsageError(f"--target {expression!r}: write METRIC OP NUMBER, e.g. 'eval_loss<=2.1' "
                             f"(OP is one of {', '.join(_OPERATORS)})")
        return cls(expression.strip(), match[1], match[2], float(match[3]))

    def check(self, value: float | None) -> bool:
        return value is not None and _OPERATORS[self.op](value, self.threshold)


def parse_duration(text: str) -> float:
    """'2h', '30m', '90s', '1h30m' or plain seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text.strip()):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise UsageError(f"--timeout {text!r}: use e.g. 2h, 30m, 90s or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


@dataclass
class Outcome:
    exit_code: int
    outcome: str
    message: str
    study: dict[str, Any] | None = None
    best: dict[str, Any] | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)
    baseline: dict[str, Any] | None = None
    elapsed_s: float = 0.0
    top_trials: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self, server: str) -> dict[str, Any]:
        study = self.study or {}
        return {
            "schema": RESULT_SCHEMA,
            "exit_code": self.exit_code,
            "outcome": self.outcome,
            "message": self.message,
            "server": server,
            "study": {key: study.get(key) for key in ("id", "name", "status", "trials_created", "trial_counts",
                                                     "budget_spent")} if study else None,
            "objective": study.get("spec", {}).get("objective") if study else None,
            "best": self.best,
            "targets": self.targets,
            "baseline": self.baseline,
            "elapsed_s": round(self.elapsed_s, 3),
        }


FINAL = ("completed", "failed", "cancelled")


UNREACHABLE_GRACE_S = 300.0  # how long a wait rides out an unreachable server


def wait_for_study(
    client: HpoClient, study_id: int, timeout_s: float | None, on_progress: Callable[[dict[str, Any]], None],
    poll_s: float = 2.0, on_unreachable: Callable[[float, ServiceUnavailable], None] | None = None,
    unreachable_grace_s: float = UNREACHABLE_GRACE_S,
) -> tuple[dict[str, Any], bool]:
    """Poll until the study is final or the timeout passes; returns (study, timed_out).

    A server that stops answering (a restart, a deploy, a database failover) does not end
    the wait: a CI job tuning for hours should not fail because the service restarted in
    the middle. Polling goes on, ``on_unreachable(seconds_unreachable, error)`` is told each
    time, and only an outage longer than ``unreachable_grace_s`` raises ServiceUnavailable
    (the timeout still applies; before the first answer it ends the wait unreachable too).
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    study: dict[str, Any] | None = None
    unreachable_since: float | None = None
    while True:
        try:
            study = client.get_study(study_id)
        except ServiceUnavailable as error:
            now = time.monotonic()
            unreachable_since = now if unreachable_since is None else unreachable_since
            if deadline is not None and now >= deadline and study is not None:
                return study, True  # timed out; the last answer the server gave
            if now - unreachable_since >= unreachable_grace_s or (deadline is not None and now >= deadline):
                raise
            if on_unreachable is not None:
                on_unreachable(now - unreachable_since, error)
        else:
            unreachable_since = None
            on_progress(study)
            if study["status"] in FINAL:
                return study, False
            if deadline is not None and time.monotonic() >= deadline:
                return study, True
        time.sleep(poll_s if deadline is None else max(0.05, min(poll_s, deadline - time.monotonic())))


def best_with_metrics(client: HpoClient, study_id: int) -> dict[str, Any] | None:
    try:
        best = client.best_trial(study_id)
    except NotFound:
        return None
    detail = client.get_trial(best["trial"]["id"])
    metrics: dict[str, Any] = {}
    for report in detail["reports"]:
        metrics.update({k: v for k, v in report["metrics"].items() if v is not None})
    return {"trial_id": best["trial"]["id"], "number": best["trial"]["number"], "value": best["value"],
            "budget": best["budget"], "params": best["trial"]["params"], "metrics": metrics}


def judge(client: HpoClient, study: dict[str, Any], timed_out: bool, targets: list[Target],
          baseline_ref: str | None) -> Outcome:
    objective = study["spec"]["objective"]
    best = best_with_metrics(client, study["id"])
    if timed_out:
        return Outcome(EXIT_TIMEOUT, "timed_out", f"study {study['id']} did not finish before the timeout",
                       study, best)
    if study["status"] in ("failed", "cancelled"):
        return Outcome(EXIT_FAILED, "failed", f"study {study['id']} is {study['status']}", study, best)
    if best is None:
        return Outcome(EXIT_FAILED, "failed", f"study {study['id']} completed without any finished trial "
                       "(did every trial fail? see `hpo study decisions`)", study, best)
    checks = []
    for target in targets:
        actual = best["value"] if target.metric == objective["metric"] else best["metrics"].get(target.metric)
        checks.append({"expression": target.expression, "metric": target.metric, "op": target.op,
                       "threshold": target.threshold, "actual": actual, "met": target.check(actual)})
    baseline = _baseline(client, baseline_ref, objective["direction"], best["value"]) if baseline_ref else None
    missed = [c["expression"] for c in checks if not c["met"]]
    if baseline is not None and not baseline["beaten"]:
        missed.append(f"baseline {baseline['study']} ({baseline['value']:.6g})")
    if not missed:
        outcome = "target_met" if targets else ("baseline_beaten" if baseline else "completed")
        return Outcome(EXIT_OK, outcome, f"best {objective['metric']} {best['value']:.6g}: all checks passed",
                       study, best, checks, baseline)
    total_budget = study["spec"]["limits"].get("total_budget")
    if total_budget is not None and study["budget_spent"] >= total_budget * 0.999:
        return Outcome(EXIT_TIMEOUT, "budget_exhausted", f"total budget {total_budget:g} ran out before: "
                       + ", ".join(missed), study, best, checks, baseline)
    return Outcome(EXIT_MISSED, "missed", "not met: " + ", ".join(missed), study, best, checks, baseline)


def _baseline(client: HpoClient, ref: str, direction: str, value: float) -> dict[str, Any]:
    study = client.find_study(ref)
    try:
        base_value = client.best_trial(study["id"])["value"]
    except NotFound:
        raise UsageError(f"--baseline {ref!r} has no finished trial to compare with") from None
    beaten = value < base_value if direction == "minimize" else value > base_value
    return {"study": study["name"], "study_id": study["id"], "value": base_value, "beaten": beaten,
            "delta": value - base_value}


def top_trials(client: HpoClient, study: dict[str, Any], n: int = 5) -> list[dict[str, Any]]:
    order = "value" if study["spec"]["objective"]["direction"] == "minimize" else "-value"
    try:
        return client.list_trials(study["id"], state="completed", order=order, limit=n)["items"]
    except HpoError:
        return []

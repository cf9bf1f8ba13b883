"""Machine-readable results of `hpo tune`: the versioned JSON document and a JUnit file."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from hpo_service.tune import Outcome


def write_json(path: Path, outcome: Outcome, server: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(outcome.as_json(server), indent=2, sort_keys=True) + "\n")


def junit_cases(outcome: Outcome) -> list[tuple[str, str | None]]:
    """(name, failure message or None) per check; one case for the study itself when there are no checks."""
    cases: list[tuple[str, str | None]] = []
    for check in outcome.targets:
        failure = None if check["met"] else f"{check['metric']} was {check['actual']}, needed {check['expression']}"
        cases.append((f"target {check['expression']}", failure))
    if outcome.baseline is not None:
        base = outcome.baseline
        failure = None if base["beaten"] else f"best {base['value'] + base['delta']:.6g} did not beat {base['value']:.6g}"
        cases.append((f"beats baseline {base['study']}", failure))
    if not cases or outcome.exit_code not in (0, 2):
        cases.append(("study finished", None if outcome.exit_code in (0, 2) else outcome.message))
    return cases


def write_junit(path: Path, outcome: Outcome) -> None:
    study_name = (outcome.study or {}).get("name", "study")
    cases = junit_cases(outcome)
    suite = ET.Element("testsuite", name=f"hpo-tune {study_name}", tests=str(len(cases)),
                       failures=str(sum(1 for _, f in cases if f)), time=f"{outcome.elapsed_s:.3f}")
    for name, failure in cases:
        case = ET.SubElement(suite, "testcase", classname=f"hpo.tune.{study_name}", name=name)
        if failure:
            ET.SubElement(case, "failure", message=failure).text = failure
    properties = ET.SubElement(suite, "properties")
    for key, value in _properties(outcome).items():
        ET.SubElement(properties, "property", name=key, value=str(value))
    path.parent.mkdir(parents=True, exist_ok=True)
    root = ET.Element("testsuites", name="hpo-tune")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _properties(outcome: Outcome) -> dict[str, Any]:
    props: dict[str, Any] = {"outcome": outcome.outcome, "exit_code": outcome.exit_code}
    if outcome.study:
        props["study_id"] = outcome.study["id"]
    if outcome.best:
        props["best_value"] = outcome.best["value"]
        props["best_trial"] = outcome.best["trial_id"]
    return props

"""The trial page's rung marks (orchestration/dashboard_build.rung_marks): what was decided at each
rung and why, including a raised study's reuse of a finished trial."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hpo_service.orchestration.dashboard_build import rung_marks

TRIAL_ID = 7


def result(rung: int, promoted: bool = False) -> SimpleNamespace:
    return SimpleNamespace(trial_id=TRIAL_ID, rung=rung, budget=3.0 ** rung, value=1.0 / (rung + 1), promoted=promoted)


def decision(kind: str, reason: str, trial_id: int = TRIAL_ID) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, kind=kind, reason=reason)


@pytest.mark.parametrize(
    ("state", "results", "decisions", "expected"),
    [
        pytest.param("paused", [result(0)], [], [("waiting", None)], id="paused at a rung, nothing decided"),
        pytest.param("completed", [result(0, True), result(1)],
                     [decision("promote", "top 1 of 3"), decision("finish", "reached max budget 3")],
                     [("promoted", "top 1 of 3"), ("finished", "reached max budget 3")], id="promoted, then finished"),
        pytest.param("stopped", [result(0)], [decision("stop", "not in the top 1 of 3")],
                     [("stopped", "not in the top 1 of 3")], id="stopped"),
        pytest.param("completed", [result(0, True), result(1)],
                     [decision("promote", "top 1 of 3"), decision("finish", "reached max budget 3"),
                      decision("reuse", "budget raised 3 -> 9: kept by bracket 0")],
                     [("promoted", "top 1 of 3"), ("waiting", "budget raised 3 -> 9: kept by bracket 0")],
                     id="finished, then kept by a raise: waiting again"),
        pytest.param("pending", [result(0, True), result(1, True)],
                     [decision("promote", "top 1 of 3"), decision("finish", "reached max budget 3"),
                      decision("reuse", "budget raised 3 -> 9: kept by bracket 0"), decision("promote", "top 1 of 9")],
                     [("promoted", "top 1 of 3"), ("promoted", "top 1 of 9")], id="kept, then promoted by the bracket"),
        pytest.param("stopped", [result(0, True), result(1)],
                     [decision("promote", "top 1 of 3"), decision("finish", "reached max budget 3"),
                      decision("reuse", "budget raised 3 -> 9: kept by bracket 0"), decision("stop", "not in the top 1 of 9")],
                     [("promoted", "top 1 of 3"), ("stopped", "not in the top 1 of 9")], id="kept, then stopped"),
        pytest.param("completed", [result(0)],
                     [decision("reuse", "someone else's", trial_id=8), decision("finish", "reached max budget 1")],
                     [("finished", "reached max budget 1")], id="other trials' decisions are ignored"),
    ],
)
def test_rung_marks(state: str, results: list[SimpleNamespace], decisions: list[SimpleNamespace],
                    expected: list[tuple[str, str | None]]) -> None:
    trial = SimpleNamespace(id=TRIAL_ID, state=state)
    marks = rung_marks(trial, results, decisions)
    assert [(m.outcome, m.reason) for m in marks] == expected
    assert [m.rung for m in marks] == [r.rung for r in results]

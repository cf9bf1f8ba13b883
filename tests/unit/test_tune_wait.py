"""`hpo tune --wait` polling through an unreachable server: ride it out, up to a grace period."""

from __future__ import annotations

from typing import Any

import pytest

from hpo_service.errors import ServiceUnavailable
from hpo_service.tune import wait_for_study

DOWN = "down"


class Answers:
    """A client whose get_study answers from a script: a status, or DOWN (unreachable)."""

    def __init__(self, script: list[str], clock: list[float]) -> None:
        self.script, self.clock = list(script), clock

    def get_study(self, study_id: int) -> dict[str, Any]:
        self.clock[0] += 1.0  # every poll takes a second of (fake) time
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if answer == DOWN:
            raise ServiceUnavailable("cannot reach http://hpo.test: connection refused")
        return {"id": study_id, "status": answer}


@pytest.mark.parametrize(
    ("script", "timeout_s", "grace_s", "expected"),
    [
        (["running", DOWN, DOWN, "running", "completed"], None, 10.0, ("completed", False)),
        ([DOWN, DOWN, "completed"], None, 10.0, ("completed", False)),  # down right after the submission
        (["running", DOWN], None, 3.0, ServiceUnavailable),  # longer than the grace
        (["running", DOWN], 4.0, 100.0, ("running", True)),  # the timeout, with the last answer
        ([DOWN], 4.0, 100.0, ServiceUnavailable),  # never answered before the timeout
        (["running", DOWN, "running", DOWN, "running", DOWN, "completed"], None, 2.0, ("completed", False)),
    ],
    ids=["short outage", "outage first", "past the grace", "timeout while down", "never answered",
         "outages that each fit the grace"],
)
def test_outages(monkeypatch: pytest.MonkeyPatch, script: list[str], timeout_s: float | None, grace_s: float,
                 expected: Any) -> None:
    clock = [0.0]
    monkeypatch.setattr("hpo_service.tune.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("hpo_service.tune.time.sleep", lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    told: list[float] = []
    client = Answers(script, clock)

    def wait() -> tuple[dict[str, Any], bool]:
        return wait_for_study(client, 7, timeout_s, lambda _study: None, poll_s=0.5,  # type: ignore[arg-type]
                              on_unreachable=lambda seconds, _error: told.append(seconds),
                              unreachable_grace_s=grace_s)

    if expected is ServiceUnavailable:
        with pytest.raises(ServiceUnavailable):
            wait()
        return
    study, timed_out = wait()
    assert (study["status"], timed_out) == expected
    assert (DOWN in script) == bool(told)  # every outage was told to the progress line

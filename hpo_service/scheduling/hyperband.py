"""Synchronous Hyperband (Li et al. 2018): successive halving inside each bracket.

Brackets have global integer ids 0, 1, 2, ...; bracket ``id`` has
``s = s_max - id % (s_max + 1)`` halvings and belongs to sweep
``id // (s_max + 1)``, so ``spec.iterations`` sweeps are ids
``0 .. iterations * (s_max + 1) - 1``.

Trials are created for the newest bracket until it has its ``n_0``; then the
next bracket opens. Brackets therefore overlap: while one waits for its
stragglers to settle a rung, idle workers start the next one.

A rung of a bracket is *settled* when every trial that entered it has either a
result there or was lost on the way (and, for rung 0, the bracket has created
all of its trials). Then the best ``max(1, floor(entered / eta))`` results are
promoted and the rest stopped, in one go. Only the current rung of a bracket can
be unsettled (nobody enters rung k+1 before rung k is decided), so a bracket's
bookkeeping is its current rung, how many entered it, its ``n0`` and the ids of
the trials lost on the way to it.

Snapshot (JSON)::

    {"kind": "hyperband", "version": 1,
     "brackets_opened": 3, "trials_created": 120, "budget_committed": 250.0,
     "creation_stopped": false,
     "open": {"2": {"n0": 15, "rung": 0, "entered": 4, "lost": [117]}}}

``open`` holds only brackets that still wait for a decision; finished brackets
are dropped so that the snapshot stays small over many sweeps. The limits are
part of the study spec and never change during a study; a snapshot is only
meaningful with the spec and limits that produced it.
"""

from __future__ import annotations

from typing import Any

from hpo_service.domain.spec import Limits, SchedulerSpec
from hpo_service.scheduling.base import (
    Action,
    Finish,
    NewTrial,
    Promote,
    RungPort,
    RungResult,
    SchedulerState,
    Stop,
)
from hpo_service.scheduling.rungs import (
    budget_fits,
    format_budget,
    hyperband_brackets,
    max_bracket_index,
    may_create_trial,
    rung_budget,
)

KIND = "hyperband"
VERSION = 1
BUDGET_EXHAUSTED = "total budget exhausted"


class HyperbandScheduler:
    """Hyperband over ``spec.iterations`` sweeps of all brackets, capped by ``limits``."""

    def __init__(self, spec: SchedulerSpec, limits: Limits) -> None:
        self._max_budget = spec.max_budget
        self._eta = spec.eta
        self._limits = limits
        self._s_max = max_bracket_index(spec.min_budget, spec.max_budget, spec.eta)
        # Indexed by position in the sweep (id % (s_max + 1)), i.e. s = s_max first.
        self._plans = hyperband_brackets(spec.min_budget, spec.max_budget, spec.eta)
        self._planned_brackets = spec.iterations * (self._s_max + 1)

    # --- geometry -------------------------------------------------------------------

    def bracket_s(self, bracket: int) -> int:
        """Number of halvings of ``bracket``; its top rung index."""
        return self._s_max - bracket % (self._s_max + 1)

    def rung_budget(self, bracket: int, rung: int) -> float:
        return rung_budget(self._max_budget, self._eta, self.bracket_s(bracket), rung)

    # --- Scheduler ------------------------------------------------------------------

    def initial_state(self) -> SchedulerState:
        state: SchedulerState = {
            "kind": KIND,
            "version": VERSION,
            "brackets_opened": 0,
            "trials_created": 0,
            "budget_committed": 0.0,
            "creation_stopped": False,
            "open": {},
        }
        self._stop_creation_if_limited(state)  # a budget below r_0 creates nothing
        return state

    def next_work(self, state: SchedulerState, port: RungPort) -> tuple[SchedulerState, Action | None]:
        state = _load(state)
        bracket_id = None if state["creation_stopped"] else self._next_trial_bracket(state)
        if bracket_id is None:
            return state, None
        key = str(bracket_id)
        if bracket_id == state["brackets_opened"]:
            n0 = self._plans[bracket_id % (self._s_max + 1)].rungs[0].n
            state["open"][key] = {"n0": n0, "rung": 0, "entered": 0, "lost": []}
            state["brackets_opened"] += 1
        budget = self.rung_budget(bracket_id, 0)
        state["open"][key]["entered"] += 1
        state["trials_created"] += 1
        state["budget_committed"] += budget
        # The trial just created is in flight, so a bracket cut short here cannot
        # be settled yet: its decision comes with that trial's result.
        self._stop_creation_if_limited(state)
        return state, NewTrial(bracket=bracket_id, rung=0, budget=budget)

    def on_result(
        self, state: SchedulerState, port: RungPort, result: RungResult
    ) -> tuple[SchedulerState, list[Action]]:
        state = _load(state)
        actions: list[Action] = []
        top = self.bracket_s(result.bracket)
        if result.rung == top:
            budget = format_budget(self._max_budget)
            actions.append(Finish(result.trial_id, f"reached the top rung {top} (budget {budget})"))
        actions += self._settle(state, port, result.bracket)
        actions += self._settle_cut_bracket(state, port)
        return state, actions

    def on_lost(
        self, state: SchedulerState, port: RungPort, trial_id: int, bracket: int, rung: int
    ) -> tuple[SchedulerState, list[Action]]:
        state = _load(state)
        entry = state["open"].get(str(bracket))
        # A loss reported for another rung than the bracket's current one would be
        # stale (the rung was already decided without this trial); ignore it.
        if entry is not None and entry["rung"] == rung and trial_id not in entry["lost"]:
            entry["lost"].append(trial_id)
        actions = self._settle(state, port, bracket)
        actions += self._settle_cut_bracket(state, port)
        return state, actions

    def is_finished(self, state: SchedulerState, port: RungPort, in_flight: int) -> bool:
        state = _load(state)
        creation_done = state["creation_stopped"] or self._next_trial_bracket(state) is None
        return creation_done and not state["open"] and in_flight == 0

    # --- creation and limits --------------------------------------------------------

    def _next_trial_bracket(self, state: SchedulerState) -> int | None:
        """The bracket the next new trial goes to, or None when every planned one is full."""
        newest = int(state["brackets_opened"]) - 1
        entry = state["open"].get(str(newest))
        if entry is not None and entry["rung"] == 0 and entry["entered"] < entry["n0"]:
            return newest
        if state["brackets_opened"] < self._planned_brackets:
            return int(state["brackets_opened"])
        return None

    def _stop_creation_if_limited(self, state: SchedulerState) -> str | None:
        """Stop creating trials once the next one would break a limit.

        Checked right after every commit, so that the bracket being filled is cut
        short (``n0 = created``) while the caller can still be told its decision.
        Returns the key of the bracket that was cut, if any.
        """
        if state["creation_stopped"]:
            return None
        bracket_id = self._next_trial_bracket(state)
        if bracket_id is None:
            return None
        cost = self.rung_budget(bracket_id, 0)
        if may_create_trial(self._limits, state["trials_created"], state["budget_committed"], cost):
            return None
        state["creation_stopped"] = True
        key = str(state["brackets_opened"] - 1)
        entry = state["open"].get(key)
        if entry is None or entry["rung"] != 0:
            return None
        entry["n0"] = entry["entered"]
        return key

    def _settle_cut_bracket(self, state: SchedulerState, port: RungPort) -> list[Action]:
        """Promotions commit budget; if that stopped creation, the cut bracket may be settled."""
        key = self._stop_creation_if_limited(state)
        return [] if key is None else self._settle(state, port, int(key))

    # --- successive halving ---------------------------------------------------------

    def _settle(self, state: SchedulerState, port: RungPort, bracket_id: int) -> list[Action]:
        """Decide the bracket's current rung if it is settled; drop the bracket when done."""
        key = str(bracket_id)
        entry = state["open"].get(key)
        if entry is None:
            return []
        rung = entry["rung"]
        if rung == 0 and entry["entered"] < entry["n0"]:
            return []
        if port.count(bracket_id, rung) + len(entry["lost"]) < entry["entered"]:
            return []
        if rung == self.bracket_s(bracket_id):
            del state["open"][key]  # every result here already got its Finish
            return []
        actions, promoted = self._decide(state, port, bracket_id, rung, entry["entered"])
        if promoted == 0:
            del state["open"][key]
        else:
            entry.update(rung=rung + 1, entered=promoted, lost=[])
        return actions

    def _decide(
        self, state: SchedulerState, port: RungPort, bracket_id: int, rung: int, entered: int
    ) -> tuple[list[Action], int]:
        """Promote the top ``max(1, entered // eta)`` results of a settled rung, stop the rest."""
        ranked = port.ranked(bracket_id, rung)
        quota = max(1, entered // self._eta)
        budget_here = self.rung_budget(bracket_id, rung)
        budget_next = self.rung_budget(bracket_id, rung + 1)
        cost = budget_next - budget_here
        actions: list[Action] = []
        promoted = 0
        for rank, result in enumerate(ranked, start=1):
            why = (
                f"rank {rank} of {len(ranked)} at rung {rung} "
                f"(budget {format_budget(budget_here)}): top {quota} promoted"
            )
            if rank > quota:
                actions.append(Stop(result.trial_id, why))
            elif not budget_fits(self._limits, state["budget_committed"], cost):
                actions.append(Stop(result.trial_id, BUDGET_EXHAUSTED))
            else:
                actions.append(Promote(result.trial_id, rung + 1, budget_next, why))
                state["budget_committed"] += cost
                promoted += 1
        return actions, promoted


# --- snapshot validation ----------------------------------------------------------------


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value


def _load(state: SchedulerState) -> SchedulerState:
    """A validated deep copy: callers' snapshots are never mutated."""
    if not isinstance(state, dict) or state.get("kind") != KIND or state.get("version") != VERSION:
        raise ValueError(f"not a {KIND} scheduler snapshot of version {VERSION}")
    try:
        committed = state["budget_committed"]
        if isinstance(committed, bool) or not isinstance(committed, (int, float)):
            raise ValueError(f"budget_committed must be a number, got {committed!r}")
        if not isinstance(state["creation_stopped"], bool):
            raise ValueError("creation_stopped must be a boolean")
        opened = _int(state["brackets_opened"])
        open_brackets = {}
        for key, entry in state["open"].items():
            if not (isinstance(key, str) and key.isdigit() and int(key) < opened):
                raise ValueError(f"bracket key {key!r} is not an opened bracket id")
            open_brackets[key] = {
                "n0": _int(entry["n0"]),
                "rung": _int(entry["rung"]),
                "entered": _int(entry["entered"]),
                "lost": [_int(trial_id) for trial_id in entry["lost"]],
            }
        return {
            "kind": KIND,
            "version": VERSION,
            "brackets_opened": opened,
            "trials_created": _int(state["trials_created"]),
            "budget_committed": float(committed),
            "creation_stopped": state["creation_stopped"],
            "open": open_brackets,
        }
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"corrupt {KIND} scheduler snapshot: {exc!r}") from exc

"""Synchronous Hyperband (Li et al. 2018) with iterative deepening (Brandt et al. 2023).

Brackets have global integer ids 0, 1, 2, ... in the order they open. A study that
was never extended has ``spec.iterations`` sweeps, ids ``0 .. iterations * (s_max + 1) - 1``;
bracket ``id`` has ``s = s_max - id % (s_max + 1)`` halvings and belongs to sweep
``id // (s_max + 1)``. Raising ``max_budget`` (``extend``) changes that: see below.

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

Raising max_budget (iterative deepening)
----------------------------------------
``extend`` is called once per raise ``R -> R'``, with the state made under ``R``.

- **Old brackets keep their geometry and grow rungs on top**: ``k = max(1,
  round(log_eta(R'/R)))`` rungs at ``R*eta .. R*eta**(k-1)`` and finally exactly ``R'``
  (`rungs.deepening_rungs`). For a power ratio (27 -> 81) an old bracket with ``s``
  halvings becomes exactly the new Hyperband's bracket ``s + k`` in budgets, with the
  old, smaller number of configurations. Brackets planned but not opened yet are
  opened later with the same (deepened) geometry.
- **The old top rung is decided like any other rung**: the best
  ``max(1, floor(n_top / eta))`` of its results are promoted and continue from their
  checkpoints, the rest are stopped. A finished bracket is re-opened at its old top
  rung and decided in ``extend`` itself; a bracket still running is decided when that
  rung settles. Trials that completed at the old top are named by these Promote and
  Stop actions: completed means "reached the study's max budget", which they no longer
  have. Each such promotion says that it reuses a checkpoint and what it saves.
- **New brackets** are those of the larger Hyperband that the old ones do not cover:
  ``s' = k - 1 .. 0`` (they start at ``R' / eta**s' >= R * eta``), once per sweep,
  opened after every old bracket. Old bracket ``s`` covers ``s' = s + k``.
- Limits are unchanged and apply to the whole study: promotions that do not fit
  ``limits.total_budget`` are stops, as always.

How this relates to the paper's variants: all of them keep the old brackets' results
and continue the old top rung's survivors rather than re-running them, and add the
brackets the old run did not cover (Brandt et al.'s reference code appends one
``s' = 0`` bracket per raise of one ``eta`` step). Their variants also top every old
bracket up to the larger Hyperband's ``n``, sampling new configurations into its bottom
rung (the efficient variant keeps every earlier promotion, the conservative ones
re-rank). We do not top up: the raised study then costs about as much as a fresh
study at ``R'``, which is what a raise is meant to avoid, and topping up would re-open
rungs below ones already running. The price is fewer configurations than a fresh
study would explore; bench/results/iterative_deepening.md measures both.

Snapshot (JSON)::

    {"kind": "hyperband", "version": 2,
     "ladder": [{"max_budget": 27.0, "brackets": 4}, {"max_budget": 81.0, "brackets": 1}],
     "brackets_opened": 3, "trials_created": 120, "budget_committed": 250.0,
     "creation_stopped": false,
     "open": {"2": {"n0": 15, "rung": 0, "entered": 4, "lost": [117]}}}

``ladder`` lists the max budgets the study has had, oldest first, with the number of
brackets each planned (segment ``j`` owns the ids after those of segment ``j - 1``);
the last max budget is the spec's. ``open`` holds only brackets that still wait for a
decision; finished brackets are dropped so that the snapshot stays small over many
sweeps. Apart from ``max_budget`` raised through ``extend``, the spec and limits never
change during a study; a snapshot is only meaningful with the spec that produced it.
"""

from __future__ import annotations

from typing import Any

from hpo_service.domain.spec import MAX_RUNGS, Limits, SchedulerSpec
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
from hpo_service.scheduling.ladder import HyperbandGeometry
from hpo_service.scheduling.rungs import (
    budget_fits,
    deepening_rungs,
    format_budget,
    max_bracket_index,
    may_create_trial,
    same_budget,
)

KIND = "hyperband"
VERSION = 2
BUDGET_EXHAUSTED = "total budget exhausted"


class HyperbandScheduler:
    """Hyperband over ``spec.iterations`` sweeps of all brackets, capped by ``limits``."""

    def __init__(self, spec: SchedulerSpec, limits: Limits) -> None:
        self._min_budget = spec.min_budget
        self._max_budget = spec.max_budget
        self._eta = spec.eta
        self._iterations = spec.iterations
        self._limits = limits
        self._s_max = max_bracket_index(spec.min_budget, spec.max_budget, spec.eta)
        self._geometries: dict[tuple[tuple[float, int], ...], HyperbandGeometry] = {}

    # --- geometry -------------------------------------------------------------------

    def _geometry(self, state: SchedulerState | None) -> HyperbandGeometry:
        """The bracket geometry of ``state``'s ladder (a fresh study's when None)."""
        if state is None:
            segments = ((self._max_budget, self._iterations * (self._s_max + 1)),)
        else:
            segments = tuple((float(step["max_budget"]), int(step["brackets"])) for step in state["ladder"])
        if segments not in self._geometries:
            self._geometries[segments] = HyperbandGeometry(self._min_budget, self._eta, segments)
        return self._geometries[segments]

    def bracket_s(self, bracket: int, state: SchedulerState | None = None) -> int:
        """Number of halvings of ``bracket``: its top rung index (rungs added by raises included)."""
        return self._geometry(None if state is None else self._load(state)).rungs(bracket).top

    def rung_budget(self, bracket: int, rung: int, state: SchedulerState | None = None) -> float:
        return self._geometry(None if state is None else self._load(state)).rungs(bracket).budget(rung)

    # --- Scheduler ------------------------------------------------------------------

    def initial_state(self) -> SchedulerState:
        state: SchedulerState = {
            "kind": KIND,
            "version": VERSION,
            "ladder": [{"max_budget": float(self._max_budget), "brackets": self._iterations * (self._s_max + 1)}],
            "brackets_opened": 0,
            "trials_created": 0,
            "budget_committed": 0.0,
            "creation_stopped": False,
            "open": {},
        }
        self._stop_creation_if_limited(state, self._geometry(state))  # a budget below r_0 creates nothing
        return state

    def next_work(self, state: SchedulerState, port: RungPort) -> tuple[SchedulerState, Action | None]:
        state = self._load(state)
        geometry = self._geometry(state)
        bracket_id = None if state["creation_stopped"] else self._next_trial_bracket(state, geometry)
        if bracket_id is None:
            return state, None
        key = str(bracket_id)
        if bracket_id == state["brackets_opened"]:
            state["open"][key] = {"n0": geometry.n0(bracket_id), "rung": 0, "entered": 0, "lost": []}
            state["brackets_opened"] += 1
        budget = geometry.rungs(bracket_id).budget(0)
        state["open"][key]["entered"] += 1
        state["trials_created"] += 1
        state["budget_committed"] += budget
        # The trial just created is in flight, so a bracket cut short here cannot
        # be settled yet: its decision comes with that trial's result.
        self._stop_creation_if_limited(state, geometry)
        return state, NewTrial(bracket=bracket_id, rung=0, budget=budget)

    def on_result(
        self, state: SchedulerState, port: RungPort, result: RungResult
    ) -> tuple[SchedulerState, list[Action]]:
        state = self._load(state)
        geometry = self._geometry(state)
        actions: list[Action] = []
        top = geometry.rungs(result.bracket).top
        if result.rung == top:
            budget = format_budget(self._max_budget)
            actions.append(Finish(result.trial_id, f"reached the top rung {top} (budget {budget})"))
        actions += self._settle(state, port, geometry, result.bracket)
        actions += self._settle_cut_bracket(state, port, geometry)
        return state, actions

    def on_lost(
        self, state: SchedulerState, port: RungPort, trial_id: int, bracket: int, rung: int
    ) -> tuple[SchedulerState, list[Action]]:
        state = self._load(state)
        geometry = self._geometry(state)
        entry = state["open"].get(str(bracket))
        # A loss reported for another rung than the bracket's current one would be
        # stale (the rung was already decided without this trial); ignore it.
        if entry is not None and entry["rung"] == rung and trial_id not in entry["lost"]:
            entry["lost"].append(trial_id)
        actions = self._settle(state, port, geometry, bracket)
        actions += self._settle_cut_bracket(state, port, geometry)
        return state, actions

    def is_finished(self, state: SchedulerState, port: RungPort, in_flight: int) -> bool:
        state = self._load(state)
        geometry = self._geometry(state)
        creation_done = state["creation_stopped"] or self._next_trial_bracket(state, geometry) is None
        return creation_done and not state["open"] and in_flight == 0

    def extend(
        self, state: SchedulerState, port: RungPort, old_max_budget: float
    ) -> tuple[SchedulerState, list[Action]]:
        """Raise the study's max budget to the spec's (see the module docstring).

        Raises ValueError when the spec's max_budget is not larger than ``old_max_budget``,
        when ``state`` was not made under ``old_max_budget``, or when some bracket would
        get more than ``MAX_RUNGS`` halvings.
        """
        state = _load(state)
        old_max = state["ladder"][-1]["max_budget"]
        if not same_budget(old_max, old_max_budget):
            raise ValueError(
                f"the scheduler snapshot was made under max_budget {format_budget(old_max)}, "
                f"not {format_budget(old_max_budget)}"
            )
        before = self._geometry(state)
        added = deepening_rungs(old_max, self._max_budget, self._eta)
        s_top = min(len(added) - 1, self._s_max)
        state["ladder"].append({"max_budget": float(self._max_budget), "brackets": self._iterations * (s_top + 1)})
        after = self._geometry(state)
        if after.most_halvings() > MAX_RUNGS:
            raise ValueError(
                f"raising max_budget from {format_budget(old_max)} to {format_budget(self._max_budget)} would give "
                f"a bracket {after.most_halvings()} halvings, more than {MAX_RUNGS}; raise it in smaller steps "
                "or start a new study"
            )
        actions: list[Action] = []
        for bracket_id in range(state["brackets_opened"]):
            actions += self._reopen(state, port, after, bracket_id, before.rungs(bracket_id).top)
        actions += self._settle_cut_bracket(state, port, after)
        return state, actions

    def _reopen(
        self, state: SchedulerState, port: RungPort, geometry: HyperbandGeometry, bracket_id: int, old_top: int
    ) -> list[Action]:
        """Re-open a finished bracket at its old top rung and decide that rung now.

        A bracket still open is left alone: its old top rung is decided when it settles.
        """
        key = str(bracket_id)
        if key in state["open"]:
            return []
        reached = port.count(bracket_id, old_top)
        if reached == 0:
            return []  # it ended below its top (every survivor lost, or the budget ran out)
        n0 = reached if old_top == 0 else geometry.n0(bracket_id)
        state["open"][key] = {"n0": n0, "rung": old_top, "entered": reached, "lost": []}
        return self._settle(state, port, geometry, bracket_id)

    # --- creation and limits --------------------------------------------------------

    def _next_trial_bracket(self, state: SchedulerState, geometry: HyperbandGeometry) -> int | None:
        """The bracket the next new trial goes to, or None when every planned one is full."""
        newest = int(state["brackets_opened"]) - 1
        entry = state["open"].get(str(newest))
        if entry is not None and entry["rung"] == 0 and entry["entered"] < entry["n0"]:
            return newest
        if state["brackets_opened"] < geometry.planned:
            return int(state["brackets_opened"])
        return None

    def _stop_creation_if_limited(self, state: SchedulerState, geometry: HyperbandGeometry) -> str | None:
        """Stop creating trials once the next one would break a limit.

        Checked right after every commit, so that the bracket being filled is cut
        short (``n0 = created``) while the caller can still be told its decision.
        Returns the key of the bracket that was cut, if any.
        """
        if state["creation_stopped"]:
            return None
        bracket_id = self._next_trial_bracket(state, geometry)
        if bracket_id is None:
            return None
        cost = geometry.rungs(bracket_id).budget(0)
        if may_create_trial(self._limits, state["trials_created"], state["budget_committed"], cost):
            return None
        state["creation_stopped"] = True
        key = str(state["brackets_opened"] - 1)
        entry = state["open"].get(key)
        if entry is None or entry["rung"] != 0:
            return None
        entry["n0"] = entry["entered"]
        return key

    def _settle_cut_bracket(self, state: SchedulerState, port: RungPort, geometry: HyperbandGeometry) -> list[Action]:
        """Promotions commit budget; if that stopped creation, the cut bracket may be settled."""
        key = self._stop_creation_if_limited(state, geometry)
        return [] if key is None else self._settle(state, port, geometry, int(key))

    # --- successive halving ---------------------------------------------------------

    def _settle(
        self, state: SchedulerState, port: RungPort, geometry: HyperbandGeometry, bracket_id: int
    ) -> list[Action]:
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
        if rung == geometry.rungs(bracket_id).top:
            del state["open"][key]  # every result here already got its Finish
            return []
        actions, promoted = self._decide(state, port, geometry, bracket_id, rung, entry["entered"])
        if promoted == 0:
            del state["open"][key]
        else:
            entry.update(rung=rung + 1, entered=promoted, lost=[])
        return actions

    def _decide(
        self, state: SchedulerState, port: RungPort, geometry: HyperbandGeometry, bracket_id: int, rung: int,
        entered: int,
    ) -> tuple[list[Action], int]:
        """Promote the top ``max(1, entered // eta)`` results of a settled rung, stop the rest."""
        ranked = port.ranked(bracket_id, rung)
        quota = max(1, entered // self._eta)
        rungs = geometry.rungs(bracket_id)
        budget_here, budget_next = rungs.budget(rung), rungs.budget(rung + 1)
        cost = budget_next - budget_here
        raised, reuse = rungs.reuse_note(rung)
        actions: list[Action] = []
        promoted = 0
        for rank, result in enumerate(ranked, start=1):
            why = (
                f"{raised}rank {rank} of {len(ranked)} at rung {rung} "
                f"(budget {format_budget(budget_here)}): top {quota} promoted"
            )
            if rank > quota:
                actions.append(Stop(result.trial_id, why))
            elif not budget_fits(self._limits, state["budget_committed"], cost):
                actions.append(Stop(result.trial_id, BUDGET_EXHAUSTED))
            else:
                actions.append(Promote(result.trial_id, rung + 1, budget_next, why + reuse))
                state["budget_committed"] += cost
                promoted += 1
        return actions, promoted

    def _load(self, state: SchedulerState) -> SchedulerState:
        """``_load`` plus: the snapshot's newest max budget is this spec's (else extend was skipped)."""
        loaded = _load(state)
        newest = loaded["ladder"][-1]["max_budget"]
        if not same_budget(newest, self._max_budget):
            raise ValueError(
                f"the scheduler snapshot was made under max_budget {format_budget(newest)} but the spec says "
                f"{format_budget(self._max_budget)}: a raise must go through extend"
            )
        return loaded


# --- snapshot validation ----------------------------------------------------------------


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _load_ladder(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise ValueError("ladder must be a non-empty list")
    ladder = []
    for step in raw:
        max_budget = _number(step["max_budget"], "ladder max_budget")
        if not max_budget > (ladder[-1]["max_budget"] if ladder else 0.0):
            raise ValueError(f"ladder max budgets must be positive and increasing, got {max_budget!r}")
        ladder.append({"max_budget": max_budget, "brackets": _int(step["brackets"])})
    return ladder


def _load(state: SchedulerState) -> SchedulerState:
    """A validated deep copy: callers' snapshots are never mutated."""
    if not isinstance(state, dict) or state.get("kind") != KIND or state.get("version") != VERSION:
        raise ValueError(f"not a {KIND} scheduler snapshot of version {VERSION}")
    try:
        committed = _number(state["budget_committed"], "budget_committed")
        if not isinstance(state["creation_stopped"], bool):
            raise ValueError("creation_stopped must be a boolean")
        ladder = _load_ladder(state["ladder"])
        opened = _int(state["brackets_opened"])
        if opened > sum(step["brackets"] for step in ladder):
            raise ValueError(f"{opened} brackets opened but the ladder plans fewer")
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
            "ladder": ladder,
            "brackets_opened": opened,
            "trials_created": _int(state["trials_created"]),
            "budget_committed": committed,
            "creation_stopped": state["creation_stopped"],
            "open": open_brackets,
        }
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"corrupt {KIND} scheduler snapshot: {exc!r}") from exc

"""Synchronous Hyperband (Li et al. 2018) with iterative deepening (Brandt et al. 2023).

Brackets have global integer ids 0, 1, 2, ... in the order they open. A study that
was never extended has ``spec.iterations`` sweeps, ids ``0 .. iterations * (s_max + 1) - 1``;
bracket ``id`` has ``s = s_max - id % (s_max + 1)`` halvings and belongs to sweep
``id // (s_max + 1)``. Raising ``max_budget`` (``extend``) changes that: see below.

Trials are created for the newest bracket until it has its ``n_0``; then the
next bracket opens. Brackets therefore overlap: while one waits for its
stragglers to settle a rung, idle workers start the next one. (After a raise that
tops old brackets up, new trials go to the lowest-numbered open bracket still short
of its ``n_0`` first.)

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
  halvings becomes exactly the new Hyperband's bracket ``s' = s + k`` in budgets: the one
  with the same minimum budget. Brackets planned but not opened yet are opened later with
  the same (deepened) geometry.
- **New brackets** are those of the larger Hyperband that the old ones do not cover:
  ``s' = k - 1 .. 0`` (they start at ``R' / eta**s' >= R * eta``), once per sweep,
  opened after every old bracket.
- **Top-up (the default; Brandt et al.'s efficient variant, eID-HB)**: every old bracket
  grows to the size ``n'`` the larger Hyperband gives its ``s'`` (Li et al.'s
  ``ceil((s_max' + 1) * eta**s' / (s' + 1))``, also for ``s' > s_max'`` after a raise that
  is not a power of eta), so after the raise the study has a fresh Hyperband's brackets.
  The old trials stay with their results: ``extend`` returns a ``Reuse`` for each, with the
  budget it trained (which is not trained again). New trials are created at the bracket's
  rung 0 until it has ``n'`` entrants, and successive halving runs again over the union,
  rung by rung, with the larger bracket's counts: at rung ``i`` the quota is
  ``max(1, entered // eta)``; the trials already promoted out of rung ``i`` before the raise
  keep their place and count toward it (their results at ``i + 1`` are reused), and the rest of
  the quota goes to the best of the others, old (stopped there before the raise, or
  completed at the old top) or new. A promoted old trial resumes from its checkpoint and
  pays only the new budget; results that already exist above are reused, never retrained.
  An old trial promoted and lost since keeps its place, as a lost trial does in any bracket;
  one lost before it reported anywhere is replaced by a new configuration.
  A finished bracket starts its top-up in ``extend``; one still running at rung 0 just gets
  the larger ``n0``; one running higher up first settles that rung (its trials there wait,
  undecided) and then starts its top-up from rung 0 (``top_up_to`` in the snapshot).
  The raised study then explores as many configurations as a fresh study at ``R'`` and
  trains, after the raise, what a fresh study would train minus the reused results.
- **Without top-up** (``extend(..., top_up=False)``; also what snapshots of version 2 record
  for their raises): the old brackets keep their size and only their old top rung is decided
  like any other rung: the best ``max(1, floor(n_top / eta))`` continue from their
  checkpoints, the rest are stopped. A finished bracket is re-opened at its old top rung and
  decided in ``extend`` itself; a bracket still running is decided when that rung settles.
  Each such promotion says that it reuses a checkpoint and what it saves. Cheaper than a
  top-up, but the study explores fewer configurations than a fresh one
  (bench/results/iterative_deepening.md measures both).
- Trials that completed at the old top are named by Promote and Stop actions: completed
  means "reached the study's max budget", which they no longer have.
- Limits are unchanged and apply to the whole study: promotions that do not fit
  ``limits.total_budget`` are stops, and new trials stop at ``max_trials`` or when the next
  one does not fit, which cuts every bracket still being topped up to what it has.

Snapshot (JSON)::

    {"kind": "hyperband", "version": 3,
     "ladder": [{"max_budget": 27.0, "brackets": 4},
                {"max_budget": 81.0, "brackets": 1, "top_up": true, "newest_trial": 118}],
     "brackets_opened": 5, "trials_created": 120, "budget_committed": 250.0,
     "creation_stopped": false,
     "open": {"0": {"n0": 81, "rung": 0, "entered": 60, "lost": [], "stopped": [2, 5, 7]},
              "1": {"n0": 12, "rung": 2, "entered": 3, "lost": [], "top_up_to": 34},
              "4": {"n0": 5, "rung": 0, "entered": 4, "lost": [117]}}}

``ladder`` lists the max budgets the study has had, oldest first, with the number of
brackets each planned (segment ``j`` owns the ids after those of segment ``j - 1``) and, for
each raise, whether it topped the old brackets up and the id of the newest trial then
(``newest_trial``: only trials up to it existed at the raise, so only they can reuse a
checkpoint; absent in older snapshots, then unknown); the last max budget is the spec's.
``open`` holds only brackets that still wait for a decision; finished brackets are dropped so
that the snapshot stays small over many sweeps. A bracket being topped up lists the old
trials that were stopped before the raise at rungs it has not decided again (``stopped``:
they may be promoted, but are not stopped twice); a running bracket waiting to start its
top-up has ``top_up_to``. Version 2 snapshots (before top-ups) load as raised without one.
Apart from ``max_budget`` raised through ``extend``, the spec and limits never change during
a study; a snapshot is only meaningful with the spec that produced it.
"""

from __future__ import annotations

from typing import Any

from hpo_service.domain.spec import MAX_RUNGS, Limits, SchedulerSpec
from hpo_service.scheduling.base import (
    Action,
    Finish,
    NewTrial,
    Promote,
    Reuse,
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
VERSION = 3
LOADABLE_VERSIONS = (2, 3)  # 2: before top-ups; its raises were made without one
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
        self._geometries: dict[tuple[tuple[float, int, bool], ...], HyperbandGeometry] = {}

    # --- geometry -------------------------------------------------------------------

    def _geometry(self, state: SchedulerState | None) -> HyperbandGeometry:
        """The bracket geometry of ``state``'s ladder (a fresh study's when None)."""
        if state is None:
            segments: tuple[tuple[Any, ...], ...] = (
                (self._max_budget, self._iterations * (self._s_max + 1), False),
            )
        else:
            segments = tuple(
                (float(step["max_budget"]), int(step["brackets"]), bool(step.get("top_up", False)),
                 step.get("newest_trial"))
                for step in state["ladder"]
            )
        if segments not in self._geometries:
            self._geometries[segments] = HyperbandGeometry(self._min_budget, self._eta, segments)
        return self._geometries[segments]

    def bracket_s(self, bracket: int, state: SchedulerState | None = None) -> int:
        """Number of halvings of ``bracket``: its top rung index (rungs added by raises included)."""
        return self._geometry(None if state is None else self._load(state)).rungs(bracket).top

    def rung_budget(self, bracket: int, rung: int, state: SchedulerState | None = None) -> float:
        return self._geometry(None if state is None else self._load(state)).rungs(bracket).budget(rung)

    def bracket_size(self, bracket: int, state: SchedulerState | None = None) -> int:
        """The ``n0`` a planned bracket opens with (after top-ups: the larger Hyperband's)."""
        return self._geometry(None if state is None else self._load(state)).n0(bracket)

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
        actions += self._settle_cut_brackets(state, port, geometry)
        return state, actions + self._settle_brackets_cut_earlier(state, port, geometry)

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
        actions += self._settle_cut_brackets(state, port, geometry)
        return state, actions + self._settle_brackets_cut_earlier(state, port, geometry)

    def is_finished(self, state: SchedulerState, port: RungPort, in_flight: int) -> bool:
        state = self._load(state)
        geometry = self._geometry(state)
        creation_done = state["creation_stopped"] or self._next_trial_bracket(state, geometry) is None
        return creation_done and not state["open"] and in_flight == 0

    def extend(
        self, state: SchedulerState, port: RungPort, old_max_budget: float, *, top_up: bool = True
    ) -> tuple[SchedulerState, list[Action]]:
        """Raise the study's max budget to the spec's (see the module docstring).

        ``top_up`` (default) grows every old bracket to the larger Hyperband's size and runs
        successive halving again over old and new trials; False only continues the best of
        each old top rung. Raises ValueError when the spec's max_budget is not larger than
        ``old_max_budget``, when ``state`` was not made under ``old_max_budget``, or when some
        bracket would get more than ``MAX_RUNGS`` halvings.
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
        state["ladder"].append({
            "max_budget": float(self._max_budget), "brackets": self._iterations * (s_top + 1), "top_up": top_up,
            "newest_trial": port.newest_trial_id(),
        })
        after = self._geometry(state)
        if after.most_halvings() > MAX_RUNGS:
            raise ValueError(
                f"raising max_budget from {format_budget(old_max)} to {format_budget(self._max_budget)} would give "
                f"a bracket {after.most_halvings()} halvings, more than {MAX_RUNGS}; raise it in smaller steps "
                "or start a new study"
            )
        actions: list[Action] = []
        for bracket_id in range(state["brackets_opened"]):
            if top_up:
                actions += self._top_up(state, port, before, after, bracket_id, old_max)
            else:
                actions += self._reopen(state, port, after, bracket_id, before.rungs(bracket_id).top)
        actions += self._settle_cut_brackets(state, port, after)
        return state, actions

    # --- raising max_budget ---------------------------------------------------------

    def _reopen(
        self, state: SchedulerState, port: RungPort, geometry: HyperbandGeometry, bracket_id: int, old_top: int
    ) -> list[Action]:
        """Without top-up: re-open a finished bracket at its old top rung and decide that rung now.

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

    def _top_up(
        self, state: SchedulerState, port: RungPort, before: HyperbandGeometry, after: HyperbandGeometry,
        bracket_id: int, old_max: float,
    ) -> list[Action]:
        """Keep an opened bracket's trials (one Reuse each) and grow it to the larger Hyperband's size."""
        key = str(bracket_id)
        entry = state["open"].get(key)
        size = after.n0(bracket_id)
        # The frontier: the highest rung with trials on it that were not decided at the raise.
        frontier = before.rungs(bracket_id).top if entry is None else entry["rung"]
        in_flight_lost = None if entry is None else set(entry["lost"])
        rungs = after.rungs(bracket_id)
        raised = f"budget raised {format_budget(old_max)} -> {format_budget(self._max_budget)}"
        grows = (f"the bracket is topped up to {size} configurations" if not state["creation_stopped"]
                 else "the study's limits allow no new configurations")
        actions: list[Action] = []
        for trial_id, rung in _kept(port, bracket_id, before.rungs(bracket_id).top, frontier, in_flight_lost):
            budget = rungs.budget(rung)
            actions.append(Reuse(trial_id, budget, (
                f"{raised}: kept by bracket {bracket_id} with its result at rung {rung} (budget "
                f"{format_budget(budget)}); {grows} (saves {format_budget(budget)})"
            )))
        if entry is None:
            self._start_top_up(state, port, bracket_id, frontier, size, [])
            actions += self._settle(state, port, after, bracket_id)
        elif entry["rung"] == 0:  # nothing decided yet: the bracket simply becomes the larger one
            if not state["creation_stopped"]:
                entry["n0"] = max(entry["n0"], size)
        else:  # its current rung settles first, with the trials that are on their way to it
            entry["top_up_to"] = size
        return actions

    def _start_top_up(
        self, state: SchedulerState, port: RungPort, bracket_id: int, frontier: int, size: int,
        stopped_before: list[int],
    ) -> None:
        """Send a bracket whose rungs up to ``frontier`` are settled back to rung 0, to grow to ``size``.

        Below the frontier every result that was not promoted was stopped (it may be promoted now);
        results at the frontier are still undecided. Old results at rung 0 count as entrants.
        """
        stopped = set(stopped_before)
        for rung in range(frontier):
            promoted = port.promoted_ids(bracket_id, rung)
            stopped.update(r.trial_id for r in port.ranked(bracket_id, rung) if r.trial_id not in promoted)
        entered = port.count(bracket_id, 0)
        n0 = entered if state["creation_stopped"] else max(entered, size)
        state["open"][str(bracket_id)] = {"n0": n0, "rung": 0, "entered": entered, "lost": [],
                                          "stopped": sorted(stopped)}

    # --- creation and limits --------------------------------------------------------

    def _next_trial_bracket(self, state: SchedulerState, geometry: HyperbandGeometry) -> int | None:
        """The bracket the next new trial goes to, or None when every planned one is full.

        The lowest-numbered open bracket short of its ``n0`` (the newest one, unless a raise is
        topping older ones up), else the next planned bracket.
        """
        filling = [
            int(key) for key, entry in state["open"].items() if entry["rung"] == 0 and entry["entered"] < entry["n0"]
        ]
        if filling:
            return min(filling)
        if state["brackets_opened"] < geometry.planned:
            return int(state["brackets_opened"])
        return None

    def _stop_creation_if_limited(self, state: SchedulerState, geometry: HyperbandGeometry) -> list[str]:
        """Stop creating trials once the next one would break a limit.

        Checked right after every commit, so that the brackets being filled are cut
        short (``n0 = created``) while the caller can still be told their decisions.
        Returns the keys of the brackets that were cut.
        """
        if state["creation_stopped"]:
            return []
        bracket_id = self._next_trial_bracket(state, geometry)
        if bracket_id is None:
            return []
        cost = geometry.rungs(bracket_id).budget(0)
        if may_create_trial(self._limits, state["trials_created"], state["budget_committed"], cost):
            return []
        state["creation_stopped"] = True
        cut = []
        for key, entry in state["open"].items():
            if entry["rung"] == 0 and entry["entered"] < entry["n0"]:
                entry["n0"] = entry["entered"]
                cut.append(key)
        return cut

    def _settle_cut_brackets(self, state: SchedulerState, port: RungPort, geometry: HyperbandGeometry) -> list[Action]:
        """Promotions commit budget; if that stopped creation, the cut brackets may be settled."""
        actions: list[Action] = []
        for key in self._stop_creation_if_limited(state, geometry):
            actions += self._settle(state, port, geometry, int(key))
        return actions

    def _settle_brackets_cut_earlier(
        self, state: SchedulerState, port: RungPort, geometry: HyperbandGeometry
    ) -> list[Action]:
        """Once creation has stopped, settle every bracket whose rung 0 is complete.

        ``next_work`` can cut brackets short but return no decisions. Before top-ups the one it
        cut was the one that had just got a trial, decided with that trial's result; while old
        brackets are topped up, several can be short of their ``n0`` at once, some with nothing
        in flight. The trial just created is in flight, so this runs on its result or loss.
        """
        if not state["creation_stopped"]:
            return []
        actions: list[Action] = []
        for key in sorted(state["open"], key=int):
            entry = state["open"].get(key)
            if entry is not None and entry["rung"] == 0 and entry["entered"] >= entry["n0"]:
                actions += self._settle(state, port, geometry, int(key))
        return actions

    # --- successive halving ---------------------------------------------------------

    def _settle(
        self, state: SchedulerState, port: RungPort, geometry: HyperbandGeometry, bracket_id: int
    ) -> list[Action]:
        """Decide the bracket's current rung while it is settled; drop the bracket when done.

        A bracket being topped up may find the next rung settled at once (only results from
        before the raise there), so this goes on rung by rung.
        """
        key = str(bracket_id)
        actions: list[Action] = []
        while (entry := state["open"].get(key)) is not None:
            rung = entry["rung"]
            if rung == 0 and entry["entered"] < entry["n0"]:
                break
            if port.count(bracket_id, rung) + len(entry["lost"]) < entry["entered"]:
                break
            if "top_up_to" in entry:  # the rung that was running when max_budget was raised has settled
                self._start_top_up(state, port, bracket_id, rung, entry["top_up_to"], entry.get("stopped", []))
                continue
            if rung == geometry.rungs(bracket_id).top:
                del state["open"][key]  # every result here already got its Finish
                break
            decided, entered, lost = self._decide(state, port, geometry, bracket_id, entry)
            actions += decided
            if entered == 0:
                del state["open"][key]
                break
            entry.update(rung=rung + 1, entered=entered, lost=lost)
        return actions

    def _decide(
        self, state: SchedulerState, port: RungPort, geometry: HyperbandGeometry, bracket_id: int,
        entry: dict[str, Any],
    ) -> tuple[list[Action], int, list[int]]:
        """Promote the top ``max(1, entered // eta)`` results of a settled rung, stop the rest.

        Returns the actions, how many enter the next rung and which of them are lost already.
        In a bracket being topped up, the trials promoted out of this rung before keep their
        place: they count toward the quota and enter the next rung again, with their results
        there (or as lost, if they were lost on the way); the trials stopped here before compete
        again but are not stopped twice.
        """
        rung = entry["rung"]
        ranked = port.ranked(bracket_id, rung)
        quota = max(1, entry["entered"] // self._eta)
        rungs = geometry.rungs(bracket_id)
        budget_here, budget_next = rungs.budget(rung), rungs.budget(rung + 1)
        here = format_budget(budget_here)
        cost = budget_next - budget_here
        topped_up = "stopped" in entry
        if topped_up:
            stopped = set(entry["stopped"])
            promoted_before = port.promoted_ids(bracket_id, rung)
            kept = len(promoted_before)
            before = f" ({kept} of them before the raise)" if kept else ""
        else:
            stopped, promoted_before, kept, before = set(), set(), 0, ""
        slots = max(0, quota - kept)
        actions: list[Action] = []
        promoted = candidates = 0
        for rank, result in enumerate(ranked, start=1):
            trial_id = result.trial_id
            if trial_id in promoted_before:
                continue
            candidates += 1
            was_stopped = trial_id in stopped
            raised, reuse = ("", "") if topped_up else rungs.reuse_note(rung, trial_id)
            why = f"{raised}rank {rank} of {len(ranked)} at rung {rung} (budget {here}): top {quota} promoted{before}"
            if candidates > slots:
                if not was_stopped:
                    actions.append(Stop(trial_id, why))
            elif not budget_fits(self._limits, state["budget_committed"], cost):
                if not was_stopped:
                    actions.append(Stop(trial_id, BUDGET_EXHAUSTED))
            else:
                note = reuse
                if was_stopped:
                    note = f"; stopped here before the raise, resumes from its checkpoint at {here}"
                actions.append(Promote(trial_id, rung + 1, budget_next, why + note))
                state["budget_committed"] += cost
                promoted += 1
        lost: list[int] = []
        if topped_up:  # the ones stopped at this rung are decided again now; those stopped higher up are not
            decided = {result.trial_id for result in ranked if result.trial_id not in promoted_before}
            entry["stopped"] = [trial_id for trial_id in entry["stopped"] if trial_id not in decided]
            if promoted_before:
                lost = sorted(promoted_before - {result.trial_id for result in port.ranked(bracket_id, rung + 1)})
        return actions, kept + promoted, lost

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


def _kept(
    port: RungPort, bracket_id: int, top: int, frontier: int, in_flight_lost: set[int] | None
) -> list[tuple[int, int]]:
    """(trial id, highest rung with a result) of a bracket's trials that a top-up keeps, by trial id.

    Every trial with a result at some rung up to ``top`` (the bracket's top before the raise) is
    kept, except one promoted out of its highest result's rung that never reported at the next: it
    was lost. In a bracket still running at ``frontier`` (``in_flight_lost`` is then its lost list
    there), a trial promoted into the frontier is on its way unless it is in that list. (Results
    above the frontier exist when an earlier top-up of the bracket is still going on.)
    """
    highest: dict[int, int] = {}
    promoted: list[set[int]] = []
    for rung in range(top + 1):
        results = port.ranked(bracket_id, rung)
        for result in results:
            highest[result.trial_id] = rung
        promoted.append(port.promoted_ids(bracket_id, rung) if results and rung < top else set())
    kept = []
    for trial_id, rung in sorted(highest.items()):
        if trial_id in promoted[rung]:
            on_its_way = in_flight_lost is not None and rung + 1 == frontier and trial_id not in in_flight_lost
            if not on_its_way:
                continue
        kept.append((trial_id, rung))
    return kept


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
    """Steps after the first say whether their raise topped up (absent in version 2: it did not)."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("ladder must be a non-empty list")
    ladder: list[dict[str, Any]] = []
    for step in raw:
        max_budget = _number(step["max_budget"], "ladder max_budget")
        if not max_budget > (ladder[-1]["max_budget"] if ladder else 0.0):
            raise ValueError(f"ladder max budgets must be positive and increasing, got {max_budget!r}")
        loaded: dict[str, Any] = {"max_budget": max_budget, "brackets": _int(step["brackets"])}
        if ladder:
            top_up = step.get("top_up", False)
            if not isinstance(top_up, bool):
                raise ValueError(f"ladder top_up must be a boolean, got {top_up!r}")
            loaded["top_up"] = top_up
            newest = step.get("newest_trial")  # absent before it was kept: unknown
            if newest is not None and (isinstance(newest, bool) or not isinstance(newest, int)):
                raise ValueError(f"ladder newest_trial must be a trial id or null, got {newest!r}")
            loaded["newest_trial"] = newest
        ladder.append(loaded)
    return ladder


def _load_entry(entry: Any) -> dict[str, Any]:
    loaded = {
        "n0": _int(entry["n0"]),
        "rung": _int(entry["rung"]),
        "entered": _int(entry["entered"]),
        "lost": [_int(trial_id) for trial_id in entry["lost"]],
    }
    if "stopped" in entry:
        loaded["stopped"] = [_int(trial_id) for trial_id in entry["stopped"]]
    if "top_up_to" in entry:
        loaded["top_up_to"] = _int(entry["top_up_to"])
    return loaded


def _load(state: SchedulerState) -> SchedulerState:
    """A validated deep copy: callers' snapshots are never mutated. Version 2 is read as version 3."""
    if not isinstance(state, dict) or state.get("kind") != KIND or state.get("version") not in LOADABLE_VERSIONS:
        raise ValueError(f"not a {KIND} scheduler snapshot of version {VERSION} (or {LOADABLE_VERSIONS[0]})")
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
            open_brackets[key] = _load_entry(entry)
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

"""The muP-transfer schedule: tune narrow, train wide (Tensor Programs V).

Stage 1 tunes at the proxy width(s) with an inner Hyperband or ASHA, one inner
scheduler per proxy with its own range of bracket ids. Stage 2 trains the top-k
configurations of the widest proxy at the target width for the full budget with
the hyperparameters carried over unchanged (under muP they transfer). Stage 3,
optional, checks the transfer with a small sweep of one parameter (the learning
rate) around the transferred value at the target width.

The same schedule works on the adapter-rank axis (tune at small LoRA rank,
train at a large one): `transfer.param` names the trial parameter that carries
the width or rank; the trainer must declare that axis (`transfer_axes`).

Brackets: proxy p uses ids ``p * STRIDE + b`` for its inner bracket ``b``;
stage 2 is bracket ``TARGET_BRACKET`` and stage 3 ``CHECK_BRACKET``, both a
single rung at ``max_budget``.

Snapshot (JSON)::

    {"kind": "mup_transfer", "version": 1, "stage": 1,   # 1 tune, 2 transfer, 3 check, 4 done
     "next_proxy": 0,
     "inner": [<inner snapshot per proxy>], "sources": [], "created": 0,
     "check_source": null}
"""

from __future__ import annotations

from typing import Any

from hpo_service.domain.spec import Limits, SchedulerSpec, TransferSpec
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
from hpo_service.scheduling.rungs import format_budget

KIND = "mup_transfer"
VERSION = 1
STRIDE = 10_000
TARGET_BRACKET = 900_000
CHECK_BRACKET = 900_001


class OffsetPort:
    """The study's port seen by one proxy's inner scheduler: its bracket ids start at 0."""

    def __init__(self, port: RungPort, offset: int) -> None:
        self._port, self._offset = port, offset

    def _out(self, result: RungResult | None) -> RungResult | None:
        if result is None:
            return None
        return RungResult(result.trial_id, result.bracket - self._offset, result.rung, result.score)

    def count(self, bracket: int, rung: int) -> int:
        return self._port.count(bracket + self._offset, rung)

    def best_unpromoted(self, bracket: int, rung: int) -> RungResult | None:
        return self._out(self._port.best_unpromoted(bracket + self._offset, rung))

    def count_better(self, bracket: int, rung: int, result: RungResult) -> int:
        shifted = RungResult(result.trial_id, result.bracket + self._offset, result.rung, result.score)
        return self._port.count_better(bracket + self._offset, rung, shifted)

    def ranked(self, bracket: int, rung: int) -> list[RungResult]:
        return [r for r in map(self._out, self._port.ranked(bracket + self._offset, rung)) if r is not None]

    def promoted_ids(self, bracket: int, rung: int) -> set[int]:
        return self._port.promoted_ids(bracket + self._offset, rung)

    def in_flight(self, bracket_lo: int, bracket_hi: int) -> int:
        return self._port.in_flight(bracket_lo + self._offset, bracket_hi + self._offset)

    def newest_trial_id(self) -> int | None:
        return self._port.newest_trial_id()

    def best_at_budget(self, bracket_lo: int, bracket_hi: int, budget: float, k: int) -> list[RungResult]:
        found = self._port.best_at_budget(bracket_lo + self._offset, bracket_hi + self._offset, budget, k)
        return [r for r in map(self._out, found) if r is not None]


class MupTransferScheduler:
    def __init__(self, spec: SchedulerSpec, limits: Limits) -> None:
        from hpo_service.scheduling.factory import make_scheduler  # the inner kinds live there

        if spec.transfer is None:
            raise ValueError("the mup_transfer scheduler needs a `transfer` section (param, proxy, target)")
        self._spec, self._transfer = spec, spec.transfer
        inner_spec = spec.model_copy(update={"kind": spec.transfer.stage1, "transfer": None})
        self._inner = make_scheduler(inner_spec, limits)
        self._max_budget = spec.max_budget

    # --- geometry ---------------------------------------------------------------------

    def _proxy_of(self, bracket: int) -> int | None:
        return None if bracket >= TARGET_BRACKET else bracket // STRIDE

    def rung_budget(self, bracket: int, rung: int, state: SchedulerState | None = None) -> float:
        proxy = self._proxy_of(bracket)
        if proxy is None:
            return self._max_budget
        inner_state = _load(state)["inner"][proxy] if state is not None else None
        return self._inner.rung_budget(bracket - proxy * STRIDE, rung, inner_state)

    def extend(self, state: SchedulerState, port: RungPort, old_max_budget: float
               ) -> tuple[SchedulerState, list[Action]]:
        raise ValueError("a mup_transfer study cannot raise max_budget; only hyperband and asha studies can")

    # --- Scheduler ----------------------------------------------------------------------

    def initial_state(self) -> SchedulerState:
        return {"kind": KIND, "version": VERSION, "stage": 1, "next_proxy": 0,
                "inner": [self._inner.initial_state() for _ in self._transfer.proxy],
                "sources": [], "created": 0, "check_source": None}

    def next_work(self, state: SchedulerState, port: RungPort) -> tuple[SchedulerState, Action | None]:
        state = _load(state)
        if state["stage"] == 1:
            action = self._stage1_work(state, port)
            if action is not None or not self._stage1_done(state, port):
                return state, action
            self._enter_stage2(state, port)
        if state["stage"] == 2:
            if state["created"] < len(state["sources"]):
                return state, self._copy(state, TARGET_BRACKET, state["sources"][state["created"]], {})
            if _in_flight(port, TARGET_BRACKET) > 0:
                return state, None
            self._enter_stage3(state, port)
        if state["stage"] == 3:
            scales = self._check_scales()
            if state["created"] < len(scales):
                param = self._transfer.check.param if self._transfer.check else ""
                return state, self._copy(state, CHECK_BRACKET, state["check_source"],
                                         {param: scales[state["created"]]})
            if _in_flight(port, CHECK_BRACKET) == 0:
                state["stage"] = 4
        return state, None

    def on_result(self, state: SchedulerState, port: RungPort, result: RungResult
                  ) -> tuple[SchedulerState, list[Action]]:
        state = _load(state)
        proxy = self._proxy_of(result.bracket)
        if proxy is None:
            where = "target width" if result.bracket == TARGET_BRACKET else "transfer check"
            return state, [Finish(result.trial_id, f"trained at the {where} for the full budget "
                                                   f"({format_budget(self._max_budget)})")]
        inner_result = RungResult(result.trial_id, result.bracket - proxy * STRIDE, result.rung, result.score)
        inner_state, actions = self._inner.on_result(state["inner"][proxy], self._port(port, proxy), inner_result)
        state["inner"][proxy] = inner_state
        return state, [self._translate(a, proxy) for a in actions]

    def on_lost(self, state: SchedulerState, port: RungPort, trial_id: int, bracket: int, rung: int
                ) -> tuple[SchedulerState, list[Action]]:
        state = _load(state)
        proxy = self._proxy_of(bracket)
        if proxy is None:
            return state, []
        inner_state, actions = self._inner.on_lost(state["inner"][proxy], self._port(port, proxy), trial_id,
                                                   bracket - proxy * STRIDE, rung)
        state["inner"][proxy] = inner_state
        return state, [self._translate(a, proxy) for a in actions]

    def is_finished(self, state: SchedulerState, port: RungPort, in_flight: int) -> bool:
        # Stages 1 and 2 end inside next_work (the next lease request moves the study on).
        state = _load(state)
        if in_flight > 0:
            return False
        if state["stage"] == 3:
            return state["created"] >= len(self._check_scales())
        return state["stage"] == 4

    # --- stages --------------------------------------------------------------------------

    def _port(self, port: RungPort, proxy: int) -> OffsetPort:
        return OffsetPort(port, proxy * STRIDE)

    def _stage1_work(self, state: SchedulerState, port: RungPort) -> Action | None:
        proxies = len(self._transfer.proxy)
        for turn in range(proxies):
            proxy = (state["next_proxy"] + turn) % proxies
            inner_state, action = self._inner.next_work(state["inner"][proxy], self._port(port, proxy))
            state["inner"][proxy] = inner_state
            if action is not None:
                state["next_proxy"] = (proxy + 1) % proxies  # round-robin keeps the proxies in step
                return self._translate(action, proxy)
        return None

    def _stage1_done(self, state: SchedulerState, port: RungPort) -> bool:
        for proxy, inner_state in enumerate(state["inner"]):
            offset_port = self._port(port, proxy)
            if not self._inner.is_finished(inner_state, offset_port, offset_port.in_flight(0, STRIDE)):
                return False
        return True

    def _enter_stage2(self, state: SchedulerState, port: RungPort) -> None:
        widest = max(range(len(self._transfer.proxy)), key=lambda p: self._transfer.proxy[p])
        best = self._port(port, widest).best_at_budget(0, STRIDE, self._max_budget, self._transfer.top_k)
        state.update(stage=2, sources=[r.trial_id for r in best], created=0)

    def _enter_stage3(self, state: SchedulerState, port: RungPort) -> None:
        ranked = port.ranked(TARGET_BRACKET, 0)
        if self._transfer.check is None or not ranked:
            state.update(stage=4)
            return
        state.update(stage=3, created=0, check_source=ranked[0].trial_id)

    def _check_scales(self) -> list[float]:
        check = self._transfer.check
        if check is None:
            return []
        return [check.factor ** step for step in range(-check.steps, check.steps + 1) if step != 0]

    def _copy(self, state: SchedulerState, bracket: int, source: int, scale: dict[str, float]) -> NewTrial:
        state["created"] += 1
        return NewTrial(bracket=bracket, rung=0, budget=self._max_budget, copy_of=source,
                        overrides={self._transfer.param: self._transfer.target}, scale=scale)

    def _translate(self, action: Action, proxy: int) -> Action:
        if isinstance(action, NewTrial):
            return NewTrial(bracket=action.bracket + proxy * STRIDE, rung=action.rung, budget=action.budget,
                            overrides={self._transfer.param: self._transfer.proxy[proxy]})
        if isinstance(action, (Promote, Stop, Finish)):
            return action
        raise AssertionError(f"unexpected inner action {action!r}")


def _in_flight(port: RungPort, bracket: int) -> int:
    return port.in_flight(bracket, bracket + 1)


def _load(state: SchedulerState) -> dict[str, Any]:
    if not isinstance(state, dict) or state.get("kind") != KIND or state.get("version") != VERSION:
        raise ValueError(f"not a {KIND} scheduler snapshot of version {VERSION}")
    copy = dict(state)
    copy["inner"] = list(state["inner"])
    copy["sources"] = list(state["sources"])
    return copy


__all__ = ["CHECK_BRACKET", "MupTransferScheduler", "STRIDE", "TARGET_BRACKET", "TransferSpec"]

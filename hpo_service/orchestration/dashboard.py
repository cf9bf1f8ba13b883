"""Use cases behind the dashboard: read-only, one transaction each, bounded by the chart.

Results are plain frozen dataclasses (the API returns them as they are). Views that
read a whole study are cached per study version (``studies.version`` changes with
every result), so many viewers of one study share one computation; the history is
kept up to date incrementally (`dashboard_history`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from hpo_service.db import dashboard_live as dl
from hpo_service.db import dashboard_queries as dq
from hpo_service.db import repositories as repo
from hpo_service.db.dashboard_table import trial_page
from hpo_service.domain.spec import StudySpec
from hpo_service.errors import InvalidInput
from hpo_service.orchestration import dashboard_build as build
from hpo_service.orchestration import dashboard_views as views
from hpo_service.orchestration.context import Context
from hpo_service.orchestration.dashboard_cache import Background, VersionCache
from hpo_service.orchestration.dashboard_history import LATE_COMMIT_S, HistoryLog, Point
from hpo_service.orchestration.dashboard_rungs import RungTotals, ledger_terms
from hpo_service.orchestration.studies import load_study, load_trial
from hpo_service.orchestration.transfer_report import transfer_report
from hpo_service.sampling.importance import EVALUATORS, evaluator_available, param_importances
from hpo_service.scheduling.factory import make_scheduler
from hpo_service.scheduling.mup_transfer import STRIDE as MUP_BRACKET_STRIDE
from hpo_service.workers.registry import load_trainer

T = TypeVar("T")
log = logging.getLogger("hpo_service.dashboard")
MIN_LEVEL_OBSERVATIONS = 20  # parallel/importance read the highest budget with this many results
IMPORTANCE_MAX_AGE_S = 30.0  # importance moves slowly and costs a model fit
# A study's first importance fit runs in the request up to this many observations (above, and for
# every refit, it runs in a background process: a fit holds the interpreter meanwhile). PED-ANOVA
# takes about 0.1 s for 1,000 observations on this project's 2-core machine; the random forests
# of fANOVA / MDI take seconds. Starting the background process costs seconds too, so doing the
# first fit inline is what lets a Study page draw within a second on a cold server.
IMPORTANCE_SYNC_OBSERVATIONS = {"ped_anova": 1000}
IMPORTANCE_SYNC_DEFAULT = 200
HISTORY_WARM_POINTS = 2000  # what the Study page asks for
MAX_BRACKET_ROWS = 30  # with more brackets than this, brackets of one shape are summed into one row


@dataclass
class DashboardService:
    ctx: Context
    cache: VersionCache = field(default_factory=VersionCache)
    background: Background = field(default_factory=Background)
    stop_warming: threading.Event = field(default_factory=threading.Event)  # set when the server stops

    def _read(self, use_case: Callable[[Session], T]) -> T:
        return self.ctx.run(use_case)

    def warm(self, studies: int) -> list[int]:
        """Build the incremental views (history log, per-rung totals) of the ``studies`` running
        studies updated last, as a page would on its first read; returns their ids. Run in the
        background at server start-up: a study of 100,000 trials takes ~0.3 s to read the first
        time, and without this the first page opened after a restart waits for it."""
        warmed: list[int] = []
        started = time.monotonic()
        try:
            for study_id in self._read(lambda s: dq.recently_updated_running_study_ids(s, studies)) if studies > 0 else []:
                if self.stop_warming.is_set():
                    break
                self.history(study_id, HISTORY_WARM_POINTS)
                self.hyperband(study_id)
                warmed.append(study_id)
        except Exception:  # the database gone, or the server stopping: pages build them on demand
            log.debug("warming the dashboard stopped after studies %s", warmed, exc_info=True)
        if warmed:
            log.info("dashboard: built the views of running studies %s in %.2f s", warmed, time.monotonic() - started)
        return warmed

    def require_study(self, study_id: int, project_id: int | None = None) -> None:
        """Raise NotFound unless the study exists (in ``project_id``, when given)."""
        self._read(lambda s: load_study(s, study_id, project_id=project_id))

    def _rung_totals(self, session: Session, study: Any) -> RungTotals:
        """The study's per-rung totals (dashboard_rungs: final trials are summed once and kept)."""
        signature, keep = ledger_terms(study)

        def read() -> RungTotals:
            cutoff = self.ctx.clock() - timedelta(seconds=LATE_COMMIT_S)
            return self.cache.rung_ledger(study.id).read(session, study.id, signature, cutoff, keep=keep)

        # One read per study version serves every view of a page load (Hyperband, levels, top trials).
        return self.cache.get(("rung-totals", study.id), study.version, 1.0, read)

    # --- study charts ------------------------------------------------------------

    def history(self, study_id: int, max_points: int, project_id: int | None = None) -> views.History:
        def use_case(session: Session) -> views.History:
            spec = StudySpec.model_validate(load_study(session, study_id, project_id=project_id).spec)
            log = self.cache.history_log(study_id)
            cutoff = self.ctx.clock() - timedelta(seconds=LATE_COMMIT_S)
            with log.lock:
                if log.total == 0 and log.watermark == 0:
                    upto = dq.settled_result_id(session, study_id, 0, cutoff)
                    if upto is not None:
                        total = dq.result_count(session, study_id)
                        log.base = log.base_for(total)
                        count, start = dq.history_start(session, study_id, upto, log.base)
                        log.start(count, start, upto, spec.objective.direction.value_of)
                after = log.watermark
                log.consume(dq.results_after(session, study_id, after), spec.objective.direction.value_of)
                log.settle(dq.settled_result_id(session, study_id, after, cutoff))
                stride, sample = log.sample(max_points)
                best, total, levels = list(log.records), log.total, log.levels
            numbers = self._trial_numbers(session, log, {p.trial_id for p in sample + best})

            def columns(points: list[Point]) -> list[list[int | float]]:
                return [[p.seq, p.trial_id, numbers.get(p.trial_id, -1), p.budget, p.value, p.budget_spent]
                        for p in points]

            return views.History(spec.objective.metric, spec.objective.direction.value, total, stride, levels,
                           columns(sample), columns(best))

        return self._read(use_case)

    @staticmethod
    def _trial_numbers(session: Session, log: HistoryLog, wanted: set[int]) -> dict[int, int]:
        """Numbers of the trials a history shows: kept with the log (a trial's number never
        changes), so a live read asks the database only for trials new to the chart."""
        with log.lock:
            known = {i: log.numbers[i] for i in wanted if i in log.numbers}
        found = dq.trial_numbers(session, list(wanted - known.keys())) if len(known) < len(wanted) else {}
        with log.lock:
            if len(log.numbers) > 2 * len(wanted) + 1000:  # forget trials the chart no longer shows
                log.numbers = dict(known)
            log.numbers.update(found)
        return {**known, **found}

    def curves(self, study_id: int, max_trials: int, top: int, max_points: int, metric: str | None,
               project_id: int | None = None) -> views.Curves:
        def use_case(session: Session) -> views.Curves:
            study = load_study(session, study_id, project_id=project_id)
            spec = StudySpec.model_validate(study.spec)
            name = metric or spec.objective.metric
            stamp = (study.version, dl.heads(session, [])[0][0])  # curves also move with every report

            def compute() -> views.Curves:
                top_ids = self._top_trials(session, study_id, self._rung_totals(session, study).levels(), top)
                stride = max(1, math.ceil(study.trials_created / max_trials)) if max_trials else 0
                sampled = dq.sampled_trial_ids(session, study_id, stride, max_trials, study.trials_created) if stride else []
                ids = list(dict.fromkeys(top_ids + sampled))
                trials = {t.id: t for t in dq.trials_by_id(session, ids)}
                reports = build.by_trial(dq.thinned_reports(session, ids, max_points), lambda r: r[0])
                results = build.by_trial(dq.rung_results_of(session, ids), lambda r: r.trial_id)
                decided = dq.decisions_of(session, ids, limit=50 * len(ids) + 100)
                decisions = build.by_trial(decided, lambda d: d.trial_id)
                curves = [build.curve_of(trials[i], i in top_ids, name, reports[i], results[i], decisions[i])
                          for i in ids if i in trials]
                return views.Curves(name, spec.objective.direction.value, study.trials_created, stride, curves)

            return self.cache.get(("curves", study_id, max_trials, top, max_points, name), stamp, 1.0, compute)

        return self._read(use_case)

    @staticmethod
    def _top_trials(session: Session, study_id: int, levels: list[tuple[float, int]], top: int) -> list[int]:
        """The best ``top`` trials: the best results at the highest budget, then the next level down."""
        chosen: list[int] = []
        for budget, _count in levels:
            if len(chosen) >= top:
                break
            for trial_id in dq.best_at_level(session, study_id, budget, top):
                if trial_id not in chosen and len(chosen) < top:
                    chosen.append(trial_id)
        return chosen

    def parallel(self, study_id: int, budget: float | None, max_points: int, top: int,
                 project_id: int | None = None) -> views.Parallel:
        def use_case(session: Session) -> views.Parallel:
            study = load_study(session, study_id, project_id=project_id)
            spec = StudySpec.model_validate(study.spec)

            def compute() -> views.Parallel:
                levels = self._rung_totals(session, study).levels()
                level, count = build.level_with_data(levels, budget, MIN_LEVEL_OBSERVATIONS)
                axes = build.param_axes(spec)
                objective = (spec.objective.metric, spec.objective.direction.value)
                if level is None:
                    return views.Parallel(*objective, None, levels, count, 1, axes, [])
                stride = max(1, math.ceil(count / max_points))
                rows = dq.results_at(session, study_id, level, top, best_first=True)
                rows += dq.results_at(session, study_id, level, max_points, stride=stride)
                seen: set[int] = set()
                data = []
                for trial_id, number, params, value, _score in rows:
                    if trial_id not in seen:
                        seen.add(trial_id)
                        data.append([trial_id, number, value, *(params.get(a.name) for a in axes)])
                return views.Parallel(*objective, level, levels, count, stride, axes, data)

            return self.cache.get(("parallel", study_id, budget, max_points, top), study.version, 1.0, compute)

        return self._read(use_case)

    def importance(self, study_id: int, evaluator: str, budget: float | None, max_observations: int,
                   project_id: int | None = None) -> views.Importance:
        """Optuna's importance over one budget level. Fitting takes a while, so a study with many
        results gets it fitted in a worker process (``pending`` until then) and, once known, a stale
        value is served while a fresh one is fitted."""
        if not evaluator_available(evaluator):
            raise InvalidInput(f"importance evaluator {evaluator!r} is not available "
                               f"(choose from {', '.join(e for e in EVALUATORS if evaluator_available(e))})")

        def observations(session: Session) -> tuple[StudySpec, float | None, int, list[tuple[Any, ...]]]:
            study = load_study(session, study_id, project_id=project_id)
            level, count = build.level_with_data(self._rung_totals(session, study).levels(), budget,
                                                 MIN_LEVEL_OBSERVATIONS)
            stride = max(1, math.ceil(count / max_observations))
            rows = dq.results_at(session, study_id, level, max_observations, stride=stride) if level else []
            return StudySpec.model_validate(study.spec), level, count, rows

        def observed(read: tuple[Any, ...]) -> list[tuple[Any, float]]:
            return [(row[2], row[4]) for row in read[3]]

        def result(read: tuple[Any, ...], values: tuple[dict[str, float], int] | None,
                   error: BaseException | None) -> views.Importance:
            _spec, level, count, _rows = read
            if values is None:  # too few observations fit the space, or the fit failed
                return views.Importance(evaluator, level, count, 0, {}, str(error))
            return views.Importance(evaluator, level, count, values[1], values[0], None)

        key = ("importance", study_id, evaluator, budget, max_observations)
        version = self._read(lambda s: load_study(s, study_id, project_id=project_id).version)
        known = self.cache.peek(key)
        if known is not None and (known[0] == version or time.monotonic() - known[1] < IMPORTANCE_MAX_AGE_S):
            return known[2]  # type: ignore[no-any-return]
        read = self._read(observations)
        if read[1] is None or len(read[3]) < 2:
            value = views.Importance(evaluator, read[1], read[2], 0, {}, "not enough finished trial segments yet")
            self.cache.put(key, version, value)
            return value
        if known is None and len(read[3]) <= IMPORTANCE_SYNC_OBSERVATIONS.get(evaluator, IMPORTANCE_SYNC_DEFAULT):
            try:
                value = result(read, param_importances(read[0].space, observed(read), evaluator), None)
            except ValueError as error:
                value = result(read, None, error)
            self.cache.put(key, version, value)
            return value
        self.background.fit(key, param_importances, (read[0].space, observed(read), evaluator),
                            lambda values, error: self.cache.put(key, version, result(read, values, error)))
        if known is not None:
            return known[2]  # type: ignore[no-any-return]
        return views.Importance(evaluator, read[1], read[2], 0, {}, "computing; ask again in a few seconds",
                                pending=True)

    def hyperband(self, study_id: int, project_id: int | None = None) -> views.HyperbandView:
        def use_case(session: Session) -> views.HyperbandView:
            study = load_study(session, study_id, project_id=project_id)
            spec = StudySpec.model_validate(study.spec)
            scheduler = make_scheduler(spec.scheduler, spec.limits)

            def planned(bracket: int, rung: int) -> float:
                try:
                    return scheduler.rung_budget(bracket, rung, study.scheduler_state)
                except (ValueError, KeyError, TypeError):  # an unreadable snapshot: the spec's geometry
                    return scheduler.rung_budget(bracket, rung)

            def compute() -> views.HyperbandView:
                totals = self._rung_totals(session, study)
                summary = totals.summary()
                starts = {bracket: budget for bracket, rung, budget, *_ in summary if rung == 0}

                def shape(bracket: int) -> Hashable:
                    """Brackets alike: Hyperband's start at the same budget (raises included), and in a
                    mup_transfer study belong to the same proxy."""
                    proxy = bracket // MUP_BRACKET_STRIDE if spec.scheduler.transfer else 0
                    return proxy, starts[bracket] if bracket in starts else planned(bracket, 0)

                return build.hyperband_view(totals.counts, summary, shape, MAX_BRACKET_ROWS, spec.objective.direction,
                                            planned)

            return self.cache.get(("hyperband", study_id), study.version, 1.0, compute)

        return self._read(use_case)

    def extensions(self, study_id: int, project_id: int | None = None) -> dict[str, Any]:
        """What only some studies have: ``mup_transfer``, the stages and transfer result of a
        muP-transfer study (orchestration/transfer_report.py); ``budget_history``, the raises of
        an extended study's max budget, from the decision log. None where a study has none."""
        def use_case(session: Session) -> tuple[StudySpec, list[Any]]:
            study = load_study(session, study_id, project_id=project_id)
            return StudySpec.model_validate(study.spec), dl.study_decisions(session, study_id, "extend", 100)

        spec, raises = self._read(use_case)
        transfer = asdict(transfer_report(self.ctx, study_id, project_id)) if spec.scheduler.transfer else None
        history = {"max_budget": spec.scheduler.max_budget, "raises": [views.decision_row(d) for d in raises]} \
            if raises else None
        return {"mup_transfer": transfer, "budget_history": history}

    # --- tables ------------------------------------------------------------------

    def trial_table(self, study_id: int, project_id: int | None = None, **raw: Any) -> views.TablePage:
        def use_case(session: Session) -> views.TablePage:
            study = load_study(session, study_id, project_id=project_id)
            query = build.table_query(StudySpec.model_validate(study.spec), **raw)
            trials, total = trial_page(session, study_id, query)
            return views.TablePage([views.trial_row(t) for t in trials], total, query.limit, query.offset)

        return self._read(use_case)

    def trial(self, trial_id: int, max_points: int, project_id: int | None = None) -> views.TrialOverview:
        def use_case(session: Session) -> views.TrialOverview:
            trial = load_trial(session, trial_id, project_id=project_id)
            study = load_study(session, trial.study_id)
            spec = StudySpec.model_validate(study.spec)
            results = dq.rung_results_of(session, [trial_id])
            decisions = dq.decisions_of(session, [trial_id], limit=1000)
            owner = dq.worker(session, trial.lease_owner) if trial.lease_owner else None
            return views.TrialOverview(
                views.trial_row(trial), study.id, study.name, spec.objective.metric, spec.objective.direction.value,
                dq.report_count(session, trial_id),
                [[r[1], r[2], r[3]] for r in dq.thinned_reports(session, [trial_id], max_points)],
                build.rung_marks(trial, results, decisions), [views.decision_row(d) for d in decisions],
                build.attempt_rows(dq.attempts_of(session, trial_id), trial.attempt, decisions),
                views.worker_row(owner, None, self.ctx.clock()) if owner else None, trial.checkpoint_uri, trial.seed,
                _adapter_url(session, study.id, trial, spec.trainer.name),
            )

        return self._read(use_case)

    def workers(self, stale_after_s: float, limit: int, project_id: int | None = None) -> list[views.WorkerRow]:
        """Workers by last contact; with ``project_id``, those whose last trial belongs to it."""
        def use_case(session: Session) -> list[views.WorkerRow]:
            now = self.ctx.clock()
            rows = dq.list_workers(session, limit, project_id)
            leased = dq.running_trials_of(session, [w.worker_id for w in rows])
            running = {trial.lease_owner: (trial, name) for trial, name in leased}
            return [views.worker_row(w, running.get(w.worker_id), now, stale_after_s) for w in rows]

        return self._read(use_case)

    # --- live --------------------------------------------------------------------

    def heads(self, study_ids: list[int]) -> views.Heads:
        (report, decision, studies_at, studies, workers_at), versions = self._read(lambda s: dl.heads(s, study_ids))
        return views.Heads(int(report), int(decision), _iso(studies_at), int(studies or 0), _iso(workers_at), versions)

    def changes(self, study_id: int, after_report: int, after_decision: int, limit: int) -> views.Changes:
        def use_case(session: Session) -> views.Changes:
            metric = StudySpec.model_validate(load_study(session, study_id).spec).objective.metric
            reports = [
                {"id": i, "trial_id": t, "number": n, "step": step, "attempt": a,
                 "value": build.number_or_none(m.get(metric)), "metrics": m, "created_at": _iso(at)}
                for i, t, n, step, a, m, at in dl.reports_after(session, study_id, after_report, limit + 1)
            ]
            decided = dl.decisions_after(session, study_id, after_decision, limit + 1)
            decisions = [views.decision_row(d) for d in decided]
            return views.Changes(reports[:limit], decisions[:limit], len(reports) > limit or len(decisions) > limit)

        return self._read(use_case)


def _adapter_url(session: Session, study_id: int, trial: Any, trainer: str) -> str | None:
    """Where the trial's adapter can be downloaded: today the API exports the best trial's."""
    if not trial.checkpoint_uri or not hasattr(load_trainer(trainer), "export_adapter"):
        return None
    best = repo.best_result(session, study_id)
    return f"/api/v1/studies/{study_id}/best/adapter" if best is not None and best.trial_id == trial.id else None


def _iso(moment: Any) -> str | None:
    if isinstance(moment, datetime):
        return moment.isoformat() if moment.tzinfo else moment.replace(tzinfo=UTC).isoformat()
    return None if moment is None else str(moment)

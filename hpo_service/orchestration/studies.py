"""Use cases on whole studies: create, read, pause / resume / cancel. One transaction each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hpo_service.db import repositories as repo
from hpo_service.db.models import Decision, Report, RungResult, Study, Trial
from hpo_service.domain.queries import TrialFilter
from hpo_service.domain.spec import StudySpec
from hpo_service.domain.states import StudyStatus, TrialState
from hpo_service.errors import Conflict, InvalidInput, NotFound
from hpo_service.orchestration.context import Context
from hpo_service.orchestration.spec_loading import resolve_spec
from hpo_service.orchestration.study_driver import StudyDriver
from hpo_service.orchestration.study_end import finish_study
from hpo_service.sampling.proposer import warm_sampler
from hpo_service.scheduling.ladder import max_budget_history
from hpo_service.scheduling.rungs import same_budget
from hpo_service.scheduling.factory import make_scheduler


@dataclass(frozen=True)
class StudySummary:
    study: Study
    trial_counts: dict[str, int]
    best: RungResult | None


@dataclass(frozen=True)
class RungRow:
    bracket: int
    rung: int
    budget: float
    results: int
    promoted: int
    best_value: float


@dataclass(frozen=True)
class TrialDetail:
    trial: Trial
    reports: list[Report]
    rung_results: list[RungResult]
    decisions: list[Decision]


@dataclass(frozen=True)
class TrialCheckpoints:
    """What a checkpoint collector must keep of one trial: the URIs the database refers to, and
    (while the trial runs) whatever its current attempt is writing."""

    trial_id: int
    state: str
    attempt: int
    uris: list[str]


DEFAULT_PROJECT_ID = 1  # created by migration 0002


def load_study(session: Session, study_id: int, *, lock: bool = False, project_id: int | None = None) -> Study:
    """The study, or NotFound — also when another project owns it (404, never 403: no existence leak)."""
    study = repo.get_study(session, study_id, lock=lock)
    if study is None or (project_id is not None and study.project_id != project_id):
        raise NotFound(f"study {study_id} does not exist")
    return study


def load_trial(session: Session, trial_id: int, *, lock: bool = False, project_id: int | None = None) -> Trial:
    trial = repo.get_trial(session, trial_id, lock=lock)
    if trial is None or (project_id is not None and repo.project_of_study(session, trial.study_id) != project_id):
        raise NotFound(f"trial {trial_id} does not exist")
    return trial


class StudyService:
    def __init__(self, context: Context) -> None:
        self._ctx = context

    def create(self, spec: StudySpec, project_id: int = DEFAULT_PROJECT_ID) -> Study:
        return self.create_or_attach(spec, project_id)[0]

    def create_or_attach(self, spec: StudySpec, project_id: int = DEFAULT_PROJECT_ID) -> tuple[Study, bool]:
        """Create the study; the same name with the same spec attaches to the existing one (CI reruns).

        Returns (study, created).
        """
        # Resolve outside the transaction: it reads files and imports the trainer plugin; and the
        # sampler's modules, which its first proposal would import under the study lock.
        spec = resolve_spec(spec, self._ctx.settings.search_space_dir)
        warm_sampler(spec.sampler.kind)
        scheduler = make_scheduler(spec.scheduler, spec.limits)
        stored_spec = spec.model_dump(mode="json")

        def use_case(session: Session) -> tuple[Study, bool]:
            existing = repo.get_study_by_name(session, project_id, spec.name)
            if existing is not None:
                if existing.spec == stored_spec or _extended_from(existing, stored_spec):
                    return existing, False
                raise Conflict(_not_the_same_spec(existing, stored_spec))
            now = self._ctx.clock()
            study = Study(
                name=spec.name, project_id=project_id, spec=stored_spec,
                status=StudyStatus.RUNNING.value, scheduler_state=scheduler.initial_state(),
                version=0, trials_created=0, budget_spent=0.0, created_at=now, updated_at=now,
            )
            session.add(study)
            session.flush()
            return study, True

        try:
            study, created = self._ctx.run(use_case)
        except Conflict as error:
            if not isinstance(error.__cause__, IntegrityError):
                raise
            # Another request inserted this name between our look and our insert (two CI jobs
            # submitting one spec at once): look again, which attaches or names the difference.
            study, created = self._ctx.run(use_case)
        self._ctx.on_work_available()
        return study, created

    def get(self, study_id: int, project_id: int | None = None) -> StudySummary:
        def use_case(session: Session) -> StudySummary:
            study = load_study(session, study_id, project_id=project_id)
            return StudySummary(study, repo.count_states(session, study_id), repo.best_result(session, study_id))

        return self._ctx.run(use_case)

    def list(
        self, *, status: str | None = None, name_contains: str | None = None, limit: int = 50, offset: int = 0,
        project_id: int | None = None,
    ) -> tuple[list[StudySummary], int]:
        def use_case(session: Session) -> tuple[list[StudySummary], int]:
            studies, total = repo.list_studies(
                session, status=status, name_contains=name_contains, limit=limit, offset=offset,
                project_id=project_id,
            )
            summaries = [
                StudySummary(s, repo.count_states(session, s.id), repo.best_result(session, s.id)) for s in studies
            ]
            return summaries, total

        return self._ctx.run(use_case)

    def best(self, study_id: int, project_id: int | None = None) -> tuple[Trial, RungResult]:
        def use_case(session: Session) -> tuple[Trial, RungResult]:
            load_study(session, study_id, project_id=project_id)
            result = repo.best_result(session, study_id)
            if result is None:
                raise NotFound(f"study {study_id} has no finished trial segment yet; try again later")
            return load_trial(session, result.trial_id), result

        return self._ctx.run(use_case)

    def trials(
        self, study_id: int, filters: TrialFilter, *, limit: int, offset: int, project_id: int | None = None
    ) -> tuple[list[Trial], int]:
        def use_case(session: Session) -> tuple[list[Trial], int]:
            load_study(session, study_id, project_id=project_id)
            return repo.list_trials(session, study_id, filters, limit=limit, offset=offset)

        return self._ctx.run(use_case)

    def rungs(self, study_id: int, project_id: int | None = None) -> list[RungRow]:
        def use_case(session: Session) -> list[RungRow]:
            study = load_study(session, study_id, project_id=project_id)
            direction = StudySpec.model_validate(study.spec).objective.direction
            return [
                RungRow(bracket, rung, budget, results, promoted, direction.value_of(best))
                for bracket, rung, budget, results, promoted, best in repo.rung_summary(session, study_id)
            ]

        return self._ctx.run(use_case)

    def trial(self, trial_id: int, project_id: int | None = None) -> TrialDetail:
        def use_case(session: Session) -> TrialDetail:
            trial = load_trial(session, trial_id, project_id=project_id)
            decisions = repo.list_decisions(session, trial.study_id, trial_id=trial_id, after_id=0, limit=1000)
            return TrialDetail(
                trial, repo.reports_of(session, trial_id), repo.rung_results_of(session, trial_id), decisions
            )

        return self._ctx.run(use_case)

    def warm_samplers_in_use(self) -> set[str]:
        """Import the modules of the sampler kinds of the running and paused studies (at start-up);
        returns those kinds."""
        kinds = set(self._ctx.run(repo.sampler_kinds_of_live_studies))
        for kind in kinds:
            warm_sampler(kind)
        return kinds

    def checkpoint_references(
        self, study_id: int, *, after_trial_id: int = 0, limit: int = 1000, project_id: int | None = None
    ) -> list[TrialCheckpoints]:
        def use_case(session: Session) -> list[TrialCheckpoints]:
            load_study(session, study_id, project_id=project_id)
            return [TrialCheckpoints(*row) for row in repo.checkpoint_references(session, study_id, after_trial_id, limit)]

        return self._ctx.run(use_case)

    def decisions(
        self, study_id: int, *, after_id: int = 0, limit: int = 500, project_id: int | None = None
    ) -> list[Decision]:
        def use_case(session: Session) -> list[Decision]:
            load_study(session, study_id, project_id=project_id)
            return repo.list_decisions(session, study_id, trial_id=None, after_id=after_id, limit=limit)

        return self._ctx.run(use_case)

    # --- control -----------------------------------------------------------------
    # Pause, resume, cancel and extend are idempotent: asking for the status (or max_budget)
    # the study already has changes nothing and succeeds. The SDK retries a call whose
    # response was lost; the retry must not report a failure for a change that was made.

    def pause(self, study_id: int, project_id: int | None = None) -> Study:
        return self._transition(study_id, "pause", {StudyStatus.RUNNING}, StudyStatus.PAUSED, project_id)

    def resume(self, study_id: int, project_id: int | None = None) -> Study:
        study = self._transition(study_id, "resume", {StudyStatus.PAUSED}, StudyStatus.RUNNING, project_id)
        self._ctx.on_work_available()
        return study

    def cancel(self, study_id: int, project_id: int | None = None) -> Study:
        def use_case(session: Session) -> Study:
            study = load_study(session, study_id, lock=True, project_id=project_id)
            if study.status == StudyStatus.CANCELLED.value:
                return study  # a repeat (the SDK's retry after a lost response): nothing to do
            _require(study, {StudyStatus.RUNNING, StudyStatus.PAUSED}, "cancel")
            # Running trials are told to stop at their next report or heartbeat.
            finish_study(session, study, StudyStatus.CANCELLED, "study cancelled", self._ctx.clock(),
                         stop_states=(TrialState.PENDING.value, TrialState.PAUSED.value))
            return study

        return self._ctx.run(use_case)

    def extend(self, study_id: int, max_budget: float, project_id: int | None = None) -> Study:
        """Iterative deepening: raise max_budget of a running, paused or completed study."""

        def use_case(session: Session) -> Study:
            study = load_study(session, study_id, lock=True, project_id=project_id)
            _require(study, {StudyStatus.RUNNING, StudyStatus.PAUSED, StudyStatus.COMPLETED}, "extend")
            spec = StudySpec.model_validate(study.spec)
            if spec.scheduler.kind not in ("hyperband", "asha"):
                raise InvalidInput(f"only hyperband and asha studies can be extended, not {spec.scheduler.kind}")
            if max_budget == spec.scheduler.max_budget:
                return study  # already there (a repeat after a lost response): PATCH sets, it does not add
            if not max_budget > spec.scheduler.max_budget:
                raise InvalidInput(f"max_budget must grow: it is {spec.scheduler.max_budget:g}, "
                                   f"you asked for {max_budget:g}")
            try:
                StudyDriver(self._ctx, session, study).extend(max_budget)
            except (ValueError, ValidationError) as error:
                raise InvalidInput(f"cannot extend to max_budget {max_budget:g}: {error}") from error
            return study

        return self._ctx.run(use_case)

    def _transition(
        self, study_id: int, action: str, allowed: set[StudyStatus], target: StudyStatus, project_id: int | None
    ) -> Study:
        def use_case(session: Session) -> Study:
            study = load_study(session, study_id, lock=True, project_id=project_id)
            if study.status == target.value:
                return study  # a repeat (the SDK's retry after a lost response): nothing to do
            _require(study, allowed, action)
            study.status = target.value
            repo.bump_version(session, study, self._ctx.clock())
            return study

        return self._ctx.run(use_case)


def _max_budget_apart(stored: dict[str, Any], submitted: dict[str, Any]) -> tuple[float, float] | None:
    """(stored, submitted) max_budget when the two specs differ in nothing else."""
    stored_max, submitted_max = stored["scheduler"]["max_budget"], submitted["scheduler"]["max_budget"]
    same_otherwise = stored | {"scheduler": stored["scheduler"] | {"max_budget": submitted_max}} == submitted
    return (stored_max, submitted_max) if same_otherwise else None


def _extended_from(existing: Study, submitted: dict[str, Any]) -> bool:
    """The study had ``submitted`` as its spec before it was extended (iterative deepening raises
    only max_budget): a CI job that re-runs with its unchanged spec attaches to it."""
    apart = _max_budget_apart(existing.spec, submitted)
    earlier = max_budget_history(existing.scheduler_state)[:-1]
    return apart is not None and any(same_budget(apart[1], budget) for budget in earlier)


def _not_the_same_spec(existing: Study, submitted: dict[str, Any]) -> str:
    apart = _max_budget_apart(existing.spec, submitted)
    if apart is not None and apart[1] > apart[0]:
        return (f"study {existing.name!r} (id {existing.id}) has max_budget {apart[0]:g} and this spec asks for "
                f"{apart[1]:g}, nothing else differs: raise it with `hpo study extend {existing.name} --max-budget "
                f"{apart[1]:g}` (PATCH /api/v1/studies/{existing.id}), which keeps every trial trained so far")
    return (f"a study named {existing.name!r} exists already (id {existing.id}) with a different spec; "
            "pick another name, or submit the same spec to attach to it")


def _require(study: Study, allowed: set[StudyStatus], action: str) -> None:
    if StudyStatus(study.status) not in allowed:
        raise Conflict(f"cannot {action} study {study.id}: it is {study.status}")


"""SQLAlchemy 2 table models. The migrations in `migrations/versions` are the
history of this file; a test checks that the two agree."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BigInteger ids on PostgreSQL, but SQLite only auto-increments INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Project(Base):
    """Projects own studies and tokens; a token sees nothing of another project."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]


class ApiToken(Base):
    """An API token: only its SHA-256 is stored; the secret is shown once at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings to tell tokens apart
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_studies_project_name"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    spec: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), index=True)
    # The scheduler's JSON snapshot (never a pickle).
    scheduler_state: Mapped[dict[str, Any]]
    # Bumped by every change of trials or results: caches key on it.
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    trials_created: Mapped[int] = mapped_column(Integer, default=0)
    budget_spent: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Trial(Base):
    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("study_id", "number"),
        Index("ix_trials_study_state", "study_id", "state", "id"),
        Index("ix_trials_state_lease_expires", "state", "lease_expires_at"),
        # One live grant per lease request: a retry that arrives while its first try is still
        # being served (a long poll the client gave up on) cannot be granted a second trial;
        # whichever commits second fails here and is answered with the first's grant (migration 0006).
        Index(
            "uq_trials_live_lease_request", "lease_owner", "lease_request", unique=True,
            postgresql_where=text("state = 'running' AND lease_request IS NOT NULL"),
            sqlite_where=text("state = 'running' AND lease_request IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]]
    seed: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    bracket: Mapped[int] = mapped_column(Integer)
    rung: Mapped[int] = mapped_column(Integer)
    budget_done: Mapped[float] = mapped_column(Float, default=0.0)
    budget_target: Mapped[float] = mapped_column(Float)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    # Attempts that ended in a drain (the worker shut down; not the trial's fault): they do
    # not count toward max_attempts (migration 0004).
    drains: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    # The Idempotency-Key of the lease request that granted the lease, if it sent one: a
    # retry of that request (its response was lost) gets the same grant back (migration 0005).
    lease_request: Mapped[str | None] = mapped_column(String(64))
    checkpoint_uri: Mapped[str | None] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Report(Base):
    """Intermediate metrics. Unique on (trial, step): a repeated report is a no-op."""

    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("trial_id", "step", name="uq_reports_trial_step"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    step: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class RungResult(Base):
    """The objective a trial reached at a rung; what the schedulers and samplers read."""

    __tablename__ = "rung_results"
    __table_args__ = (
        UniqueConstraint("trial_id", "rung", name="uq_rung_results_trial_rung"),
        Index("ix_rung_results_ranking", "study_id", "bracket", "rung", "promoted", "score", "trial_id"),
        Index("ix_rung_results_best", "study_id", "budget", "score"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    bracket: Mapped[int] = mapped_column(Integer)
    rung: Mapped[int] = mapped_column(Integer)
    budget: Mapped[float] = mapped_column(Float)
    value: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)  # lower is better
    promoted: Mapped[bool] = mapped_column(Boolean, default=False)
    checkpoint_uri: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


class Decision(Base):
    """Every scheduling and protocol decision, with its reason. ``kind``: per trial promote, stop,
    finish, requeue, fail, reuse (kept with its results by a raise of max_budget); per study
    (``trial_id`` NULL) extend (a raise) and the study's end (completed, failed, cancelled)."""

    __tablename__ = "decisions"
    __table_args__ = (Index("ix_decisions_study", "study_id", "id"), Index("ix_decisions_trial", "trial_id"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]

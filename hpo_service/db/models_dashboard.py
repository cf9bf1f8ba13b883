"""Table models the dashboard adds: the workers that have contacted this service.

Kept apart from `models.py` so the dashboard's tables can be read as one unit; they
share `Base` (and so its metadata and naming convention) with the core tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from hpo_service.db.models import Base, RungResult, Trial


class Worker(Base):
    """One row per worker id, written on lease requests and heartbeats (throttled).

    ``current_trial_id`` is the trial this worker leased last, without a foreign key:
    the heartbeat path must not take key locks on trial rows, and a dangling id (the
    study was deleted) only reads as "no trial". Whether the worker still runs that
    trial is read from the trial itself (state running, lease owner = this worker).
    """

    __tablename__ = "workers"
    __table_args__ = (Index("ix_workers_last_seen", "last_seen"),)

    worker_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str | None] = mapped_column(String(255))
    resources: Mapped[dict[str, Any]]
    current_trial_id: Mapped[int | None] = mapped_column(BigInteger)
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]


# Indexes on core tables that only the dashboard needs; declared here so that they
# live next to the queries that use them (an Index attaches to its columns' table).
Index("ix_trials_study_value", Trial.study_id, Trial.value)
Index("ix_rung_results_study_id", RungResult.study_id, RungResult.id)

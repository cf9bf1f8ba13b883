"""trials.drains: releases by a draining worker, which do not count toward max_attempts

Revision ID: 0004_trial_drains
Revises: 0003_dashboard
Create Date: 2026-11-29

A worker that is shutting down (SIGTERM, a preempted node, a Ray actor drained) gives its
trial back; the trial did nothing wrong, so that release must not use up one of the
study's ``retry.max_attempts``. Every release still starts a new attempt (``trials.attempt``:
fencing and the per-attempt checkpoint folder need it); ``drains`` counts those that were
drains, and the attempts that count are ``attempt - drains``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_trial_drains"
down_revision = "0003_dashboard"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("drains", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_column("drains")

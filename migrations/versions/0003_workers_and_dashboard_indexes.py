"""workers table and the indexes the dashboard reads with

Revision ID: 0003_dashboard
Revises: 0002_access_control
Create Date: 2026-11-28

- ``workers``: one row per worker id (host, resources, last leased trial, first and
  last seen), written by the lease and heartbeat paths and read by the Workers page.
- ``ix_trials_study_value``: the trials table sorted by objective value, and the
  "top trials" of the curves and parallel-coordinates charts, read by index order.
- ``ix_rung_results_study_id``: the optimization history walks a study's results in
  completion order (``rung_results.id``) without sorting them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_dashboard"
down_revision = "0002_access_control"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("worker_id", sa.String(length=128), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=True),
        sa.Column("resources", sa.JSON(), nullable=False),
        sa.Column("current_trial_id", sa.BigInteger(), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_workers")),
    )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.create_index("ix_workers_last_seen", ["last_seen"], unique=False)
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.create_index("ix_trials_study_value", ["study_id", "value"], unique=False)
    with op.batch_alter_table("rung_results", schema=None) as batch_op:
        batch_op.create_index("ix_rung_results_study_id", ["study_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rung_results", schema=None) as batch_op:
        batch_op.drop_index("ix_rung_results_study_id")
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_index("ix_trials_study_value")
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_index("ix_workers_last_seen")
    op.drop_table("workers")

"""trials.lease_request: the Idempotency-Key of the lease request that granted the lease

Revision ID: 0005_lease_requests
Revises: 0004_trial_drains
Create Date: 2026-11-29

A worker whose lease response is lost (a timeout, a reset connection) retries the request.
Without a key the retry leased a second trial, and the first stayed leased to a worker that
never learned its token until the lease expired, which also used up one of its attempts.
With the key stored on the grant, the retry gets that same grant back.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_lease_requests"
down_revision = "0004_trial_drains"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_request", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_column("lease_request")

"""One live grant per lease request: a unique index on (lease_owner, lease_request) of running trials

Revision ID: 0006_live_lease_request
Revises: 0005_lease_requests
Create Date: 2026-11-29

0005 lets a retried lease request find the grant its first try got. It did not cover a retry
that arrives while the first try is still being served (a long poll the client gave up on):
both looked, found nothing, and each was granted a trial. The index makes the second commit
fail, and the lease use case then answers it with the first's grant.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_live_lease_request"
down_revision = "0005_lease_requests"
branch_labels = None
depends_on = None

LIVE = "state = 'running' AND lease_request IS NOT NULL"


def upgrade() -> None:
    # Grants that already broke the rule keep their leases; only their keys are forgotten
    # (the oldest grant keeps its key), so that the index can be built.
    op.execute(
        "UPDATE trials SET lease_request = NULL WHERE " + LIVE + " AND id NOT IN ("
        " SELECT MIN(id) FROM trials WHERE " + LIVE + " GROUP BY lease_owner, lease_request)"
    )
    op.create_index(
        "uq_trials_live_lease_request", "trials", ["lease_owner", "lease_request"], unique=True,
        postgresql_where=sa.text(LIVE), sqlite_where=sa.text(LIVE),
    )


def downgrade() -> None:
    op.drop_index("uq_trials_live_lease_request", table_name="trials")

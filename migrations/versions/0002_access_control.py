"""access control: projects own studies; hashed, scoped API tokens

Revision ID: 0002_access_control
Revises: 0001_initial
Create Date: 2026-11-28

Existing studies move to a project named "default", which is created here; study
names become unique per project instead of globally.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002_access_control"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    projects = op.create_table(
        "projects",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("name", name=op.f("uq_projects_name")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", ID, nullable=False),
        sa.Column("project_id", ID, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name=op.f("fk_api_tokens_project_id_projects"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_project_id"), ["project_id"], unique=False)

    op.bulk_insert(projects, [{"id": 1, "name": "default", "created_at": datetime.now(UTC)}])
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("project_id", ID, nullable=True))
    op.execute("UPDATE studies SET project_id = 1")
    if op.get_bind().dialect.name == "postgresql":
        # The explicit id 1 above did not advance the sequence.
        op.execute("SELECT setval(pg_get_serial_sequence('projects', 'id'), 1)")
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.alter_column("project_id", existing_type=ID, nullable=False)
        batch_op.create_index(batch_op.f("ix_studies_project_id"), ["project_id"], unique=False)
        batch_op.create_foreign_key(batch_op.f("fk_studies_project_id_projects"), "projects", ["project_id"],
                                    ["id"], ondelete="CASCADE")
        batch_op.drop_column("project")
        # Names are unique per project: a project cannot learn another's study names.
        batch_op.drop_constraint("uq_studies_name", type_="unique")
        batch_op.create_unique_constraint("uq_studies_project_name", ["project_id", "name"])


def downgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_constraint("uq_studies_project_name", type_="unique")
        batch_op.create_unique_constraint("uq_studies_name", ["name"])
        batch_op.add_column(sa.Column("project", sa.String(length=64), nullable=False, server_default="default"))
        batch_op.drop_constraint(batch_op.f("fk_studies_project_id_projects"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_studies_project_id"))
        batch_op.drop_column("project_id")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_tokens_project_id"))
    op.drop_table("api_tokens")
    op.drop_table("projects")

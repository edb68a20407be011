"""A lab's adapting jobs kept in the store (one running per lab, by a unique key), and the classifier each lab counts
with when it is not the service's own.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adaptation_jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("lab", sa.String(200), nullable=False, index=True),
        sa.Column("running_lab", sa.String(200), nullable=True, unique=True),
        sa.Column("started_by", sa.String(100), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("figures", sa.JSON, nullable=True),
        sa.Column("model_name", sa.String(500), nullable=True),
        sa.Column("model_sha256", sa.String(64), nullable=True),
    )
    op.create_table(
        "lab_classifiers",
        sa.Column("lab", sa.String(200), primary_key=True),
        sa.Column("model_name", sa.String(500), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("set_by", sa.String(100), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("a sample store is never downgraded")

"""A free-text note per sample (no patient-identifying field is needed beside the sample id).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("samples", sa.Column("note", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    raise NotImplementedError("a sample store is never downgraded")

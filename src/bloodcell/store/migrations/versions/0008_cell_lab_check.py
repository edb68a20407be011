"""Each typed white cell's lab check: unlike the cells of every lab the classifier learned from (None: not checked).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cells", sa.Column("unfamiliar_lab", sa.Boolean, nullable=True))


def downgrade() -> None:
    raise NotImplementedError("a sample store is never downgraded")

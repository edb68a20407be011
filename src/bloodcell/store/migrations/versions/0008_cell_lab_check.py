"""Each typed white cell's lab check: unlike the cells of every lab the classifier learned from (None: not checked);
and room in an audit entry's target for a 200-character sample id or lab name with its prefix ("sample:", "lab:").

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
    if op.get_bind().dialect.name != "sqlite":  # SQLite does not hold text to a declared length
        op.alter_column("audit", "target", type_=sa.String(300), existing_type=sa.String(200), existing_nullable=False)


def downgrade() -> None:
    raise NotImplementedError("a sample store is never downgraded")

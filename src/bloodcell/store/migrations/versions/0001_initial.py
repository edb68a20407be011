"""The first sample store: samples, photos, cells, decisions, timings, users and an append-only audit trail.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_NO_CHANGE = "the audit trail is append-only"


def upgrade() -> None:
    stamp = sa.DateTime(timezone=True)
    op.create_table(
        "samples",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sample_id", sa.String(200), nullable=False, unique=True),
        sa.Column("lab", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("classifier_name", sa.String(200)),
        sa.Column("classifier_sha256", sa.String(64)),
        sa.Column("detector_name", sa.String(200)),
        sa.Column("detector_sha256", sa.String(64)),
        sa.Column("typing_unavailable", sa.Text),
        sa.Column("created_at", stamp, nullable=False),
        sa.Column("updated_at", stamp, nullable=False),
        sa.Column("signed_by", sa.String(100)),
        sa.Column("signed_at", stamp),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "photos",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sample_pk", sa.Integer, sa.ForeignKey("samples.id"), nullable=False, index=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, index=True),
    )
    op.create_table(
        "cells",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sample_pk", sa.Integer, sa.ForeignKey("samples.id"), nullable=False, index=True),
        sa.Column("photo_pk", sa.Integer, sa.ForeignKey("photos.id"), nullable=False, index=True),
        sa.Column("label", sa.String(20), nullable=False),
        *(sa.Column(name, sa.Float, nullable=False) for name in ("x1", "y1", "x2", "y2")),
        sa.Column("score", sa.Float),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("cell_class", sa.String(50)),
        sa.Column("confidence", sa.Float),
        sa.Column("referral_reason", sa.Text),
        sa.Column("origin", sa.String(20), nullable=False),
        sa.Column("removed", sa.Boolean, nullable=False),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sample_pk", sa.Integer, sa.ForeignKey("samples.id"), nullable=False, index=True),
        sa.Column("cell_pk", sa.Integer, sa.ForeignKey("cells.id"), nullable=False, index=True),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("before_class", sa.String(50)),
        sa.Column("after_class", sa.String(50)),
        sa.Column("user", sa.String(100), nullable=False),
        sa.Column("at", stamp, nullable=False),
    )
    op.create_table(
        "timings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sample_pk", sa.Integer, sa.ForeignKey("samples.id"), nullable=False, index=True),
        sa.Column("stage", sa.String(50), nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", stamp, nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sample_pk", sa.Integer, sa.ForeignKey("samples.id"), index=True),
        sa.Column("at", stamp, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(30), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("before", sa.JSON),
        sa.Column("after", sa.JSON),
    )
    _forbid_audit_changes()


def _forbid_audit_changes() -> None:
    """Database triggers that refuse any UPDATE or DELETE of the audit table, whatever client writes."""
    if op.get_bind().dialect.name == "sqlite":
        for event in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_no_{event.lower()} BEFORE {event} ON audit "
                       f"BEGIN SELECT RAISE(ABORT, '{_NO_CHANGE}'); END")
    else:
        op.execute("CREATE FUNCTION bloodcell_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                   f"$$ BEGIN RAISE EXCEPTION '{_NO_CHANGE}'; END $$")
        op.execute("CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit "
                   "FOR EACH ROW EXECUTE FUNCTION bloodcell_audit_append_only()")


def downgrade() -> None:
    raise NotImplementedError("a sample store is never downgraded")

"""The audit trail: every change appended with who, when, what, before and after; never edited or deleted."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from bloodcell.store.errors import StoreError
from bloodcell.store.models import AuditEntry, Sample


def record(session: Session, actor: str, action: str, target: str, before: dict[str, Any] | None,
           after: dict[str, Any] | None, sample: Sample | None = None) -> AuditEntry:
    entry = AuditEntry(actor=actor, action=action, target=target, before=before, after=after,
                       sample_pk=sample.id if sample is not None else None)
    session.add(entry)
    return entry


def trail(session: Session, sample: Sample) -> list[AuditEntry]:
    """A sample's audit entries, oldest first."""
    return list(session.scalars(select(AuditEntry).where(AuditEntry.sample_pk == sample.id).order_by(AuditEntry.id)))


@event.listens_for(AuditEntry, "before_update")
@event.listens_for(AuditEntry, "before_delete")
def _refuse(_mapper, _connection, target: AuditEntry) -> None:
    raise StoreError(f"audit entry {target.id} cannot be changed: the audit trail is append-only")

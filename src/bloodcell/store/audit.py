"""The audit trail: every change appended with who, when, what, before and after; never edited or deleted."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from bloodcell.store.database import can_hold
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


#: The audit trail's target column.
MAX_TARGET = 200


def lab_target(lab: str) -> str:
    """The target the audit trail names a lab's own entries by (its adapting jobs, the classifier it counts with):
    "lab:NAME"; a name kept before the lab-name rule (:mod:`bloodcell.smear.lab_name`) too long for that to fit the
    column is named by its SHA-256, as it was then, so that its jobs still end audited and two names never share a
    trail."""
    target = f"lab:{lab}"
    return target if len(target) <= MAX_TARGET else f"lab-sha256:{hashlib.sha256(lab.encode()).hexdigest()}"


def lab_trail(session: Session, lab: str) -> list[AuditEntry]:
    """A lab's own audit entries (adapting jobs started, done or failed; the classifier chosen), oldest first;
    for a name kept before the lab-name rule whose "lab:NAME" does not fit, those audited under its SHA-256 stand-in
    (:func:`lab_target`), as every entry of it was before the rule and since."""
    if not can_hold(session, lab):
        return []
    query = select(AuditEntry).where(AuditEntry.target == lab_target(lab), AuditEntry.sample_pk.is_(None))
    return list(session.scalars(query.order_by(AuditEntry.id)))


def entry_dict(entry: AuditEntry) -> dict[str, Any]:
    """An audit entry as the CLI's JSON and the service give it."""
    return {"at": entry.at.isoformat(), "actor": entry.actor, "action": entry.action, "target": entry.target,
            "before": entry.before, "after": entry.after}


@event.listens_for(AuditEntry, "before_update")
@event.listens_for(AuditEntry, "before_delete")
def _refuse(_mapper, _connection, target: AuditEntry) -> None:
    raise StoreError(f"audit entry {target.id} cannot be changed: the audit trail is append-only")

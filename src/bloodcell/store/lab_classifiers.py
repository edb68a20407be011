"""The classifier each lab's new counts are typed with: an adapted model a supervisor or admin chose, else the
service's own. Choosing and switching back are audited (who, when, before and after)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bloodcell.smear.lab_name import check_lab
from bloodcell.store.adapt_jobs import iso
from bloodcell.store.audit import lab_target, record
from bloodcell.store.database import can_hold
from bloodcell.store.errors import NotFoundError
from bloodcell.store.models import AdaptationJob, LabClassifier, utcnow
from bloodcell.store.users import Person


def lab_classifier(session: Session, lab: str) -> LabClassifier | None:
    """The adapted classifier chosen for ``lab`` (None: the service's own model)."""
    return session.get(LabClassifier, lab) if can_hold(session, lab) else None


def chosen_sha256s(session: Session) -> set[str]:
    """The SHA-256 of every adapted model some lab's new counts are typed with."""
    return set(session.scalars(select(LabClassifier.model_sha256)))


def describe(row: LabClassifier | None) -> dict[str, Any] | None:
    return None if row is None else {"model": row.model_name, "sha256": row.model_sha256, "by": row.set_by,
                                     "at": iso(row.set_at)}


def adapted_model(session: Session, lab: str, model_name: str) -> AdaptationJob:
    """The finished job of ``lab`` that wrote ``model_name``; NotFoundError (one sentence) when there is none."""
    job = session.scalars(select(AdaptationJob).where(AdaptationJob.lab == lab, AdaptationJob.status == "done",
                                                      AdaptationJob.model_name == model_name)).first()
    if job is None or not job.model_sha256:
        raise NotFoundError(f"{model_name!r} is not a model adapted for this lab: choose one of its finished "
                            "adapting jobs")
    return job


def use_classifier(session: Session, lab: str, model: tuple[str, str] | None, by: Person) -> dict[str, Any] | None:
    """Type ``lab``'s new counts with ``model`` (file name, SHA-256), or with the service's own model (None); by a
    supervisor or an admin, audited; ConfigError for a name the lab-name rule refuses."""
    by.require("adapt")
    check_lab(lab)  # before any query: PostgreSQL refuses a NUL in one, SQLite does not
    row = session.get(LabClassifier, lab)
    before = describe(row)
    if model is None:
        if row is not None:
            session.delete(row)
    elif row is None:
        row = LabClassifier(lab=lab, model_name=model[0], model_sha256=model[1], set_by=by.name, set_at=utcnow())
        session.add(row)
    else:
        row.model_name, row.model_sha256, row.set_by, row.set_at = model[0], model[1], by.name, utcnow()
    after = describe(row) if model is not None else None
    record(session, by.name, "use_classifier", lab_target(lab), {"classifier": before}, {"classifier": after})
    return after

"""A lab's adapting jobs kept in the store: at most one running per lab across every process, and none running forever.

A running job holds its lab in the unique ``running_lab`` column, so a second start for the lab fails in the
database whichever process tries it (:class:`ConflictError`, naming who started the running one and when). The
process running a job renews its ``heartbeat_at`` every :data:`HEARTBEAT_S` seconds; a job whose heartbeat is older
than :data:`STALE_S` seconds (its server was stopped or crashed) is marked failed, "the service stopped while
adapting", the next time the lab's jobs are read or started. Every start, finish and failure is in the audit trail
(who, when, why).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bloodcell.smear.lab_name import check_lab
from bloodcell.store.audit import lab_target, record
from bloodcell.store.database import can_hold
from bloodcell.store.errors import ConflictError
from bloodcell.store.models import AdaptationJob, utcnow
from bloodcell.store.users import Person

#: Seconds between two heartbeats of a running job.
HEARTBEAT_S = 10.0
#: Seconds without a heartbeat after which a running job is taken as stopped with its server.
STALE_S = 60.0
STOPPED = "the service stopped while adapting"
#: Who the audit trail names for a job found stopped.
SERVICE = "bloodcell service"


def fail_stopped(session: Session, lab: str, stale_s: float = STALE_S) -> None:
    """Mark the lab's running job failed (:data:`STOPPED`) when its heartbeat is older than ``stale_s`` seconds
    (one conditional update: a job that ended or beat meanwhile is left as it is)."""
    cutoff = utcnow() - timedelta(seconds=stale_s)
    stopped = session.scalars(update(AdaptationJob)
                              .where(AdaptationJob.running_lab == lab, AdaptationJob.status == "running",
                                     AdaptationJob.heartbeat_at < cutoff)
                              .values(status="failed", message=STOPPED, finished_at=utcnow(), running_lab=None)
                              .returning(AdaptationJob.id)).all()
    for job_id in stopped:
        job = session.get(AdaptationJob, job_id, populate_existing=True)
        record(session, SERVICE, "adapt_failed", lab_target(lab), None, {**job_state(job), "job": job.id})


def latest_job(session: Session, lab: str, stale_s: float = STALE_S) -> AdaptationJob | None:
    """The lab's latest job (a running one whose server stopped is failed first), or None."""
    if not can_hold(session, lab):
        return None
    fail_stopped(session, lab, stale_s)
    return session.scalars(select(AdaptationJob).where(AdaptationJob.lab == lab)
                           .order_by(AdaptationJob.id.desc()).limit(1)).first()


def start_job(store, lab: str, by: Person, model_name: str, stale_s: float = STALE_S) -> AdaptationJob:
    """A new running job of ``lab`` started by ``by`` (audited) that writes the model file ``model_name``;
    ConflictError while another job of the lab runs; ConfigError for a name the lab-name rule refuses."""
    by.require("adapt")
    check_lab(lab)  # before any query: PostgreSQL refuses a NUL in one, SQLite does not
    try:
        with store.session() as session:
            fail_stopped(session, lab, stale_s)
            session.flush()
            now = utcnow()
            job = AdaptationJob(lab=lab, running_lab=lab, started_by=by.name, started_at=now, heartbeat_at=now,
                                status="running", model_name=model_name)
            session.add(job)
            session.flush()
            record(session, by.name, "adapt_started", lab_target(lab), None, {"job": job.id})
    except IntegrityError:
        with store.session() as session:
            running = latest_job(session, lab, stale_s)
        who = f"{running.started_by} started adapting this lab's classifier at {iso(running.started_at)}" \
            if running is not None and running.status == "running" else "another job of this lab is running"
        raise ConflictError(f"{who}: wait for that job to finish") from None
    return job


def beat(store, job_id: int) -> None:
    """Renew a running job's heartbeat."""
    with store.session() as session:
        session.execute(update(AdaptationJob).where(AdaptationJob.id == job_id, AdaptationJob.status == "running")
                        .values(heartbeat_at=utcnow()))


def finish_job(store, job_id: int, *, message: str, figures: dict[str, Any] | None = None,
               sha256: str | None = None) -> AdaptationJob | None:
    """End a running job: done with its ``figures`` and its model file's ``sha256``, or failed (no figures) with the
    sentence ``message``; audited under the name of who started it. None when the job no longer runs (it was found
    stopped, :data:`STOPPED`, while this process went on): its ending as recorded and audited stays. One conditional
    update, so that a job found stopped at the same moment ends once, one way."""
    status = "failed" if figures is None else "done"
    with store.session() as session:
        ended = session.execute(update(AdaptationJob).where(AdaptationJob.id == job_id,
                                                            AdaptationJob.status == "running")
                                .values(status=status, message=message, figures=figures, finished_at=utcnow(),
                                        running_lab=None, model_sha256=sha256 if figures is not None else None))
        if ended.rowcount != 1:
            return None
        job = session.get(AdaptationJob, job_id, populate_existing=True)
        record(session, job.started_by, f"adapt_{status}", lab_target(job.lab), None,
               {**job_state(job), "job": job.id})
    return job


def iso(moment: datetime | None) -> str | None:
    """A stored moment as ISO 8601 in UTC (SQLite gives it back without its zone)."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).isoformat(timespec="seconds")


def job_state(job: AdaptationJob) -> dict[str, Any]:
    """What the page shows of a job."""
    return {"lab": job.lab, "by": job.started_by, "started_at": iso(job.started_at), "state": job.status,
            "finished_at": iso(job.finished_at), "model": job.model_name, "model_sha256": job.model_sha256,
            "message": job.message, "figures": job.figures or {}}

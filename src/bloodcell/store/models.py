"""SQLAlchemy 2 models of the sample store: samples, photos, cells, decisions, timings, users and the audit trail.

The schema itself is made by the Alembic migrations in ``migrations/versions``; these classes must
match their head revision (a test compares them).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: A sample's life: counted -> in_review (a first decision) -> reviewed -> signed (-> in_review when reopened).
STATUSES = ("counted", "in_review", "reviewed", "signed")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class Sample(Base):
    """One sample (a lab's sample id) and the state of its review; ``version`` refuses stale writes."""

    __tablename__ = "samples"

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[str] = mapped_column(String(200), unique=True)
    lab: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(20), default="counted")
    note: Mapped[str] = mapped_column(Text, default="")
    classifier_name: Mapped[Optional[str]] = mapped_column(String(200))
    classifier_sha256: Mapped[Optional[str]] = mapped_column(String(64))
    detector_name: Mapped[Optional[str]] = mapped_column(String(200))
    detector_sha256: Mapped[Optional[str]] = mapped_column(String(64))
    typing_unavailable: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    signed_by: Mapped[Optional[str]] = mapped_column(String(100))
    signed_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    photos: Mapped[list["Photo"]] = relationship(back_populates="sample", order_by="Photo.position")
    cells: Mapped[list["Cell"]] = relationship(back_populates="sample", order_by="Cell.id")
    timings: Mapped[list["Timing"]] = relationship(back_populates="sample", order_by="Timing.id")

    __mapper_args__ = {"version_id_col": version}


class Photo(Base):
    """A photo of a sample; its bytes are the file ``<sha256>`` in the store's photo folder."""

    __tablename__ = "photos"

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_pk: Mapped[int] = mapped_column(ForeignKey("samples.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64), index=True)

    sample: Mapped[Sample] = relationship(back_populates="photos")


class Cell(Base):
    """A detected (or reviewer-added) cell: box, detector label, white-cell class, confidence, referral reason."""

    __tablename__ = "cells"

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_pk: Mapped[int] = mapped_column(ForeignKey("samples.id"), index=True)
    photo_pk: Mapped[int] = mapped_column(ForeignKey("photos.id"), index=True)
    label: Mapped[str] = mapped_column(String(20))
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    score: Mapped[Optional[float]] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer, default=1)
    cell_class: Mapped[Optional[str]] = mapped_column(String(50))
    confidence: Mapped[Optional[float]] = mapped_column(Float)
    referral_reason: Mapped[Optional[str]] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(20), default="detector")
    removed: Mapped[bool] = mapped_column(Boolean, default=False)
    #: A typed white cell's lab check (unlike the cells of every lab the classifier learned from); None: not checked.
    unfamiliar_lab: Mapped[Optional[bool]] = mapped_column(Boolean)

    sample: Mapped[Sample] = relationship(back_populates="cells")


class Decision(Base):
    """A reviewer's decision on one cell (confirm, relabel, platelet, remove, move, add), ``undo`` when it takes back
    their previous one; before and after are in the audit trail."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_pk: Mapped[int] = mapped_column(ForeignKey("samples.id"), index=True)
    cell_pk: Mapped[int] = mapped_column(ForeignKey("cells.id"), index=True)
    action: Mapped[str] = mapped_column(String(20))
    before_class: Mapped[Optional[str]] = mapped_column(String(50))
    after_class: Mapped[Optional[str]] = mapped_column(String(50))
    user: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    undo: Mapped[bool] = mapped_column(Boolean, default=False)


class Timing(Base):
    """How long a step of a sample took (e.g. counting its photos)."""

    __tablename__ = "timings"

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_pk: Mapped[int] = mapped_column(ForeignKey("samples.id"), index=True)
    stage: Mapped[str] = mapped_column(String(50))
    seconds: Mapped[float] = mapped_column(Float)

    sample: Mapped[Sample] = relationship(back_populates="timings")


class User(Base):
    """A person who uses bloodcell: a role and an argon2 password hash (never the password)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """One change: who, when, what, before and after. Append-only (refused by the ORM and by database triggers)."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_pk: Mapped[Optional[int]] = mapped_column(ForeignKey("samples.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(30))
    target: Mapped[str] = mapped_column(String(200))
    before: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    after: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)


class LabSetting(Base):
    """One of the lab's settings (``store/lab_settings.py`` names them), with who set it last (audited too)."""

    __tablename__ = "lab_settings"

    key: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_by: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SignedInSession(Base):
    """A signed-in web session: only the SHA-256 of its cookie is kept, with its CSRF token and expiry."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_name: Mapped[str] = mapped_column(String(100))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SignInFailure(Base):
    """A failed sign-in: the SHA-256 of what it is counted against (a user name, a client) and when; kept for
    :data:`bloodcell.store.sign_in_throttle.WINDOW`."""

    __tablename__ = "sign_in_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    key_sha256: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AdaptationJob(Base):
    """One adapting of a lab's classifier from its cell bank: who started it and when, running/done/failed, the
    figures or the sentence, the model file written and its SHA-256. ``running_lab`` is the lab while the job
    runs and NULL after (unique: one running job per lab, across processes); ``heartbeat_at`` is renewed while
    it runs, so a job whose process stopped is seen as such."""

    __tablename__ = "adaptation_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    lab: Mapped[str] = mapped_column(String(200), index=True)
    running_lab: Mapped[Optional[str]] = mapped_column(String(200), unique=True)
    started_by: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20))
    message: Mapped[Optional[str]] = mapped_column(Text)
    figures: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    model_name: Mapped[Optional[str]] = mapped_column(String(500))
    model_sha256: Mapped[Optional[str]] = mapped_column(String(64))


class LabClassifier(Base):
    """The adapted classifier a lab's new counts are typed with (no row: the service's own model), and who chose it."""

    __tablename__ = "lab_classifiers"

    lab: Mapped[str] = mapped_column(String(200), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(500))
    model_sha256: Mapped[str] = mapped_column(String(64))
    set_by: Mapped[str] = mapped_column(String(100))
    set_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

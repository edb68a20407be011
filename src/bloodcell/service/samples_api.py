"""The sample store over HTTP: sign-in, samples, cells, decisions, sign-off, audit trail and exports.

A person signs in (``POST /v1/session``) and gets an HttpOnly, SameSite=Strict session cookie and a
CSRF token that every change must echo in ``X-CSRF-Token``; a machine sends the service's API key
instead and may read and export, but not decide or sign (those are made by a named person). Store
errors become one sentence with their status: 401 not signed in, 429 too many failed sign-ins lately
(:mod:`bloodcell.store.sign_in_throttle`), 403 role or CSRF token, 404 no such sample, 409 a stale write (the
``version`` sent is not the sample's) or a signed sample, 422 a bad value, 500 the store itself failing (a kept
photo missing or changed on disk).
Changes: ``decisions`` (confirm, relabel, remove a cell), ``cells`` (add a missed one), ``finish`` (review
done), ``sign`` and ``reopen`` (a supervisor; reopening needs a reason). The web page reads back who is signed
in (``GET /v1/session``, with the CSRF token, so a reload resumes), each cell's last decision and the photos.
"""

from __future__ import annotations

import hmac
import io
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from bloodcell.errors import ConfigError
from bloodcell.report.sample_report import render_html
from bloodcell.service.limits import RequestRejected
from bloodcell.store.audit import entry_dict, trail
from bloodcell.store.database import Store
from bloodcell.store.errors import (AuthError, ConflictError, NotFoundError, ReadOnlyError, RoleError, StoreError,
                                    ThrottledError)
from bloodcell.store.exports import fhir_bundle, sample_csv
from bloodcell.store.lab_settings import lab_settings
from bloodcell.store.models import AuditEntry, Decision
from bloodcell.store.report import report_data
from bloodcell.store.samples import (ACTIONS, add_cell, decide, find, finish_review, list_samples, reopen, sign,
                                     standing_decisions, summary)
from bloodcell.store.sessions import SESSION_HOURS, end_session, session_user, start_session
from bloodcell.store.sign_in_throttle import authenticate_throttled
from bloodcell.store.users import Person

COOKIE = "bloodcell_session"
CSRF_HEADER = "X-CSRF-Token"
#: Paths that check their own callers (session or API key), so the service's API-key gate lets them through.
OWN_AUTH_PREFIXES = ("/v1/session", "/v1/samples", "/v1/lab")
_STATUS = ((ThrottledError, 429, "too_many_sign_ins"), (AuthError, 401, "unauthorized"), (RoleError, 403, "forbidden"), (NotFoundError, 404, "not_found"),
           (ConflictError, 409, "conflict"), (ReadOnlyError, 409, "read_only"), (ConfigError, 422, "invalid_request"),
           (StoreError, 500, "store_error"))  # the store itself (a photo file gone or changed on disk): last


class SignIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)


class SignedIn(BaseModel):
    name: str
    role: str
    csrf_token: str = Field(description=f"Send it back in the {CSRF_HEADER} header with every change.")


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cell_id: int
    action: Literal[ACTIONS]  # type: ignore[valid-type]
    cell_class: str | None = Field(default=None, max_length=50, description="The new class (relabel only).")
    box: tuple[float, float, float, float] | None = Field(
        default=None, description="x1, y1, x2, y2 in the photo's pixels (move only).")
    undo: bool = Field(default=False, description="Take back the reviewer's latest standing decision on the cell "
                       "(audited): the cell is again as it was before it, whatever the action sent.")
    version: int = Field(description="The sample's version the reviewer saw; a different one is refused with 409.")

    @model_validator(mode="after")
    def _fields_fit_the_action(self) -> DecisionRequest:
        if self.box is not None and self.action != "move":
            raise ValueError(f"a box is sent only to move a cell's box, not with {self.action!r}")
        if self.cell_class is not None and self.action != "relabel":
            raise ValueError(f"a cell_class is sent only with a relabel, not with {self.action!r}")
        return self


class VersionRequest(BaseModel):
    version: int = Field(description="The sample's version the user saw; a different one is refused with 409.")


class ReopenRequest(VersionRequest):
    reason: str = Field(min_length=1, max_length=2000, description="Why the signed sample is reopened (audited).")


class AddCellRequest(VersionRequest):
    photo: int = Field(ge=0, description="The photo's position in the sample.")
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in the photo's pixels.")
    label: Literal["RBC", "WBC", "Platelets"]
    cell_class: str | None = Field(default=None, max_length=50, description="A white cell's class.")


@contextmanager
def http_errors() -> Iterator[None]:
    """Store errors as RequestRejected: the status of their kind and their one sentence."""
    try:
        yield
    except tuple(kind for kind, _, _ in _STATUS) as exc:
        status, code = next((s, c) for kind, s, c in _STATUS if isinstance(exc, kind))
        raise RequestRejected(status, code, str(exc)) from None


def add_sample_store_routes(app: FastAPI, store: Store, api_key: str | None, classes: list[str]) -> None:
    """Mount the store's endpoints on ``app`` (the caller adds :data:`OWN_AUTH_PREFIXES` to its open paths);
    ``classes``: the white-cell classes a reviewer may relabel a cell to."""
    router = APIRouter(prefix="/v1", tags=["samples"])
    reporting = threading.Lock()  # one report's photos decoded at a time (each holds a full-resolution photo)

    def caller(request: Request, change: bool = False) -> Person | None:
        return signed_in_caller(store, api_key, request, change)

    @router.post("/session", response_model=SignedIn)
    def sign_in(body: SignIn, request: Request, response: Response) -> SignedIn:
        with http_errors():
            person = authenticate_throttled(store, body.name, body.password, request.client.host if request.client
                                            else None)
        with store.session() as session:
            token, csrf = start_session(session, person)
        response.set_cookie(COOKIE, token, max_age=int(SESSION_HOURS * 3600), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return SignedIn(name=person.name, role=person.role, csrf_token=csrf)

    @router.get("/session", response_model=SignedIn)
    def signed_in(request: Request) -> SignedIn:
        """Who this browser's session cookie signs in, with its CSRF token (a reloaded page resumes with it)."""
        with http_errors(), store.session() as session:
            person, csrf = session_user(session, request.cookies.get(COOKIE, ""))
        return SignedIn(name=person.name, role=person.role, csrf_token=csrf)

    @router.delete("/session", status_code=204)
    def sign_out(request: Request, response: Response) -> None:
        caller(request, change=True)
        with store.session() as session:
            end_session(session, request.cookies.get(COOKIE, ""))
        response.delete_cookie(COOKIE, path="/")

    @router.get("/samples")
    def samples(request: Request) -> list[dict[str, Any]]:
        caller(request)
        with store.session() as session:
            counted_by = _counted_by(session)
            return [{**summary(sample), "counted_by": counted_by.get(sample.id)} for sample in list_samples(session)]

    @router.get("/samples/{sample_id}")
    def sample(sample_id: str, request: Request) -> dict[str, Any]:
        caller(request)
        with http_errors(), store.session() as session:
            return _with_cells(session, find(session, sample_id), classes)

    @router.get("/samples/{sample_id}/photos/{position}")
    def photo(sample_id: str, position: int, request: Request) -> Response:
        """A photo of the sample as it was counted (the page cuts its white cells from it)."""
        caller(request)
        with http_errors(), store.session() as session:
            kept = next((p for p in find(session, sample_id).photos if p.position == position), None)
            if kept is None:
                raise NotFoundError(f"sample {sample_id!r} has no photo {position}")
            data = store.photos.get(kept.sha256)
        with Image.open(io.BytesIO(data)) as image:  # kept only after it was decoded and counted
            media = Image.MIME.get(image.format or "", "application/octet-stream")
        return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=86400"})

    @router.get("/samples/{sample_id}/audit")
    def audit(sample_id: str, request: Request) -> list[dict[str, Any]]:
        caller(request)
        with http_errors(), store.session() as session:
            return [entry_dict(e) for e in trail(session, find(session, sample_id))]

    @router.post("/samples/{sample_id}/decisions")
    def decision(sample_id: str, body: DecisionRequest, request: Request) -> dict[str, Any]:
        person = caller(request, change=True)
        with http_errors(), store.session() as session:
            decide(session, sample_id, body.cell_id, body.action, person, cell_class=body.cell_class, box=body.box,
                   undo=body.undo, expected_version=body.version, classes=classes, photos=store.photos)
            session.flush()  # the new version, or 409 when another writer got there first
            return _with_cells(session, find(session, sample_id), classes)

    @router.post("/samples/{sample_id}/cells")
    def add_missed_cell(sample_id: str, body: AddCellRequest, request: Request) -> dict[str, Any]:
        person = caller(request, change=True)
        with http_errors(), store.session() as session:
            add_cell(session, sample_id, body.photo, body.box, body.label, person, cell_class=body.cell_class,
                     expected_version=body.version, classes=classes, photos=store.photos)
            session.flush()
            return _with_cells(session, find(session, sample_id), classes)

    def status_change(sample_id: str, request: Request, change: Callable[[Session, Person], object]) -> dict[str, Any]:
        """A signed-in person's ``change`` of a sample's status (CSRF-checked), then the sample's summary."""
        person = caller(request, change=True)
        with http_errors(), store.session() as session:
            change(session, person)
            session.flush()
            return summary(find(session, sample_id))

    @router.post("/samples/{sample_id}/finish")
    def finish(sample_id: str, body: VersionRequest, request: Request) -> dict[str, Any]:
        return status_change(sample_id, request, lambda session, person: finish_review(
            session, sample_id, person, expected_version=body.version))

    @router.post("/samples/{sample_id}/sign")
    def sign_off(sample_id: str, body: VersionRequest, request: Request) -> dict[str, Any]:
        return status_change(sample_id, request, lambda session, person: sign(
            session, sample_id, person, expected_version=body.version))

    @router.post("/samples/{sample_id}/reopen")
    def reopen_signed(sample_id: str, body: ReopenRequest, request: Request) -> dict[str, Any]:
        return status_change(sample_id, request, lambda session, person: reopen(
            session, sample_id, person, body.reason, expected_version=body.version))

    @router.get("/samples/{sample_id}/export")
    def export(sample_id: str, request: Request, format: Literal["csv", "fhir"] = "fhir",
               wbc: float | None = None) -> Response:
        caller(request)
        with http_errors(), store.session() as session:
            kept = find(session, sample_id)
            if format == "csv":
                body, media, suffix = sample_csv(kept), "text/csv", "csv"
            else:
                body, media, suffix = json.dumps(fhir_bundle(kept, wbc)), "application/fhir+json", "json"
        filename = "".join(c if c.isalnum() or c in "-_." else "_" for c in sample_id)
        return Response(body, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="{filename}.{suffix}"'})

    @router.get("/samples/{sample_id}/report", response_class=HTMLResponse)
    def printable_report(sample_id: str, request: Request, wbc: float | None = None) -> HTMLResponse:
        """The sample's printable report (HTML with a print stylesheet; print it from the browser to PDF).
        ``wbc``: the blood's white-cell concentration in 10^9/L, for absolute counts."""
        caller(request)
        with http_errors(), reporting, store.session() as session:
            page = render_html(report_data(session, find(session, sample_id), store.photos, wbc))
        return HTMLResponse(page, headers={"Cache-Control": "no-store", "Content-Security-Policy": REPORT_CSP})

    app.include_router(router)


#: The report page loads nothing: its style is inline and its photos are data URIs.
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def signed_in_caller(store: Store, api_key: str | None, request: Request, change: bool = False) -> Person | None:
    """The signed-in person (None: a machine with the API key); 401/403 for anyone else; a ``change`` needs the
    session's CSRF token."""
    token = request.cookies.get(COOKIE)
    if token:
        with http_errors(), store.session() as session:
            person, csrf = session_user(session, token)
        if change and not hmac.compare_digest(request.headers.get(CSRF_HEADER, "").encode(), csrf.encode()):
            raise RequestRejected(403, "csrf", f"a change needs the session's CSRF token in {CSRF_HEADER}")
        return person
    presented = request.headers.get("x-api-key") or _bearer(request)
    if api_key and presented and hmac.compare_digest(presented.encode(), api_key.encode()):
        if change:
            raise RequestRejected(401, "unauthorized", "decisions and sign-off are made by a signed-in person, "
                                  "not with the API key")
        return None
    raise RequestRejected(401, "unauthorized", "sign in (POST /v1/session) or send the API key")


def signed_in_with_csrf(store: Store, token: str, csrf: str) -> bool:
    """Whether ``token`` is a live session's and ``csrf`` its CSRF token: a signed-in page's request, which the
    service's API-key gate lets through (the route still checks who may do what)."""
    try:
        with store.session() as session:
            _, expected = session_user(session, token)
    except AuthError:
        return False
    return bool(csrf) and hmac.compare_digest(csrf.encode(), expected.encode())


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


_CALL_CHANGES = ("relabel", "platelet", "remove")


def _calls(decisions: list[Decision]) -> dict[int, tuple[str | None, str]]:
    """Per cell, from its standing decisions in order: its class before the first one that changed its call (the
    model's class) and who made the latest such change."""
    calls: dict[int, tuple[str | None, str]] = {}
    for d in decisions:
        if d.action in _CALL_CHANGES:
            calls[d.cell_pk] = (calls[d.cell_pk][0] if d.cell_pk in calls else d.before_class, d.user)
    return calls


def _whose_call(cell, call: tuple[str | None, str] | None) -> dict[str, Any]:
    """``model_call``: the classifier's class and confidence (None for a cell a person added); ``changed_by``: who
    changed the model's call, when the cell's class now differs from it (None while the model's call stands)."""
    if cell.origin == "reviewer":
        return {"model_call": None, "changed_by": None}
    model_class, by = call if call else (cell.cell_class, None)
    changed = by is not None and (cell.removed or cell.cell_class != model_class)
    return {"model_call": {"class": model_class, "confidence": cell.confidence}, "changed_by": by if changed else None}


def _counted_by(session: Session, sample_pk: int | None = None) -> dict[int, str]:
    """Who counted each sample (or only ``sample_pk``), from the audit trail: {sample's key: actor}."""
    query = select(AuditEntry.sample_pk, AuditEntry.actor).where(AuditEntry.action == "count")
    if sample_pk is not None:
        query = query.where(AuditEntry.sample_pk == sample_pk)
    return dict(session.execute(query).all())


def _with_cells(session: Session, sample, classes: list[str]) -> dict[str, Any]:
    """A sample's summary with its cells, each with its last standing decision (the review page's state, reloaded from the
    store), and the classes a cell may be relabelled to (its lab's cell bank is ``GET /v1/lab/adaptation``'s: it is
    not read again with every decision)."""
    positions = {photo.id: photo.position for photo in sample.photos}
    standing = standing_decisions(session, sample)  # the sample's decisions read once, the undone ones left out
    calls = _calls([decision for kept in standing.values() for decision in kept])
    last = {cell: {"action": kept[-1].action, "by": kept[-1].user, "at": kept[-1].at.isoformat()}
            for cell, kept in standing.items() if kept}
    cells = [{"id": c.id, "photo": positions[c.photo_pk], "label": c.label,
              "box": [c.x1, c.y1, c.x2, c.y2], "class": c.cell_class, "confidence": c.confidence,
              "referral_reason": c.referral_reason, "origin": c.origin, "removed": c.removed,
              "decision": last.get(c.id), **_whose_call(c, calls.get(c.id))}
             for c in sample.cells]
    return {**summary(sample), "counted_by": _counted_by(session, sample.id).get(sample.id), "cells": cells,
            "classes": classes,
            **lab_settings(session)}

"""Web sessions: a random cookie token (only its SHA-256 is stored), a CSRF token, an expiry, the user's current role."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bloodcell.store.errors import AuthError
from bloodcell.store.models import SignedInSession, User
from bloodcell.store.users import Person

#: How long a sign-in lasts (a working shift).
SESSION_HOURS = 10


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(session: Session, person: Person, hours: float = SESSION_HOURS) -> tuple[str, str]:
    """A new session of ``person``: (cookie token, CSRF token). Expired sessions are cleared on the way."""
    now = datetime.now(timezone.utc)
    session.execute(delete(SignedInSession).where(SignedInSession.expires_at < now))
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    session.add(SignedInSession(token_sha256=_digest(token), user_name=person.name, csrf_token=csrf,
                                created_at=now, expires_at=now + timedelta(hours=hours)))
    return token, csrf


def session_user(session: Session, token: str) -> tuple[Person, str]:
    """The signed-in user of ``token`` (role as it is now) and the session's CSRF token; AuthError otherwise."""
    row = session.scalar(select(SignedInSession).where(SignedInSession.token_sha256 == _digest(token or "")))
    if row is None:
        raise AuthError("you are not signed in: sign in again")
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=timezone.utc)
    if expires < datetime.now(timezone.utc):
        raise AuthError("your session has expired: sign in again")
    user = session.scalar(select(User).where(User.name == row.user_name))
    if user is None or not user.active:
        raise AuthError(f"the user {row.user_name!r} is disabled")
    return Person(user.name, user.role), row.csrf_token


def end_session(session: Session, token: str) -> None:
    session.execute(delete(SignedInSession).where(SignedInSession.token_sha256 == _digest(token or "")))

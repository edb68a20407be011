"""Slow password guessing: after :data:`LIMITS` failed sign-ins within :data:`WINDOW` for one user name (or from one
client), no password is checked for that name (or client) for a delay that doubles with each further failure.

The failures are kept in the store, so every process serving it (several service workers, the command line)
counts the same ones. A name that is no user's is counted and refused just like a user's, so the answer never
tells whether a name exists. Only SHA-256 digests of the names and clients are kept (a password typed into the
name field is not).
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select

from bloodcell.store.database import Store
from bloodcell.store.errors import AuthError, ThrottledError
from bloodcell.store.models import SignInFailure, utcnow
from bloodcell.store.users import Person, authenticate

#: How long a failed sign-in counts.
WINDOW = timedelta(minutes=15)
#: Failures within :data:`WINDOW` allowed before a wait: per user name, per client (an address several people share).
LIMITS = {"name": 5, "client": 20}
#: The wait after the failure that reaches a limit; it doubles with every further one, up to :data:`WINDOW`.
FIRST_WAIT = timedelta(seconds=30)


def _key(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)  # SQLite hands back naive UTC times


def _wait(session, key: str, limit: int, now: datetime) -> float:
    """Seconds before ``key`` may try again (0: now)."""
    failures = [_aware(at) for at in session.scalars(select(SignInFailure.at).where(
        SignInFailure.key_sha256 == key, SignInFailure.at >= now - WINDOW).order_by(SignInFailure.at))]
    if len(failures) < limit:
        return 0.0
    wait = min(FIRST_WAIT * 2 ** (len(failures) - limit), WINDOW)
    return max(0.0, (failures[-1] + wait - now).total_seconds())


def authenticate_throttled(store: Store, name: str, password: str, client: str | None = None) -> Person:
    """:func:`~bloodcell.store.users.authenticate`, refused with ThrottledError (no password checked) while the
    name or ``client`` (an address; None: not counted per client) waits; a failure is kept, a success clears the
    name's failures."""
    keys = {_key("name", (name or "").strip()): LIMITS["name"]}
    if client:
        keys[_key("client", client)] = LIMITS["client"]
    now = utcnow()
    with store.session() as session:
        session.execute(delete(SignInFailure).where(SignInFailure.at < now - WINDOW))
        wait = max(_wait(session, key, limit, now) for key, limit in keys.items())
    if wait:
        raise ThrottledError(f"too many failed sign-ins with this user name or from this computer: try again in "
                             f"{math.ceil(wait)} seconds")
    try:
        with store.session() as session:
            person = authenticate(session, name, password)
            session.execute(delete(SignInFailure).where(SignInFailure.key_sha256 == next(iter(keys))))
    except AuthError:
        with store.session() as session:
            session.add_all(SignInFailure(key_sha256=key, at=now) for key in keys)
        raise
    return person

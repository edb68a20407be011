"""People and roles: argon2-hashed passwords (pwdlib), no default password, every change audited.

technician: count and review; supervisor: also sign off and reopen; admin: manage users. A supervisor or an
admin may adapt the lab's classifier from its cell bank. The first
user of a store must be an admin and is created without signing in (from the command line); every
later user is added by a signed-in admin.
"""

from __future__ import annotations

from dataclasses import dataclass

from pwdlib import PasswordHash
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bloodcell.errors import ConfigError
from bloodcell.store.audit import record
from bloodcell.store.errors import AuthError, NotFoundError, RoleError
from bloodcell.store.models import User
from bloodcell.store.vocabulary import ROLES
from bloodcell.wording import with_article

MIN_PASSWORD = 10
#: What each role may do.
PERMISSIONS = {
    "technician": {"count", "review"},
    "supervisor": {"count", "review", "sign", "adapt"},
    "admin": {"users", "settings", "adapt"},
}
_WHAT = {"count": "record counts", "review": "review cells", "sign": "sign off or reopen a sample",
         "users": "manage users", "settings": "change the lab's settings",
         "adapt": "adapt the lab's classifier"}
_HASHER = PasswordHash.recommended()
#: Verified against for unknown names, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash("no user has this password")


@dataclass(frozen=True)
class Person:
    """A signed-in user (name and role), detached from any session."""

    name: str
    role: str

    def require(self, permission: str) -> None:
        """RoleError in one sentence unless this user's role allows ``permission``."""
        if permission not in PERMISSIONS.get(self.role, set()):
            allowed = [role for role, granted in PERMISSIONS.items() if permission in granted]
            raise RoleError(f"{self.name} is {with_article(self.role)}: only "
                            f"{' or '.join(with_article(role) for role in allowed)} may {_WHAT[permission]}")


def check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise ConfigError(f"a password needs at least {MIN_PASSWORD} characters")
    return password


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    return role


def user_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User))


def add_user(session: Session, name: str, role: str, password: str, by: Person | None) -> Person:
    """Add a user; ``by`` is the signed-in admin (None only for a store's first user, who must be an admin)."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ConfigError("a user name needs 1 to 100 characters")
    _check_role(role)
    check_password(password)
    if by is None:
        if user_count(session):
            raise AuthError("this store has users already: sign in as an admin to add one")
        if role != "admin":
            raise ConfigError("the first user of a store must be an admin (--role admin)")
        actor = name
    else:
        by.require("users")
        actor = by.name
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise ConfigError(f"there is already a user called {name!r}")
    session.add(User(name=name, role=role, password_hash=_HASHER.hash(password), active=True))
    record(session, actor, "user_add", f"user:{name}", None, {"role": role, "active": True})
    return Person(name, role)


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


def disable_user(session: Session, name: str, by: Person) -> None:
    """Disable a user (kept, with their history, but unable to sign in)."""
    by.require("users")
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFoundError(f"no user called {name!r}")
    if user.name == by.name:
        raise ConfigError("an admin cannot disable their own account")
    if user.active:
        user.active = False
        record(session, by.name, "user_disable", f"user:{name}", {"active": True}, {"active": False})


def authenticate(session: Session, name: str, password: str) -> Person:
    """The user ``name`` if ``password`` is theirs and they are active; AuthError (one sentence) otherwise."""
    user = session.scalar(select(User).where(User.name == (name or "").strip()))
    valid = _HASHER.verify(password or "", user.password_hash if user else _DUMMY_HASH)
    if user is None or not valid:
        raise AuthError("wrong user name or password")
    if not user.active:
        raise AuthError(f"the user {user.name!r} is disabled")
    return Person(user.name, user.role)

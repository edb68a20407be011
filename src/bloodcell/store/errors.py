"""The store's errors: each one sentence; the service maps ConflictError to 409, AuthError to 401 (ThrottledError to
429), RoleError to 403."""

from __future__ import annotations

from bloodcell.errors import BloodcellError


class StoreError(BloodcellError):
    """The store cannot be opened or used (not a bloodcell store, damaged, made by a newer bloodcell)."""


class NotFoundError(StoreError):
    """No sample, cell or user of that name."""


class ConflictError(StoreError):
    """A stale write: the sample changed since the writer read it (another reviewer, another workstation)."""


class ReadOnlyError(StoreError):
    """A change to a signed sample (reopen it with a reason first) or a step the sample's status does not allow."""


class AuthError(StoreError):
    """Wrong user name or password, or a disabled user."""


class ThrottledError(AuthError):
    """Too many failed sign-ins lately for a user name or from a client: no password is checked for a while."""


class RoleError(StoreError):
    """The user's role does not allow the action."""

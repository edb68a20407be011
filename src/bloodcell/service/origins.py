"""Who may talk to the service: the Host header checked against an allowed list, and no cross-origin writes.

A keyless server on a lab PC must not be reachable from a web page the lab's browser happens to show:
DNS rebinding points the page's own host name at the server, so every request names a Host the server
does not answer to (refused, 421 is for proxies: 400 here); a page of another origin that POSTs to the
server sends an ``Origin`` (or ``Sec-Fetch-Site``) header naming itself (refused, 403) unless that
origin is in ``cors_origins``. Clients that are not browsers (curl, scripts) send neither header and
are unaffected. Answers to allowed origins get CORS headers from Starlette's ``CORSMiddleware``.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatch
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from bloodcell.errors import ConfigError

#: The host names of this machine as seen from itself.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
#: Methods that only read: allowed from any origin (the answers carry no CORS header for others).
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def check_origin_settings(allowed_hosts: Iterable[str], cors_origins: Iterable[str]) -> None:
    """ConfigError unless the allowed hosts are host names and the CORS origins are scheme://host[:port]."""
    for host in allowed_hosts:
        if not isinstance(host, str) or not host or "/" in host or host != host.strip():
            raise ConfigError(f"allowed host {host!r} must be a host name such as lab-pc.local (no scheme or path)")
    for origin in cors_origins:
        parts = urlsplit(origin) if isinstance(origin, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(f"CORS origin {origin!r} must be scheme://host[:port], e.g. https://lims.lab.org")


def host_name(header: str) -> str:
    """The host of a Host header value, without its port and brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def host_allowed(header: str, allowed: Iterable[str]) -> bool:
    """Whether the Host header value names one of ``allowed`` (``*`` and ``*.domain`` patterns allowed)."""
    name = host_name(header)
    return bool(name) and any(pattern == "*" or fnmatch(name, pattern.lower()) for pattern in allowed)


def cross_origin(method: str, headers: dict[str, str], cors_origins: Iterable[str]) -> str | None:
    """The foreign origin of a state-changing request sent by another site's page, or None when it may run."""
    if method in SAFE_METHODS:
        return None
    origin = headers.get("origin")
    if origin is None:
        site = headers.get("sec-fetch-site", "")
        return f"a {site} page" if site in ("cross-site", "same-site") else None
    if origin.rstrip("/") in {o.rstrip("/") for o in cors_origins}:
        return None
    if origin != "null" and urlsplit(origin).netloc.lower() == headers.get("host", "").strip().lower():
        return None
    return origin


class HostOriginMiddleware:
    """400 for a Host header not in ``allowed_hosts``; 403 for a POST (PUT, PATCH, DELETE) from another origin."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...], cors_origins: tuple[str, ...]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.cors_origins = cors_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        host = headers.get("host", "")
        if not host_allowed(host, self.allowed_hosts):
            message = (f"this server does not answer to the host name {host_name(host) or '(none)'!r}; "
                       "start it with --allowed-host NAME to allow it")
            await _refuse(400, "host_not_allowed", message, scope, receive, send)
            return
        origin = cross_origin(scope["method"], headers, self.cors_origins)
        if origin is not None:
            message = (f"a request from {origin} may not change anything here (only this server's own pages may); "
                       "start it with --cors-origin ORIGIN to allow that site")
            await _refuse(403, "cross_origin", message, scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _refuse(status: int, code: str, message: str, scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse({"error": code, "message": message}, status_code=status)(scope, receive, send)

"""Service limits: upload size, image type and pixel checks, and a bounded work queue.

Everything here refuses work early and with a clear reason, so a hostile or careless client
can never make the server decode a bomb, buffer an unbounded body or queue unbounded work.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
import warnings
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from PIL import Image, UnidentifiedImageError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bloodcell.errors import ConfigError

T = TypeVar("T")

#: Pillow format names accepted for upload (checked from the bytes, never from the file name).
ACCEPTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")


@dataclass(frozen=True)
class Limits:
    """Bounds applied to every request; each can be set with ``BLOODCELL_<FIELD>`` in the environment."""

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_files: int = 32
    timeout_s: float = 60.0
    max_in_flight: int = 1
    max_waiting: int = 16
    retry_after_s: int = 2

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Limits":
        """Defaults overridden by ``BLOODCELL_MAX_UPLOAD_BYTES``, ``BLOODCELL_TIMEOUT_S``, ..."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = environ.get(f"BLOODCELL_{spec.name.upper()}")
            if raw is None:
                continue
            kind = float if spec.type == "float" else int
            try:
                values[spec.name] = kind(raw)
            except ValueError as exc:
                raise ConfigError(f"BLOODCELL_{spec.name.upper()}={raw!r} is not a number") from exc
        return cls(**values).validated()

    def validated(self) -> "Limits":
        """Return self after checking every bound is positive (``max_waiting`` may be 0)."""
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value < 0 or (value == 0 and spec.name != "max_waiting"):
                raise ConfigError(f"service limit {spec.name} must be positive, got {value}")
        return self


class RequestRejected(Exception):
    """A request or one uploaded file refused with an HTTP status, a short code and one sentence."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once the streamed body passes the limit (FastAPI re-raises it)."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than the {limit} byte limit")


class BodySizeLimitMiddleware:
    """413 for bodies over ``max_bytes``: at once from ``Content-Length``, else while streaming.

    The streamed count holds for chunked uploads and for clients whose ``Content-Length`` lies.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            error = BodyTooLarge(self.max_bytes)
            body = {"error": "payload_too_large", "message": error.detail}
            await JSONResponse(body, status_code=413, headers={"Connection": "close"})(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted_receive, send)


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an accepted upload says, read without decoding pixels."""

    format: str
    width: int
    height: int


_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def sniff_format(data: bytes) -> str | None:
    """The accepted format named by the file's magic bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC if data.startswith(magic)), None)


def inspect_upload(data: bytes, name: str, max_pixels: int) -> ImageHeader:
    """Identify an upload from its bytes and check its pixel count before any decoding.

    Raises ``RequestRejected``: 400 for an empty file, 415 for anything that is not a
    JPEG/PNG/BMP/TIFF/WebP image, 422 when the magic bytes name such a format but the header
    is broken, 413 for more than ``max_pixels`` pixels.
    """
    if not data:
        raise RequestRejected(400, "empty_file", f"{name}: file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
                header = ImageHeader(image.format or "?", *image.size)
    except Image.DecompressionBombError:
        raise RequestRejected(413, "image_too_large", f"{name}: image has too many pixels (limit {max_pixels})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        claimed = sniff_format(data)
        if claimed is not None:
            raise RequestRejected(422, "corrupt_image", f"{name}: {claimed} file is truncated or corrupt") from None
        raise RequestRejected(
            415,
            "unsupported_media_type",
            f"{name}: not a supported image (the content must be JPEG, PNG, BMP, TIFF or WebP)",
        ) from None
    if header.width * header.height > max_pixels:
        raise RequestRejected(
            413,
            "image_too_large",
            f"{name}: image is {header.width}x{header.height} pixels, more than the limit of {max_pixels}",
        )
    if header.width == 0 or header.height == 0:
        raise RequestRejected(422, "corrupt_image", f"{name}: image has no pixels")
    return header


class WorkQueue:
    """Admission control: at most ``max_in_flight`` jobs run and ``max_waiting`` wait; more get 503.

    Jobs run on ``executor`` so the event loop stays responsive. A job that outlives the
    request timeout answers 504 but keeps its slot until its thread really finishes, so
    timed-out work can never pile up behind the limit.
    """

    def __init__(self, limits: Limits, executor: Executor, on_change: Callable[[int, int], None] | None = None):
        self.limits = limits
        self.executor = executor
        self.in_flight = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(limits.max_in_flight)
        self._on_change = on_change

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.in_flight, self.waiting)

    @asynccontextmanager
    async def _admitted(self) -> AsyncIterator[None]:
        if self.in_flight + self.waiting >= self.limits.max_in_flight + self.limits.max_waiting:
            raise RequestRejected(
                503,
                "busy",
                "the server is busy; retry shortly",
                headers={"Retry-After": str(self.limits.retry_after_s)},
            )
        self.waiting += 1
        self._changed()
        try:
            yield
        finally:
            self.waiting -= 1
            self._changed()

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(*args)`` in the executor within the queue bounds and the request timeout."""
        deadline = time.monotonic() + self.limits.timeout_s
        async with self._admitted():
            try:
                await asyncio.wait_for(self._slots.acquire(), timeout=self.limits.timeout_s)
            except asyncio.TimeoutError:
                raise _timeout(self.limits.timeout_s) from None
        self.in_flight += 1
        self._changed()
        future = asyncio.get_running_loop().run_in_executor(self.executor, func, *args)
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=max(deadline - time.monotonic(), 0.001))
        except asyncio.TimeoutError:
            raise _timeout(self.limits.timeout_s) from None

    def _release(self, future: asyncio.Future) -> None:
        if not future.cancelled():
            future.exception()  # mark a failure of an abandoned (timed-out) job as retrieved
        self.in_flight -= 1
        self._slots.release()
        self._changed()


def _timeout(seconds: float) -> RequestRejected:
    return RequestRejected(504, "timeout", f"the request took longer than the {seconds:g} s limit")

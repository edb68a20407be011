"""Service limits: body size and time, image type and pixel checks, and a bounded work queue.

Everything here refuses work early and with a clear reason, so a hostile or careless client
can never make the server decode a bomb, buffer an unbounded body, hold a connection open by
sending slowly, or queue unbounded work. The bounds themselves are :class:`Limits`
(:mod:`bloodcell.service.settings`).
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image, UnidentifiedImageError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bloodcell.data.images import decoding_bytes, decoding_refusal, too_many_pixels
from bloodcell.service.settings import Limits

__all__ = [
    "ACCEPTED_FORMATS", "BodyLimitMiddleware", "CancelToken", "ImageHeader", "JobCancelled", "Limits",
    "RequestRejected", "WorkQueue", "check_request_pixels", "inspect_upload", "sniff_format",
]

T = TypeVar("T")

#: Pillow format names accepted for upload (checked from the bytes, never from the file name).
ACCEPTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")


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
        super().__init__(413, f"the request body is larger than the {limit} byte limit", headers={"Connection": "close"})


class BodyTimeout(HTTPException):
    """Raised from ``receive`` when the body has not fully arrived in time (FastAPI re-raises it)."""

    def __init__(self, seconds: float):
        super().__init__(408, f"the request body did not arrive within the {seconds:g} s limit", headers={"Connection": "close"})


class BodyLimitMiddleware:
    """Bounds each request body in bytes and in time.

    Bytes: 413 at once from ``Content-Length``, else while streaming (the streamed count holds
    for chunked uploads and for clients whose ``Content-Length`` lies). Time: the whole body
    must arrive within ``timeout_s`` of the request's start, or the request gets 408 and the
    connection is closed, so a client that stops sending (or trickles bytes) cannot hold a
    connection and its buffers open. Once the body is complete, ``receive`` is passed through
    untouched (disconnect listeners wait as long as they like). Slow *headers* are the
    server's or a reverse proxy's business (uvicorn has no header timeout).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            error = BodyTooLarge(self.max_bytes)
            body = {"error": "payload_too_large", "message": error.detail}
            await JSONResponse(body, status_code=413, headers=error.headers)(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        received = 0
        complete = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                raise BodyTimeout(self.timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
                complete = not message.get("more_body", False)
            else:
                complete = True  # http.disconnect: nothing more will come
            return message

        await self.app(scope, limited_receive, send)


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an accepted upload says, read without decoding pixels."""

    format: str
    width: int
    height: int
    mode: str = "RGB"

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decoding_bytes(self) -> int:
        """Peak memory of decoding it to 8-bit RGB (bytes per pixel by mode: a 16-bit image costs ten 8-bit ones)."""
        return decoding_bytes(self.mode, self.width, self.height)


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


def inspect_upload(data: bytes, name: str, max_pixels: int, max_decoding_bytes: int | None = None) -> ImageHeader:
    """Identify an upload from its bytes and check its pixel count and decoding memory before any decoding.

    Raises ``RequestRejected``: 400 for an empty file, 415 for anything that is not a
    JPEG/PNG/BMP/TIFF/WebP image, 422 when the magic bytes name such a format but the header
    is broken, 413 for more than ``max_pixels`` pixels or more than ``max_decoding_bytes`` to decode.
    """
    if not data:
        raise RequestRejected(400, "empty_file", f"{name}: file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
                header = ImageHeader(image.format or "?", *image.size, mode=image.mode)
    except Image.DecompressionBombError:
        raise RequestRejected(413, "image_too_large", too_many_pixels(name, max_pixels)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        claimed = sniff_format(data)
        if claimed is not None:
            raise RequestRejected(422, "corrupt_image", f"{name}: {claimed} file is truncated or corrupt") from None
        raise RequestRejected(
            415,
            "unsupported_media_type",
            f"{name}: not a supported image (the content must be JPEG, PNG, BMP, TIFF or WebP)",
        ) from None
    if header.pixels > max_pixels:
        raise RequestRejected(
            413,
            "image_too_large",
            too_many_pixels(name, max_pixels, header.width, header.height),
        )
    refusal = None if max_decoding_bytes is None else decoding_refusal(name, header.mode, header.width,
                                                                       header.height, max_decoding_bytes)
    if refusal is not None:
        raise RequestRejected(413, "image_too_large", refusal)
    if header.width == 0 or header.height == 0:
        raise RequestRejected(422, "corrupt_image", f"{name}: image has no pixels")
    return header


def check_request_pixels(headers: Sequence[ImageHeader], max_request_pixels: int) -> None:
    """413 when the images of one request would decode to more than ``max_request_pixels`` in all.

    Called with the headers of the usable files before anything is decoded: a request of many
    small files that each pass ``max_pixels`` still cannot make the server decode gigabytes.
    """
    total = sum(header.pixels for header in headers)
    if total > max_request_pixels:
        raise RequestRejected(
            413,
            "request_too_large",
            f"the {len(headers)} images of this request have {total} pixels in all, "
            f"more than the limit of {max_request_pixels} per request",
        )


class JobCancelled(Exception):
    """Raised inside a job at a checkpoint once its request has given up (it answered 504)."""


class CancelToken:
    """Handed to every job: the job calls :meth:`check` between its steps (images, batches)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`JobCancelled` when the request has been abandoned."""
        if self._event.is_set():
            raise JobCancelled("the request was abandoned")


class _Job:
    """Book-keeping of one running job: does it still hold a worker slot?"""

    __slots__ = ("token", "holds_slot", "abandoned", "done")

    def __init__(self) -> None:
        self.token = CancelToken()
        self.holds_slot = True
        self.abandoned = False
        self.done = False


class WorkQueue:
    """Admission control: at most ``max_in_flight`` jobs run and ``max_waiting`` wait; more get 503.

    Jobs run on ``executor`` (a thread pool of :meth:`threads_needed` threads) so the event
    loop stays responsive; each job is called as ``func(token, *args)`` and checks its
    :class:`CancelToken` between steps.

    When a request times out (504), its job is *abandoned*: the token is cancelled, so the
    job stops at its next checkpoint (after the image or batch it is working on), and its
    slot is freed at once so the next request can run. What keeps running is bounded: at most
    ``max_in_flight`` abandoned jobs may still be finishing their current step; while that
    many are, a further timed-out job keeps its slot until its thread really ends (so
    abandoned work can never pile up), and the server never runs more than
    ``2 * max_in_flight`` job threads.
    """

    def __init__(self, limits: Limits, executor: Executor,
                 on_change: Callable[[int, int, int], None] | None = None):
        self.limits = limits
        self.executor = executor
        self.max_abandoned = limits.max_in_flight
        self.in_flight = 0
        self.waiting = 0
        self.abandoned = 0
        self._slots = asyncio.Semaphore(limits.max_in_flight)
        self._on_change = on_change

    @staticmethod
    def threads_needed(limits: Limits) -> int:
        """Executor threads: the running jobs plus the abandoned ones still finishing a step."""
        return 2 * limits.max_in_flight

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.in_flight, self.waiting, self.abandoned)

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
        """Run ``func(token, *args)`` in the executor within the queue bounds and the request timeout."""
        deadline = time.monotonic() + self.limits.timeout_s
        async with self._admitted():
            try:
                await asyncio.wait_for(self._slots.acquire(), timeout=self.limits.timeout_s)
            except asyncio.TimeoutError:
                raise _timeout(self.limits.timeout_s) from None
        job = _Job()
        self.in_flight += 1
        self._changed()
        future = asyncio.get_running_loop().run_in_executor(self.executor, func, job.token, *args)
        future.add_done_callback(lambda done: self._finished(job, done))
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=max(deadline - time.monotonic(), 0.001))
        except asyncio.TimeoutError:
            self._abandon(job)
            raise _timeout(self.limits.timeout_s) from None
        except asyncio.CancelledError:  # the server is shutting down: stop the job at its next step
            self._abandon(job)
            raise

    def _abandon(self, job: _Job) -> None:
        job.token.cancel()
        if job.abandoned or job.done:
            return
        job.abandoned = True
        if self.abandoned < self.max_abandoned:
            self.abandoned += 1
            self._free_slot(job)
        self._changed()

    def _free_slot(self, job: _Job) -> None:
        if job.holds_slot:
            job.holds_slot = False
            self.in_flight -= 1
            self._slots.release()

    def _finished(self, job: _Job, future: asyncio.Future) -> None:
        if not future.cancelled():
            future.exception()  # mark a failure (or JobCancelled) of an abandoned job as retrieved
        job.done = True
        if job.holds_slot:
            self._free_slot(job)
        elif job.abandoned:
            self.abandoned -= 1
        self._changed()


def _timeout(seconds: float) -> RequestRejected:
    return RequestRejected(504, "timeout", f"the request took longer than the {seconds:g} s limit")

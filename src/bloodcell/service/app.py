"""The web service: FastAPI app around the predictor and the smear counter, plus the web page.

``create_app(model=...)`` builds one app; ``create_app_from_env()`` is the uvicorn factory
used by ``bloodcell serve`` (settings come from ``BLOODCELL_*`` variables so that several
worker processes build identical apps). Uploads are processed in memory; FastAPI spools a
large multipart part to an anonymous temporary file that is deleted when the request ends.
"""

from __future__ import annotations

import base64
import hmac
import io
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TextIO

from fastapi import File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from bloodcell import __version__
from bloodcell.data.images import read_image
from bloodcell.errors import ImageError
from bloodcell.service.limits import BodySizeLimitMiddleware, Limits, RequestRejected, WorkQueue, inspect_upload
from bloodcell.service.observability import ObservabilityMiddleware, ServiceMetrics
from bloodcell.service.schemas import (
    CellResult,
    ClassifyResponse,
    ClassProbability,
    CountResponse,
    ErrorResponse,
    HealthResponse,
    ModelInfo,
    ModelsResponse,
    SmearImageResult,
)

STATIC_DIR = Path(__file__).parent / "static"
#: Paths reachable without the API key: liveness, the page and its files, the API docs.
OPEN_PATHS = ("/health", "/", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/favicon.ico")
OPEN_PREFIXES = ("/static/", "/static-offline-docs/")
PAGE_CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; object-src 'none'"

DESCRIPTION = """\
Classify single blood-cell images (`POST /v1/classify`) and count cells on smear photos
(`POST /v1/count`). Upload images as the multipart field `files`.

Refusals are JSON `{"error": code, "message": sentence}` with a 4xx status: 400 empty file,
401 missing/wrong API key, 413 body, image pixels or file count over the limit, 415 content
that is not a JPEG/PNG/BMP/TIFF/WebP image (checked from the bytes, not the name),
422 corrupt image or invalid parameters, 503 queue full (with `Retry-After`), 504 timeout.
In a request with several files, unusable files get an `error` in their result item; the
request fails only when no file is usable.

When the server is started with `BLOODCELL_API_KEY`, `/v1/*` and `/metrics` need the key in
`X-API-Key` or `Authorization: Bearer <key>`; `/health`, the page and the docs stay open.
"""

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Empty file.",
        401: "Missing or wrong API key.",
        413: "Upload, image or file count over the limit.",
        415: "Not a supported image.",
        422: "Corrupt image or invalid parameters.",
        503: "Server busy; retry after Retry-After seconds.",
        504: "Request timed out.",
    }.items()
}


@dataclass
class ServiceState:
    """Everything one app instance uses; nothing is global."""

    classifier: Any
    model_name: str
    limits: Limits
    queue: WorkQueue
    metrics: ServiceMetrics
    count_smears: Callable[..., Any] | None
    refer_below: float | None


def create_app(
    model: str | Path | None = None,
    *,
    classifier: Any = None,
    count_smears: Callable[..., Any] | None = None,
    limits: Limits | None = None,
    api_key: str | None = None,
    refer_below: float | None = 0.6,
    access_log: TextIO | None = None,
    num_threads: int | None = None,
) -> FastAPIOffline:
    """Build the app around ``classifier`` (or ``bloodcell.load(model)``).

    ``count_smears`` defaults to the smear counter of :mod:`bloodcell.smear`; ``access_log``
    is where JSON access lines go (default stderr); ``api_key`` protects ``/v1/*`` and ``/metrics``;
    ``num_threads`` is passed to ``load`` (torch/onnxruntime CPU threads).
    """
    limits = (limits or Limits()).validated()
    if classifier is None:
        from bloodcell.inference.predictor import load

        classifier = load(model, num_threads=num_threads)
    if count_smears is None:
        count_smears = _default_smear_counter(classifier)
    metrics = ServiceMetrics()
    executor = ThreadPoolExecutor(max_workers=limits.max_in_flight, thread_name_prefix="bloodcell-infer")

    @asynccontextmanager
    async def lifespan(app):
        # A fresh queue per server run: its asyncio primitives belong to the running loop.
        app.state.service.queue = WorkQueue(limits, executor, on_change=metrics.set_queue)
        yield

    app = FastAPIOffline(
        title="bloodcell",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        static_url="/static-offline-docs",
        redoc_url=None,
    )
    app.state.service = ServiceState(
        classifier=classifier,
        model_name=_model_name(classifier, model),
        limits=limits,
        queue=WorkQueue(limits, executor, on_change=metrics.set_queue),
        metrics=metrics,
        count_smears=count_smears,
        refer_below=refer_below,
    )
    _add_error_handlers(app)
    _add_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=limits.max_upload_bytes)
    app.add_middleware(ApiKeyMiddleware, api_key=api_key)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, stream=access_log)
    return app


def create_app_from_env() -> FastAPIOffline:
    """uvicorn factory reading ``BLOODCELL_MODEL``, ``BLOODCELL_API_KEY``, ``BLOODCELL_REFER_BELOW``,
    ``BLOODCELL_TORCH_THREADS`` and the limits (see :meth:`Limits.from_env`)."""
    refer = os.environ.get("BLOODCELL_REFER_BELOW")
    threads = os.environ.get("BLOODCELL_TORCH_THREADS")
    return create_app(
        os.environ.get("BLOODCELL_MODEL") or None,
        limits=Limits.from_env(),
        api_key=os.environ.get("BLOODCELL_API_KEY") or None,
        refer_below=float(refer) if refer else 0.6,
        num_threads=int(threads) if threads else None,
    )


def _model_name(classifier: Any, model: str | Path | None) -> str:
    source = getattr(classifier, "source", None) or (str(model) if model else "model")
    return Path(source).stem


def _default_smear_counter(classifier: Any, detector: str = "centernet") -> Callable[..., Any] | None:
    try:
        from bloodcell.smear import count_smears
    except ImportError:
        return None
    return lambda images, names: count_smears(images, classifier=classifier, names=names, detector=detector)


class ApiKeyMiddleware:
    """401 for protected paths without the key, checked before the body is read."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            self.api_key
            and scope["type"] == "http"
            and path not in OPEN_PATHS
            and not path.startswith(OPEN_PREFIXES)
            and not hmac.compare_digest(_presented_key(scope).encode(), self.api_key.encode())
        ):
            body = ErrorResponse(error="unauthorized", message="this endpoint needs the API key (X-API-Key header or Authorization: Bearer)")
            response = JSONResponse(body.model_dump(), status_code=401, headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _presented_key(scope: Scope) -> str:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
    if "x-api-key" in headers:
        return headers["x-api-key"]
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _error(request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None) if hasattr(request, "state") else None
    body = ErrorResponse(error=code, message=message, request_id=request_id)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def _add_error_handlers(app: FastAPIOffline) -> None:
    state: ServiceState = app.state.service

    @app.exception_handler(RequestRejected)
    async def rejected(request: Request, exc: RequestRejected) -> JSONResponse:
        state.metrics.errors.labels(request.url.path, exc.code).inc()
        return _error(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        state.metrics.errors.labels(request.url.path if exc.status_code != 404 else "other", code).inc()
        return _error(request, exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for item in exc.errors():
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
            parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", "invalid")))
        state.metrics.errors.labels(request.url.path, "invalid_request").inc()
        return _error(request, 422, "invalid_request", "invalid request: " + "; ".join(parts))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        state.metrics.errors.labels(request.url.path, "internal_error").inc()
        return _error(request, 500, "internal_error", "internal error; see the server log")


def _state(request: Request) -> ServiceState:
    return request.app.state.service


UploadFiles = Annotated[list[UploadFile], File(min_length=1, description="One or more image files (multipart field `files`).")]


async def _read_uploads(files: list[UploadFile], limits: Limits) -> list[tuple[str, bytes]]:
    if len(files) > limits.max_files:
        raise RequestRejected(413, "too_many_files", f"{len(files)} files sent; the limit is {limits.max_files} per request")
    return [(upload.filename or f"file{i + 1}", await upload.read()) for i, upload in enumerate(files)]


def _screen(uploads: list[tuple[str, bytes]], limits: Limits) -> tuple[list[tuple[int, str, bytes]], dict[int, RequestRejected]]:
    """Split uploads into usable ones and refused ones (by index); all refused -> raise the first."""
    usable, refused = [], {}
    for index, (name, data) in enumerate(uploads):
        try:
            inspect_upload(data, name, limits.max_pixels)
            usable.append((index, name, data))
        except RequestRejected as exc:
            refused[index] = exc
    if not usable:
        first = refused[min(refused)]
        if len(uploads) > 1:
            first.message = f"none of the {len(uploads)} files could be used; first: {first.message}"
        raise first
    return usable, refused


def _png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _decode(usable: list[tuple[int, str, bytes]], max_pixels: int) -> tuple[list[tuple[int, str, Image.Image]], dict[int, str]]:
    decoded, errors = [], {}
    for index, name, data in usable:
        try:
            decoded.append((index, name, read_image(data, max_pixels=max_pixels)))
        except ImageError as exc:
            errors[index] = str(exc).replace("<bytes>", name)
    return decoded, errors


def _classify_job(state: ServiceState, usable, top_k: int, tta: bool, explain: bool) -> tuple[dict[int, CellResult], dict[int, str]]:
    """Decode and classify in a worker thread; returns results and decode errors by index."""
    decoded, errors = _decode(usable, state.limits.max_pixels)
    results: dict[int, CellResult] = {}
    if not decoded:
        return results, errors
    images = [image for _, _, image in decoded]
    predictions = state.classifier.predict(images, top_k=top_k, refer_below=state.refer_below, tta=tta)
    for (index, name, image), pred in zip(decoded, predictions):
        item = CellResult(
            filename=name,
            label=pred.label,
            confidence=pred.confidence,
            referred=pred.referred,
            reason=pred.reason,
            top_k=[ClassProbability(label=label, probability=prob) for label, prob in pred.top_k],
            error=pred.error,
        )
        if explain and pred.error is None:
            item.gradcam_png = _gradcam(state.classifier, image, pred.label)
        results[index] = item
    return results, errors


def _gradcam(classifier: Any, image: Image.Image, label: str | None) -> str:
    class_index = classifier.class_names.index(label) if label in classifier.class_names else None
    with tempfile.TemporaryDirectory(prefix="bloodcell-gradcam-") as folder:
        path = classifier.explain(image, Path(folder) / "gradcam.png", class_index=class_index)
        return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _count_job(state: ServiceState, usable) -> tuple[dict[str, Any], dict[int, str], list[tuple[int, str]]]:
    decoded, errors = _decode(usable, state.limits.max_pixels)
    if not decoded:
        return {}, errors, []
    doc = state.count_smears([image for _, _, image in decoded], [name for _, name, _ in decoded])
    return doc, errors, [(index, name) for index, name, _ in decoded]


def _add_routes(app: FastAPIOffline) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/health", response_model=HealthResponse, tags=["service"])
    async def health(request: Request) -> HealthResponse:
        """Liveness: always open, even when an API key is set."""
        state = _state(request)
        return HealthResponse(status="ok", version=__version__, model=state.model_name)

    @app.get("/metrics", tags=["service"], response_class=Response, responses={401: ERROR_RESPONSES[401]})
    async def metrics(request: Request) -> Response:
        """Prometheus text exposition: requests, latency, errors, queue depth, in-flight jobs."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(_state(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", response_model=ModelsResponse, tags=["models"], responses={401: ERROR_RESPONSES[401]})
    async def models(request: Request) -> ModelsResponse:
        """The loaded classifier: class names, input size, calibration temperature."""
        state = _state(request)
        clf = state.classifier
        engine = type(getattr(clf, "backend", None)).__name__.replace("Backend", "").lower() or "unknown"
        info = ModelInfo(
            name=state.model_name,
            engine=engine,
            class_names=list(clf.class_names),
            input_size=int(clf.data_config.input_size),
            temperature=float(getattr(clf, "temperature", 1.0)),
            ood_guard=getattr(clf, "guard", None) is not None,
            gradcam=getattr(clf, "model", None) is not None,
        )
        return ModelsResponse(models=[info])

    @app.post("/v1/classify", response_model=ClassifyResponse, tags=["classify"], responses=ERROR_RESPONSES)
    async def classify(
        request: Request,
        files: UploadFiles,
        top_k: Annotated[int, Query(ge=1, le=20, description="Number of most probable classes to return.")] = 3,
        tta: Annotated[bool, Query(description="Average over 8 rotated/flipped views.")] = False,
        explain: Annotated[bool, Query(description="Add a Grad-CAM overlay (base64 PNG) to each result.")] = False,
    ) -> ClassifyResponse:
        """Classify single-cell images: label, calibrated confidence, top-k, referral flag."""
        state = _state(request)
        uploads = await _read_uploads(files, state.limits)
        usable, refused = _screen(uploads, state.limits)
        if explain and getattr(state.classifier, "model", None) is None:
            raise RequestRejected(422, "explain_unavailable", "Grad-CAM needs a PyTorch model; this server runs an ONNX model")
        results, errors = await state.queue.run(_classify_job, state, usable, top_k, tta, explain)
        if not results:
            first = min(errors)
            raise RequestRejected(422, "corrupt_image", errors[first])
        items = []
        for index, (name, _) in enumerate(uploads):
            if index in results:
                items.append(results[index])
            else:
                message = refused[index].message if index in refused else errors[index]
                items.append(CellResult(filename=name, error=message))
        state.metrics.images.labels("/v1/classify").inc(len(results))
        for exc in refused.values():
            state.metrics.errors.labels("/v1/classify", exc.code).inc()
        return ClassifyResponse(model=state.model_name, results=items)

    @app.post(
        "/v1/count",
        response_model=CountResponse,
        tags=["count"],
        responses={**ERROR_RESPONSES, 501: {"model": ErrorResponse, "description": "Smear counting not installed."}},
    )
    async def count(request: Request, files: UploadFiles) -> CountResponse:
        """Count RBC, WBC and platelets on smear photos, with the white-cell differential."""
        state = _state(request)
        if state.count_smears is None:
            raise RequestRejected(501, "not_available", "smear counting is not available in this installation")
        uploads = await _read_uploads(files, state.limits)
        usable, refused = _screen(uploads, state.limits)
        doc, errors, counted = await state.queue.run(_count_job, state, usable)
        if not counted:
            raise RequestRejected(422, "corrupt_image", errors[min(errors)])
        by_index = dict(zip((index for index, _ in counted), doc["images"]))
        items = []
        for index, (name, _) in enumerate(uploads):
            if index in by_index:
                entry = dict(by_index[index])
                annotated = entry.pop("annotated", None)
                items.append(
                    SmearImageResult(
                        filename=name,
                        counts=entry.get("counts", {}),
                        wbc_types=entry.get("wbc_types", {}),
                        boxes=entry.get("boxes", []),
                        annotated_png=_png_base64(annotated) if isinstance(annotated, Image.Image) else None,
                    )
                )
            else:
                message = refused[index].message if index in refused else errors[index]
                items.append(SmearImageResult(filename=name, error=message))
        state.metrics.images.labels("/v1/count").inc(len(counted))
        return CountResponse(images=items, sample=doc.get("sample", {}))


"""The web service: FastAPI app around the predictor and the smear counter, plus the web page.

``create_app(settings)`` builds one app from a :class:`~bloodcell.service.settings.ServiceSettings`
(``bloodcell serve`` resolves it once from its flags); nothing here reads the environment.
The app serves from one process: concurrency comes from ``limits.max_in_flight`` jobs on a
thread pool; to scale out, run several instances behind a reverse proxy. Uploads are processed
in memory; FastAPI spools a large multipart part to an anonymous temporary file that is
deleted when the request ends.
"""

from __future__ import annotations

import base64
import hmac
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TextIO

from fastapi import File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from bloodcell._version import __version__
from bloodcell.data.cell_types import reviewer_classes, white_cell_types
from bloodcell.data.images import read_image
from bloodcell.errors import DataError, ImageError
from bloodcell.inference.predictor import load
from bloodcell.log import get_logger
from bloodcell.service.limits import (
    BodyLimitMiddleware,
    CancelToken,
    RequestRejected,
    WorkQueue,
    check_request_pixels,
    inspect_upload,
)
from bloodcell.service.observability import ObservabilityMiddleware, ServiceMetrics
from bloodcell.service.origins import HostOriginMiddleware
from bloodcell.service.review import (
    count_report,
    photo_id,
    photo_state,
    png_base64,
    review_job,
    review_of_photo,
    sample_state,
)
from bloodcell.service.schemas import (
    CellResult,
    ClassifyResponse,
    ClassProbability,
    CountResponse,
    ErrorResponse,
    HealthResponse,
    LabName,
    ModelInfo,
    ModelsResponse,
    PhotoKindResponse,
    PhotoKindResult,
    ReviewItem,
    ReviewRequest,
    ReviewResponse,
    SmearImageResult,
)
from bloodcell.service.bank_api import AdaptJobs, BankAdapter, add_bank_routes
from bloodcell.service.lab_models import COUNTED_LAB, LabModels
from bloodcell.service.gallery_api import add_gallery_routes, check_keepable, keep_counted, lab_of_kept
from bloodcell.service.samples_api import (COOKIE, CSRF_HEADER, OWN_AUTH_PREFIXES, add_sample_store_routes,
                                           signed_in_caller, signed_in_with_csrf)
from bloodcell.service.settings import Limits, ServiceSettings
from bloodcell.smear import documents
from bloodcell.smear.counting import MIN_SMEAR_SIDE, PhotoCounter, count_photos
from bloodcell.smear.sample_id import RULE as SAMPLE_ID_RULE
from bloodcell.smear.lab_name import RULE as LAB_RULE
from bloodcell.smear.sample_id import sample_id_problem
from bloodcell.smear.counting import count_image as library_count_image
from bloodcell.smear.photo_kind import photo_kind, too_small
from bloodcell.smear.schema import PhotoCount, SampleResult
from bloodcell.smear.typing import typing_summary
from bloodcell.store.database import Store, open_store
from bloodcell.smear.detectors import describe_detector, resolve_detector
from bloodcell.weights import resolve

logger = get_logger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
#: Paths reachable without the API key: liveness, the page and its files, the API docs.
OPEN_PATHS = ("/health", "/", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/favicon.ico")
OPEN_PREFIXES = ("/static/", "/static-offline-docs/", *OWN_AUTH_PREFIXES)
PAGE_CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; object-src 'none'"

DESCRIPTION = """\
Classify single blood-cell images (`POST /v1/classify`) and count cells on smear photos
(`POST /v1/count`). Upload images as the multipart field `files`.

Samples and review: the photos of one `/v1/count` request are one sample (`sample_id` form
field); its `report` is the differential in plain words (percentages, reference intervals, flags,
how much to trust the typing) and `review` lists the white cells meant for a person (referred or
doubtful), each with its crop and top 3 classes. `POST /v1/review` combines the `state` of one or
more counts of a sample, applies a reviewer's corrections, and answers the recomputed report
marked reviewed, the corrections as CSV and as Label Studio tasks, and (when the photos are sent
too) the reviewed cells as a ZIP of `cells/<class>/*.png` for `bloodcell adapt`. Without a
sample store the service keeps nothing between requests; with one (`serve --store`), the photos a
signed-in person counts are kept as a sample (`sample_id`, or `add_to_sample`) for the gallery review.

Refusals are JSON `{"error": code, "message": sentence}` with a 4xx status: 400 empty file or
a Host header the server does not answer to, 401 missing/wrong API key, 403 a state-changing
request from another site's page, 408 body not received in time, 413 body, image pixels or
decoding memory, pixels per request, file count, review boxes or answer size over the limit,
415 content that is not a JPEG/PNG/BMP/TIFF/WebP image (checked from the bytes, not the name), 422 corrupt image or invalid parameters, 503 queue
full (with `Retry-After`), 504 timeout.
In a request with several files, unusable files get an `error` in their result item; the
request fails only when no file is usable.

When the server is started with an API key, `/v1/*` and `/metrics` need the key in
`X-API-Key` or `Authorization: Bearer <key>`; `/health`, the page and the docs stay open.
Requests must name an allowed host (default: the bound address and localhost) and, from a
browser, come from the service's own page or an allowed CORS origin (default: none).
"""

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Empty file, or a Host header the server does not answer to.",
        401: "Missing or wrong API key.",
        403: "A state-changing request from another site's page.",
        408: "The request body did not arrive in time.",
        413: "Upload, image pixels or decoding memory, pixels per request, file count, review boxes or answer size over the limit.",
        415: "Not a supported image.",
        422: "Corrupt image or invalid parameters.",
        503: "Server busy; retry after Retry-After seconds.",
        504: "Request timed out.",
    }.items()
}


#: Images per predictor call in a classify job; an abandoned job stops between two batches.
JOB_BATCH = 8


@dataclass
class ServiceState:
    """Everything one app instance uses; nothing is global."""

    settings: ServiceSettings
    classifier: Any
    model_name: str
    detector_name: str
    queue: WorkQueue
    metrics: ServiceMetrics
    count_photo: PhotoCounter
    store: Store | None = None
    lab_models: LabModels | None = None

    def counting_classifier(self, lab: str = COUNTED_LAB) -> Any:
        """The classifier a count of ``lab`` is typed with: the one chosen for the lab, else the service's own."""
        return self.lab_models.for_lab(lab) if self.lab_models is not None else self.classifier

    @property
    def limits(self) -> Limits:
        return self.settings.limits


def create_app(
    settings: ServiceSettings | None = None,
    *,
    classifier: Any = None,
    count_image: Callable[..., dict[str, Any]] | None = None,
    access_log: TextIO | None = None,
    bank_adapter: BankAdapter | None = None,
) -> FastAPIOffline:
    """Build the app from ``settings`` (default: :class:`ServiceSettings` defaults).

    ``classifier`` defaults to ``load(settings.model, engine=settings.engine,
    num_threads=settings.threads)``. ``count_image`` counts one photo for the counting loop
    (:func:`bloodcell.smear.counting.count_photos`): it has the signature of
    :func:`bloodcell.smear.counting.count_image` (default: that function, with its default detector) and is
    called as ``count_image(image, classifier=..., refer_below=settings.refer_below)``.
    ``access_log`` is where JSON access lines go (default stderr). ``bank_adapter``: how the lab's classifier is
    adapted from its cell bank in the store (``bloodcell serve`` hands the workflow down; None: not offered).
    """
    settings = settings or ServiceSettings()
    limits = settings.limits
    if classifier is None:
        classifier = load(settings.model, engine=settings.engine, num_threads=settings.threads)
    if count_image is None:
        resolve_detector(settings.detector)  # a wrong --detector fails now, in one sentence
        count_photo = partial(library_count_image, classifier=classifier, refer_below=settings.refer_below,
                              detector=settings.detector)
    else:
        count_photo = partial(count_image, classifier=classifier, refer_below=settings.refer_below)
    metrics = ServiceMetrics()
    executor = ThreadPoolExecutor(max_workers=WorkQueue.threads_needed(limits), thread_name_prefix="bloodcell-infer")

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
        settings=settings,
        classifier=classifier,
        model_name=_model_name(classifier, settings.model),
        detector_name=describe_detector(settings.detector),
        queue=WorkQueue(limits, executor, on_change=metrics.set_queue),
        metrics=metrics,
        count_photo=count_photo,
    )
    _add_error_handlers(app)
    _add_routes(app)
    _add_classify_route(app)
    _add_sample_routes(app)
    if settings.store:
        store = app.state.service.store = open_store(settings.store)
        add_sample_store_routes(app, store, settings.api_key, reviewer_classes(classifier.class_names))
        add_gallery_routes(app, store, settings.api_key)
        folder = Path(settings.models_dir) if settings.models_dir else None
        jobs = None if bank_adapter is None else AdaptJobs(
            store, bank_adapter, getattr(classifier, "source", None) or str(resolve(settings.model)), folder)
        models = app.state.service.lab_models = LabModels(store, classifier, folder, settings.engine, settings.threads)
        add_bank_routes(app, store, settings.api_key, white_cell_types(classifier.class_names), jobs, models,
                        app.state.service.model_name)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_upload_bytes, timeout_s=limits.body_timeout_s)
    app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key, store=app.state.service.store)
    if settings.cors_origins:  # outside the key check: a browser's preflight carries no key
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key"])
    app.add_middleware(HostOriginMiddleware, allowed_hosts=settings.allowed_hosts, cors_origins=settings.cors_origins)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, stream=access_log)
    return app


def _model_name(classifier: Any, model: str | Path | None) -> str:
    source = getattr(classifier, "source", None) or (str(model) if model else "model")
    return Path(source).stem


class ApiKeyMiddleware:
    """401 for protected paths without the key, checked before the body is read. With a ``store``, a signed-in
    page (its session cookie and that session's CSRF token) needs no key: the person is known."""

    def __init__(self, app: ASGIApp, api_key: str | None, store: Store | None = None) -> None:
        self.app = app
        self.api_key = api_key
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            self.api_key
            and scope["type"] == "http"
            and path not in OPEN_PATHS
            and not path.startswith(OPEN_PREFIXES)
            and not hmac.compare_digest(_presented_key(scope).encode(), self.api_key.encode())
            and not await self._signed_in(scope)
        ):
            body = ErrorResponse(error="unauthorized", message="this endpoint needs the API key (X-API-Key header or Authorization: Bearer)")
            response = JSONResponse(body.model_dump(), status_code=401, headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


    async def _signed_in(self, scope: Scope) -> bool:
        if self.store is None:
            return False
        request = Request(scope)
        token, csrf = request.cookies.get(COOKIE), request.headers.get(CSRF_HEADER, "")
        return bool(token and csrf) and await run_in_threadpool(signed_in_with_csrf, self.store, token, csrf)


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


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "body_timeout", 413: "payload_too_large"}


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
        state.metrics.errors.labels(request.url.path, "invalid_request").inc()
        return _error(request, 422, "invalid_request", "invalid request: " + _validation_sentence(list(exc.errors())))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        state.metrics.errors.labels(request.url.path, "internal_error").inc()
        return _error(request, 500, "internal_error", "internal error; see the server log")


def _state(request: Request) -> ServiceState:
    return request.app.state.service


TOP_K_HELP = "Number of most probable classes to return (the CLI's --top-k)."
TTA_HELP = "Average over 8 rotated/flipped views (the CLI's --tta)."
EXPLAIN_HELP = ("Add a LayerCAM heat map (base64 PNG) to each result: where the model's score is most sensitive; "
                "not the reason for the class (the CLI's --explain).")
CLASSIFY_FIELDS = ("files", "top_k", "tta", "explain")
UploadFiles = Annotated[list[UploadFile], File(min_length=1, description="One or more image files (multipart field `files`).")]
OptionalFiles = Annotated[list[UploadFile] | None, File(description="The sample's photos that hold reviewed cells (optional).")]
SampleId = Annotated[str | None, Form(description="The sample these photos belong to (shown in the report; the id it is "
                                                  f"kept under when signed in): {SAMPLE_ID_RULE}.")]
AddToSample = Annotated[bool, Form(description="Add these photos to the kept sample `sample_id` (signed in only).")]
LabField = Annotated[LabName, Form(description="The lab the sample comes from (default: none): its cells are typed "
                                               f"with the model chosen for that lab; {LAB_RULE}.")]
ReviewPart = Annotated[UploadFile, File(description="The review as JSON (see the endpoint's description).")]


async def _refuse_unknown_fields(request: Request, known: tuple[str, ...]) -> None:
    """422 naming the form fields this endpoint does not take (a misspelt option is never silently ignored)."""
    unknown = sorted(set((await request.form()).keys()) - set(known))
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise RequestRejected(422, "unknown_field", f"unknown form field{'s' if len(unknown) > 1 else ''} {names}; "
                                                    f"this endpoint takes {', '.join(known)}")


async def _read_uploads(files: list[UploadFile], limits: Limits) -> list[tuple[str, bytes]]:
    if len(files) > limits.max_files:
        raise RequestRejected(413, "too_many_files", f"{len(files)} files sent; the limit is {limits.max_files} per request")
    return [(upload.filename or f"file{i + 1}", await upload.read()) for i, upload in enumerate(files)]


def _screen(uploads: list[tuple[str, bytes]], limits: Limits) -> tuple[list[tuple[int, str, bytes]], dict[int, RequestRejected]]:
    """Split uploads into usable ones and refused ones (by index), from the image headers only.

    All refused -> raise the first refusal; usable ones over ``max_request_pixels`` in all -> 413.
    """
    usable, refused, headers = [], {}, []
    for index, (name, data) in enumerate(uploads):
        try:
            headers.append(inspect_upload(data, name, limits.max_pixels, limits.max_decoding_bytes))
            usable.append((index, name, data))
        except RequestRejected as exc:
            refused[index] = exc
    if not usable:
        first = refused[min(refused)]
        if len(uploads) > 1:
            first.message = f"none of the {len(uploads)} files could be used; first: {first.message}"
        raise first
    check_request_pixels(headers, limits.max_request_pixels)
    return usable, refused


def _decode(token: CancelToken, usable: list[tuple[int, str, bytes]],
            max_pixels: int) -> tuple[list[tuple[int, str, Image.Image]], dict[int, str]]:
    decoded, errors = [], {}
    for index, name, data in usable:
        token.check()
        try:
            decoded.append((index, name, read_image(data, max_pixels=max_pixels)))
        except ImageError as exc:
            errors[index] = str(exc).replace("<bytes>", name)
    return decoded, errors


def _classify_job(token: CancelToken, state: ServiceState, usable, top_k: int, tta: bool,
                  explain: bool) -> tuple[dict[int, CellResult], dict[int, str]]:
    """Decode and classify in a worker thread, ``JOB_BATCH`` images at a time; results and decode errors by index."""
    decoded, errors = _decode(token, usable, state.limits.max_pixels)
    results: dict[int, CellResult] = {}
    for start in range(0, len(decoded), JOB_BATCH):
        token.check()
        batch = decoded[start:start + JOB_BATCH]
        predictions = state.classifier.predict([image for _, _, image in batch], top_k=top_k,
                                               refer_below=state.settings.refer_below, tta=tta)
        for (index, name, image), pred in zip(batch, predictions):
            item = CellResult(
                filename=name,
                label=pred.label,
                confidence=pred.confidence,
                referred=pred.referred,
                reason=pred.reason,
                note=pred.note,
                top_k=[ClassProbability(label=label, probability=prob) for label, prob in pred.top_k],
                error=pred.error,
            )
            if explain and pred.error is None:
                token.check()
                item.gradcam_png = _gradcam(state.classifier, image, pred.label)
            results[index] = item
    return results, errors


def _gradcam(classifier: Any, image: Image.Image, label: str | None) -> str:
    class_index = classifier.class_names.index(label) if label in classifier.class_names else None
    with tempfile.TemporaryDirectory(prefix="bloodcell-gradcam-") as folder:
        path = classifier.explain(image, Path(folder) / "gradcam.png", class_index=class_index)
        return base64.b64encode(Path(path).read_bytes()).decode("ascii")


@dataclass
class _Counted:
    """What a count job found, by upload index: entries (annotated photo as base64 PNG), errors; and the
    sample totals, review items and review states of the counted photos, in upload order."""

    entries: dict[int, dict[str, Any]]
    errors: dict[int, str]
    sample: dict[str, Any]
    review: list[ReviewItem]
    photos: list
    result: SampleResult | None = None


def _count_job(token: CancelToken, state: ServiceState, usable, classifier: Any, sample_id: str = "sample") -> _Counted:
    """Decode, then count with the one counting loop in a worker thread (an abandoned job stops between photos),
    typing with ``classifier``; each counted photo gets its id, its review items (crops, top 3) and its review
    state."""
    ids = {index: photo_id(data) for index, _, data in usable}
    decoded, errors = _decode(token, usable, state.limits.max_pixels)
    todo, seen = [], set()
    for index, name, image in decoded:
        if ids[index] in seen:
            errors[index] = f"{name}: the same photo was sent twice in this request; it is counted once"
            continue
        seen.add(ids[index])
        todo.append((index, name, image))
    counted = _Counted({}, errors, {}, [], [])

    def photo_done(position: int, photo: PhotoCount, image: Image.Image) -> None:
        index = todo[position][0]
        photo.photo_id, photo.width, photo.height = ids[index], image.width, image.height
        if photo.annotated is not None:  # PNG-encoded here, off the event loop
            photo.annotated_png, photo.annotated = png_base64(photo.annotated), None
        entry = photo.entry()
        counted.review += review_of_photo(entry, image, classifier)
        counted.photos.append(photo_state(entry))
        counted.entries[index] = entry
        token.check()

    token.check()
    result = count_photos([image for _, _, image in todo], partial(state.count_photo, classifier=classifier),
                          names=[name for _, name, _ in todo], sample_id=sample_id, typing=typing_summary(classifier),
                          on_photo=photo_done)
    missed = [index for index, _, _ in todo if index not in counted.entries]
    errors.update({index: error.error for index, error in zip(missed, result.errors)})
    counted.sample = result.sample.model_dump(mode="json", exclude_unset=True) if result.images else {}
    counted.result = result
    return counted


def _kind_job(token: CancelToken, state: ServiceState, usable) -> tuple[dict[int, PhotoKindResult], dict[int, str]]:
    """Decode, then run the detector alone on each photo and decide single cell or smear field (no classifier)."""
    decoded, errors = _decode(token, usable, state.limits.max_pixels)
    results = {}
    for index, name, image in decoded:
        token.check()
        if min(image.size) < MIN_SMEAR_SIDE:
            kind = too_small(image.width, image.height)
        else:
            try:
                found = state.count_photo(image, classifier=None)
            except ImageError as exc:  # the detector cannot use it: say why, as for a photo that cannot be decoded
                errors[index] = f"{name}: {exc}"
                continue
            kind = photo_kind(found["counts"], found["boxes"], image.width, image.height)
        results[index] = PhotoKindResult(filename=name, kind=kind.kind, reason=kind.reason, cells=kind.cells)
    return results, errors


def _smear_results(uploads: list[tuple[str, bytes]], counted: _Counted,
                   refused: dict[int, RequestRejected]) -> tuple[list[SmearImageResult], list[str]]:
    """One result per upload, in upload order, and the sentences of those not counted."""
    items, skipped = [], []
    for index, (name, _) in enumerate(uploads):
        if index in counted.entries:
            entry = counted.entries[index]
            items.append(SmearImageResult(
                filename=name, photo_id=entry["photo_id"], width=entry["width"], height=entry["height"],
                counts=entry.get("counts", {}), wbc_types=entry.get("wbc_types", {}), boxes=entry.get("boxes", []),
                annotated_png=entry.get("annotated_png")))
        else:
            message = refused[index].message if index in refused else counted.errors[index]
            items.append(SmearImageResult(filename=name, error=message))
            skipped.append(message)
    return items, skipped


def _validation_sentence(errors: list[dict[str, Any]], drop: tuple[str, ...] = ("body",)) -> str:
    parts = []
    for item in errors[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in drop)
        parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", "invalid")))
    return "; ".join(parts)


def _review_request(data: bytes, limits: Limits) -> ReviewRequest:
    """The ``review`` part as a :class:`ReviewRequest`, read by the CLI's rules (:mod:`bloodcell.smear.documents`);
    413 over ``limits.max_review_boxes`` boxes, corrections and missing cells in all; 422 with what is wrong otherwise."""
    try:
        doc = documents.parse_json(data, "review", limits.max_upload_bytes)
    except DataError as exc:
        raise RequestRejected(422, "invalid_review", str(exc)) from None
    if isinstance(doc, dict):
        states = doc.get("states") if isinstance(doc.get("states"), list) else []
        photos = [p for s in states if isinstance(s, dict) and isinstance(s.get("photos"), list) for p in s["photos"]]
        extra = sum(len(doc[k]) for k in ("corrections", "missing") if isinstance(doc.get(k), list))
        try:
            documents.check_box_count(documents.count_boxes(photos) + extra, limits.max_review_boxes, "review")
        except DataError as exc:
            raise RequestRejected(413, "too_many_boxes", str(exc)) from None
    try:
        return ReviewRequest.model_validate(doc)
    except ValidationError as exc:
        raise RequestRejected(422, "invalid_review", "invalid review: " + _validation_sentence(exc.errors())) from None


def _bounded_review(token: CancelToken, limits: Limits, *args: Any) -> Response:
    """:func:`review_job` answered within ``limits.max_response_bytes`` (serialised in the worker thread)."""
    return _bounded_json(review_job(token, *args), limits, "review the sample in smaller parts")


def _bounded_json(answer: BaseModel, limits: Limits, advice: str) -> Response:
    """``answer`` as a JSON response of at most ``limits.max_response_bytes``; 413 with ``advice`` otherwise."""
    body = answer.model_dump_json().encode()
    if len(body) > limits.max_response_bytes:
        raise RequestRejected(413, "response_too_large", f"the answer would be {len(body) / 2**20:.1f} MB, more than "
                              f"the {limits.max_response_bytes / 2**20:.1f} MB limit; {advice}")
    return Response(body, media_type="application/json")


def _add_routes(app: FastAPIOffline) -> None:
    """The page and the routes describing the service: health, metrics, the loaded model."""

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/health", response_model=HealthResponse, response_model_exclude_none=True, tags=["service"])
    async def health(request: Request) -> HealthResponse:
        """Liveness and what the page shows: always open, even when an API key is set."""
        state = _state(request)
        chosen = await run_in_threadpool(state.lab_models.chosen, COUNTED_LAB) if state.lab_models else None
        return HealthResponse(status="ok", version=__version__, model=state.model_name, detector=state.detector_name,
                              refer_below=state.settings.refer_below, count_model=chosen and Path(chosen).stem)

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
            refer_below=state.settings.refer_below,
        )
        return ModelsResponse(models=[info])


def _add_classify_route(app: FastAPIOffline) -> None:
    """The route classifying single-cell images."""

    @app.post("/v1/classify", response_model=ClassifyResponse, tags=["classify"], responses=ERROR_RESPONSES)
    async def classify(
        request: Request,
        files: UploadFiles,
        top_k: Annotated[int | None, Form(ge=1, le=20, description=TOP_K_HELP)] = None,
        tta: Annotated[bool | None, Form(description=TTA_HELP)] = None,
        explain: Annotated[bool | None, Form(description=EXPLAIN_HELP)] = None,
        top_k_query: Annotated[int, Query(alias="top_k", ge=1, le=20, description=TOP_K_HELP)] = 3,
        tta_query: Annotated[bool, Query(alias="tta", description=TTA_HELP)] = False,
        explain_query: Annotated[bool, Query(alias="explain", description=EXPLAIN_HELP)] = False,
    ) -> ClassifyResponse:
        """Classify single-cell images: label, calibrated confidence, top-k, referral flag.

        The options are the CLI's (`--top-k`, `--tta`, `--explain`), as form fields `top_k`, `tta` and
        `explain` or as query parameters; a form field of another name is refused (422)."""
        await _refuse_unknown_fields(request, CLASSIFY_FIELDS)
        top_k = top_k_query if top_k is None else top_k
        tta = tta_query if tta is None else tta
        explain = explain_query if explain is None else explain
        state = _state(request)
        uploads = await _read_uploads(files, state.limits)
        usable, refused = _screen(uploads, state.limits)
        if explain and getattr(state.classifier, "model", None) is None:
            raise RequestRejected(422, "explain_unavailable", "heat maps (LayerCAM) need a PyTorch model; this server runs an ONNX model")
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
        return _bounded_json(ClassifyResponse(model=state.model_name, results=items), state.limits,
                             "send fewer files per request")


def _add_sample_routes(app: FastAPIOffline) -> None:
    """The routes of samples: counting smear photos and reviewing a counted sample."""

    @app.post(
        "/v1/count",
        response_model=CountResponse,
        tags=["count"],
        responses=ERROR_RESPONSES,
    )
    async def count(request: Request, files: UploadFiles, sample_id: SampleId = None,
                    add_to_sample: AddToSample = False, lab: LabField = "") -> CountResponse:
        """Count RBC, WBC and platelets on the smear photos of one sample: its differential in plain words,
        and the white cells meant for a person (with crops and top 3) for review.

        When the server keeps samples and a signed-in person asks to keep the sample (their session cookie with
        its CSRF token in `X-CSRF-Token`, as the signed-in page sends), it is also kept in the store under
        `sample_id` (required then), counted by that person; with `add_to_sample` the photos are added to the kept
        sample of that id. Any other count is only counted (a cookie alone, even a stale one, changes nothing).
        `stored_sample` says which sample was kept. `lab` (default: none, as the page counts): the lab the sample
        comes from; its white cells are typed with the adapted model chosen for that lab, if any (a new sample is
        kept under that lab)."""
        await _refuse_unknown_fields(request, ("files", "sample_id", "add_to_sample", "lab"))
        state = _state(request)
        sample_id = (sample_id or "").strip() or None
        if sample_id is not None and (problem := sample_id_problem(sample_id)):
            raise RequestRejected(422, "invalid_request", problem)
        keep = state.store is not None and bool(request.cookies.get(COOKIE)) and CSRF_HEADER in request.headers
        person = signed_in_caller(state.store, state.settings.api_key, request, change=True) if keep else None
        if person is not None and add_to_sample:  # added photos are typed with the kept sample's lab's classifier
            lab = await run_in_threadpool(lab_of_kept, state.store, sample_id, lab)
        classifier = await run_in_threadpool(state.counting_classifier, lab)
        if person is not None:
            check_keepable(state.store, person, sample_id, add_to_sample, classifier=classifier,
                           detector=state.settings.detector)
        elif add_to_sample:
            raise RequestRejected(422, "invalid_request", "photos are added to a kept sample only by a signed-in person")
        uploads = await _read_uploads(files, state.limits)
        usable, refused = _screen(uploads, state.limits)
        started = time.perf_counter()
        counted: _Counted = await state.queue.run(_count_job, state, usable, classifier, sample_id or "sample")
        if not counted.entries:
            raise RequestRejected(422, "corrupt_image", counted.errors[min(counted.errors)])
        items, skipped = _smear_results(uploads, counted, refused)
        state.metrics.images.labels("/v1/count").inc(len(counted.entries))
        sample_id = sample_id or "sample"
        entries = [counted.entries[i] for i in sorted(counted.entries)]
        if person is not None:
            sent = {photo_id(data): data for _, _, data in usable}
            keep_counted(state.store, person, counted.result, [sent[p.photo_id] for p in counted.result.images],
                         add_to_sample=add_to_sample, classifier=classifier, detector=state.settings.detector, lab=lab,
                         seconds=time.perf_counter() - started)
        return _bounded_json(CountResponse(
            images=items, sample=counted.sample, sample_id=sample_id,
            report=count_report(entries, counted.sample, skipped, sample_id), review=counted.review,
            classes=white_cell_types(classifier.class_names), refer_below=state.settings.refer_below,
            detector=state.detector_name, state=sample_state(counted.photos, counted.sample, skipped),
            stored_sample=sample_id if person is not None else None,
        ), state.limits, "send fewer or smaller photos per request")

    @app.post("/v1/kind", response_model=PhotoKindResponse, tags=["count"], responses=ERROR_RESPONSES)
    async def kind(request: Request, files: UploadFiles) -> PhotoKindResponse:
        """The page's "auto" mode: is each photo a single cell or a smear field? Decided by the cells the detector
        finds (one white cell, or one platelet, in the middle: a single cell; several white cells, a white cell
        off the middle, or a field of red cells: a smear field), never by the photo's size; each answer says why
        and how to switch."""
        await _refuse_unknown_fields(request, ("files",))
        state = _state(request)
        uploads = await _read_uploads(files, state.limits)
        usable, refused = _screen(uploads, state.limits)
        results, errors = await state.queue.run(_kind_job, state, usable)
        return PhotoKindResponse(results=[
            results[i] if i in results else PhotoKindResult(filename=name, error=refused[i].message if i in refused
                                                             else errors[i])
            for i, (name, _) in enumerate(uploads)])

    @app.post("/v1/review", response_model=ReviewResponse, tags=["review"], responses=ERROR_RESPONSES)
    async def review(request: Request, review: ReviewPart, files: OptionalFiles = None) -> ReviewResponse:
        """Combine the counts of a sample, apply a reviewer's corrections and recompute its differential.

        `review` (a JSON file part): `{"sample_id", "states": [the state of each /v1/count of the sample],
        "corrections": [{"item": "<photo_id>-<box>", "decision": "accept" | "relabel" | "wrong", "label"}],
        "missing": [{"photo_id", "box": [x1, y1, x2, y2], "label"}], "reviewed": true}`. Any box of the
        sample may be corrected, not only the review items; errors name a correction by its number,
        corrections first, then missing cells. `files`: the photos holding reviewed cells (optional),
        matched by content; with them the answer has the reviewed cells as a ZIP for `bloodcell adapt`.
        With `reviewed: false` and no corrections, the counts are only combined into one differential.
        """
        await _refuse_unknown_fields(request, ("review", "files"))
        state = _state(request)
        body = _review_request(await review.read(), state.limits)
        uploads = await _read_uploads(files or [], state.limits)
        usable = _screen(uploads, state.limits)[0] if uploads else []
        max_pixels = state.limits.max_pixels

        def decode(name: str, data: bytes) -> Image.Image | str:
            try:
                return read_image(data, max_pixels=max_pixels)
            except ImageError as exc:
                return str(exc).replace("<bytes>", name)

        photos = [(name, data) for _, name, data in usable]
        return await state.queue.run(_bounded_review, state.limits, body, list(state.classifier.class_names), photos,
                                     decode)

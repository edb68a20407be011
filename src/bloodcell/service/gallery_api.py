"""The gallery review over HTTP: large cell crops cut from the kept photos, the lab's settings, and photos counted
on the page kept in the store.

``GET /v1/samples/{id}/cells/{cell}/crop?size=N`` is a PNG square around the cell's box (``context`` times its
longer side), cut from the full-resolution photo the sample was counted from and scaled to N pixels; ``size=0``
keeps the photo's own pixels (the zoom to full resolution). ``GET /v1/lab/settings`` gives the lab's settings to
anyone signed in; ``PUT /v1/lab/settings`` lets an admin set how many white cells a differential counts (audited).
:func:`keep_counted` keeps what ``/v1/count`` counted for a signed-in person: a new sample, or more photos of
a kept one (``add_to_sample``).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from functools import lru_cache

from fastapi import APIRouter, FastAPI, Query, Request, Response
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from bloodcell.data.images import read_image
from bloodcell.errors import ConfigError
from bloodcell.framing import crop_around
from bloodcell.service.limits import RequestRejected
from bloodcell.service.samples_api import http_errors, signed_in_caller
from bloodcell.smear.schema import SampleResult
from bloodcell.store.components import classifier_used, detector_used
from bloodcell.store.database import Store
from bloodcell.store.errors import NotFoundError
from bloodcell.store.lab_settings import WBC_TARGETS, lab_settings, set_wbc_target
from bloodcell.store.models import Cell, Photo
from bloodcell.store.samples import add_photos, check_new, check_same_models, find, record_count, writable
from bloodcell.store.users import Person

#: Largest side of a crop in pixels, scaled or at the photo's own resolution.
MAX_CROP_PX = 2048
#: Decoded photos kept in memory for cutting crops (a gallery asks for every cell of a sample's few photos).
PHOTOS_IN_MEMORY = 4


class SettingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wbc_target: int = Field(strict=True, description=f"White cells a differential counts: {' or '.join(map(str, WBC_TARGETS))}.")


def add_gallery_routes(app: FastAPI, store: Store, api_key: str | None) -> None:
    """Mount the crop and lab-settings endpoints on ``app`` (their paths check their own callers)."""
    router = APIRouter(prefix="/v1", tags=["samples"])
    decoding = threading.Lock()  # one photo decoded at a time: at most PHOTOS_IN_MEMORY + 1 in memory

    @lru_cache(maxsize=PHOTOS_IN_MEMORY)
    def decoded_once(sha256: str) -> Image.Image:
        return read_image(store.photos.get(sha256))

    def decoded(sha256: str) -> Image.Image:
        """The kept photo upright (EXIF orientation applied), as counting saw it: the boxes' coordinates."""
        with decoding:
            return decoded_once(sha256)

    @router.get("/samples/{sample_id}/cells/{cell_id}/crop")
    def crop(sample_id: str, cell_id: int, request: Request,
             size: int = Query(256, ge=0, le=MAX_CROP_PX, description="Side in pixels; 0: the photo's own pixels."),
             context: float = Query(1.6, ge=1.0, le=6.0, description="The square's side over the box's longer side.")
             ) -> Response:
        """A PNG of one cell cut from the full-resolution photo (grey beyond the photo's edge)."""
        signed_in_caller(store, api_key, request)
        with http_errors(), store.session() as session:
            sample = find(session, sample_id)
            cell = session.get(Cell, cell_id)
            if cell is None or cell.sample_pk != sample.id:
                raise NotFoundError(f"sample {sample_id!r} has no cell {cell_id}")
            photo = session.get(Photo, cell.photo_pk)
            box, sha256 = (cell.x1, cell.y1, cell.x2, cell.y2), photo.sha256
        with http_errors():
            square = _square(decoded(sha256), box, context, size)
        return Response(_png(square), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    @router.get("/lab/settings")
    def settings(request: Request) -> dict[str, int]:
        signed_in_caller(store, api_key, request)
        with store.session() as session:
            return lab_settings(session)

    @router.put("/lab/settings")
    def change_settings(body: SettingsRequest, request: Request) -> dict[str, int]:
        person = signed_in_caller(store, api_key, request, change=True)
        with http_errors(), store.session() as session:
            return set_wbc_target(session, body.wbc_target, person)

    app.include_router(router)


def _square(image: Image.Image, box: tuple[float, float, float, float], context: float, size: int) -> Image.Image:
    """The square of side ``context`` x the box's longer side around its centre, scaled to ``size`` (0: as is)."""
    x1, y1, x2, y2 = box
    side = max(8, min(round(context * max(x2 - x1, y2 - y1)), MAX_CROP_PX))
    left, top = round((x1 + x2 - side) / 2), round((y1 + y2 - side) / 2)
    if left >= image.width or top >= image.height or left + side <= 0 or top + side <= 0:
        raise ConfigError(f"the box {[round(v, 1) for v in box]} lies outside its photo ({image.width}x{image.height} "
                          "pixels): move it onto the photo")
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    square = (centre_x - side / 2, centre_y - side / 2, centre_x + side / 2, centre_y + side / 2)
    cut = crop_around(image, square, 1.0, fill=(235, 235, 235))  # grey beyond the photo's edge
    return cut if not size or size == side else cut.resize((size, size), Image.Resampling.LANCZOS)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def check_keepable(store: Store, person: Person, sample_id: str | None, add_to_sample: bool, *, classifier,
                   detector: str) -> str:
    """Before counting for a signed-in ``person``: the sample id to keep, or one sentence (422/404/409) saying why
    it cannot be kept (no id given, an id the store holds already, no such sample to add to, or one counted with
    other models than ``classifier`` and ``detector``)."""
    if not sample_id:
        raise RequestRejected(422, "sample_id_needed", "type the sample's id: photos counted while you are signed "
                              "in are kept in the lab's store under it")
    with http_errors(), store.session() as session:
        person.require("count")
        if add_to_sample:
            check_same_models(writable(session, sample_id, None), classifier_used(classifier),
                              detector_used(detector))
        else:
            check_new(session, [sample_id])
    return sample_id


def lab_of_kept(store: Store, sample_id: str | None, lab: str) -> str:
    """The lab whose classifier types photos added to kept sample ``sample_id``: the sample's own (``lab``, when
    given, must be it: 409 otherwise); ``lab`` when there is no such sample (the check before counting says so)."""
    with http_errors(), store.session() as session:
        try:
            kept = find(session, sample_id or "").lab or ""
        except NotFoundError:
            return lab
    if lab and lab != kept:
        raise RequestRejected(409, "other_lab", f"sample {sample_id!r} is kept under lab {kept!r}, not {lab!r}: "
                              "add its photos without a lab, or with its own")
    return kept


def keep_counted(store: Store, person: Person, result: SampleResult, photo_bytes: Sequence[bytes], *,
                 add_to_sample: bool, classifier, detector: str, seconds: float, lab: str = "") -> None:
    """Keep what the page counted (the counting loop's result) in the store, by ``person`` (audited); a new sample
    under ``lab``."""
    with http_errors(), store.session() as session:
        if add_to_sample:
            add_photos(session, store.photos, result, person, classifier=classifier_used(classifier),
                       detector=detector_used(detector), photo_bytes=photo_bytes)
        else:
            record_count(session, store.photos, result, person.name, classifier=classifier_used(classifier),
                         detector=detector_used(detector), seconds=seconds, photo_bytes=photo_bytes, lab=lab)

"""A kept sample as the data of its printable report (:class:`bloodcell.report.sample_report.SampleReportData`).

The numbers are the sample as reviewed so far (:func:`~bloodcell.store.samples.tallies`); the differential, its
intervals and flags come from :mod:`bloodcell.smear.differential`; the reviewers from the audit trail; the
thumbnails are the kept photos with the sample's live boxes drawn on them.
"""

from __future__ import annotations

import io
from datetime import datetime, timezone

from PIL import Image

from bloodcell.data.images import read_image
from bloodcell.errors import ConfigError, ImageError
from bloodcell.report.sample_report import DifferentialLine, SampleReportData, Thumbnail
from bloodcell.smear.counting import annotate
from bloodcell.smear.differential import (ABSOLUTE_INTERVALS, REFERENCE_INTERVALS, SOURCES, differential,
                                          differential_notes, percent_interval, reference_text)
from bloodcell.store.audit import trail
from bloodcell.store.errors import StoreError
from bloodcell.store.models import Sample
from bloodcell.store.photos import PhotoFolder
from bloodcell.store.samples import live_cells, sample_lab_check, standing_decisions, tallies, undecided
from bloodcell.wording import counted

#: Audit actions of a person deciding cells: they credit who decided cells.
DECISION_ACTIONS = ("decision", "relabel", "remove_box", "move_box", "add_box")
#: Width of a photo's thumbnail in the report, pixels (59 mm at about 300 dpi).
THUMBNAIL_WIDTH = 700


def _when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    if moment.tzinfo is None:  # SQLite hands back UTC times without their zone
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _absolute_flag(interval: tuple[float, float], wbc: float, name: str) -> str:
    low, high = ABSOLUTE_INTERVALS.get(name, (None, None))
    if low is None:
        return ""
    if interval[1] / 100 * wbc < low:
        return "low"
    return "high" if interval[0] / 100 * wbc > high else ""


def _lines(types: dict[str, int], diff: dict, wbc_per_nl: float | None) -> list[DifferentialLine]:
    total = diff["classified"]
    lines = []
    for name in sorted(set(diff["percent"]) | set(REFERENCE_INTERVALS)):
        count = types.get(name, 0)
        interval = percent_interval(count, total)
        unsupported = diff["unsupported"].get(name)
        low_high = ABSOLUTE_INTERVALS.get(name)
        percent = diff["percent"].get(name, 0.0)
        lines.append(DifferentialLine(
            type=name, count=count, percent=percent, interval=interval, reference=reference_text(name),
            absolute=None if wbc_per_nl is None else percent / 100 * wbc_per_nl,
            absolute_reference=f"{low_high[0]:g}-{low_high[1]:g}" if low_high else "",
            flag=diff["flags"].get(name, ""),
            needed=unsupported["needed"] if unsupported else None,
            outside=(("below" if unsupported["direction"] == "low" else "above") + " reference") if unsupported else "",
            absolute_flag="" if wbc_per_nl is None else _absolute_flag(interval, wbc_per_nl, name)))
    return lines


def thumbnail(sample: Sample, position: int, photos: PhotoFolder) -> Thumbnail | None:
    """The photo at ``position`` with the sample's live boxes drawn, as a JPEG :data:`THUMBNAIL_WIDTH` wide; None
    when its file is missing, changed on disk (its SHA-256 no longer matches) or cannot be decoded."""
    photo = next(p for p in sample.photos if p.position == position)
    try:
        image = read_image(photos.get(photo.sha256))
    except (OSError, StoreError, ImageError):
        return None
    boxes = [{"label": c.label, "x1": c.x1, "y1": c.y1, "x2": c.x2, "y2": c.y2, "wbc_type": c.cell_class,
              "confidence": c.confidence} for c in live_cells(sample) if c.photo_pk == photo.id]
    drawn = annotate(image, boxes)
    if drawn.width > THUMBNAIL_WIDTH:
        drawn = drawn.resize((THUMBNAIL_WIDTH, round(drawn.height * THUMBNAIL_WIDTH / drawn.width)),
                             Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    drawn.save(buffer, format="JPEG", quality=85)
    return Thumbnail(f"{position + 1}. {photo.name}: {counted(len(boxes), 'box', 'boxes')}", buffer.getvalue())


def _cells_decided(session, sample: Sample) -> int:
    """How many cells' calls a person decided: cells with a standing decision other than a moved box."""
    return sum(1 for kept in standing_decisions(session, sample).values() if any(d.action != "move" for d in kept))


def report_data(session, sample: Sample, photos: PhotoFolder, wbc_per_nl: float | None = None) -> SampleReportData:
    """The report of ``sample`` as it stands; ``wbc_per_nl``: the blood's white-cell concentration in 10^9/L (from
    an analyser), for the absolute counts."""
    if wbc_per_nl is not None and not 0 < wbc_per_nl < 1000:
        raise ConfigError(f"a white-cell concentration of {wbc_per_nl} x10^9/L is not plausible")
    counts, types = tallies(sample)
    diff = differential(types)
    entries = trail(session, sample)
    reviewers = list(dict.fromkeys(e.actor for e in entries if e.action in DECISION_ACTIONS))
    # finished and signed only while they stand: a reopened sample (or a cell changed since) is in review again
    finished = [e for e in entries if e.action == "review_done"] if sample.status in ("reviewed", "signed") else []
    thumbnails = [thumbnail(sample, p.position, photos) for p in sample.photos]
    unreadable = sum(t is None for t in thumbnails)
    # the table's flag column says which types are outside their interval without a count to show it
    notes = [n for n in differential_notes(diff) if not n.startswith("Not flagged")]
    if unreadable:
        notes.append(f"{counted(unreadable, 'photo file')} of this sample could not be read from the store's photo "
                     f"folder; {'it is' if unreadable == 1 else 'they are'} not shown.")
    check = sample_lab_check(sample)
    return SampleReportData(
        sample_id=sample.sample_id, lab=sample.lab, status=sample.status, counted_at=_when(sample.created_at),
        photos=len(sample.photos), counts=counts, white_cells_typed=diff["classified"],
        lines=_lines(types, diff, wbc_per_nl), wbc_per_nl=wbc_per_nl,
        notes=notes, typing_unavailable=sample.typing_unavailable,
        lab_warning=check["message"] if check is not None and check["unfamiliar_lab"] else None,
        reviewers=reviewers, decisions=_cells_decided(session, sample),
        review_finished=f"by {finished[-1].actor}, {_when(finished[-1].at)}" if finished else None,
        signed=(f"by {sample.signed_by}, {_when(sample.signed_at)}" if sample.status == "signed" and sample.signed_by
                else None),
        reopened=[f"by {e.actor}, {_when(e.at)}: {(e.after or {}).get('reason', '')}" for e in entries
                  if e.action == "reopen"],
        referred=len(undecided(session, sample)),
        classifier=(sample.classifier_name, sample.classifier_sha256),
        detector=(sample.detector_name, sample.detector_sha256),
        thumbnails=[t for t in thumbnails if t is not None], sources=list(SOURCES),
        generated_at=_when(datetime.now(timezone.utc)))

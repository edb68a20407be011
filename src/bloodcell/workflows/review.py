"""``bloodcell review``: a counted sample's cells for a person, and the sample again with their corrections.

``export_review`` writes, for the folder of one counted sample (``<output>/<sample id>/`` of
``bloodcell count``, holding counts.json): ``crops/<item>.png`` (each referred or doubtful white
cell), ``corrections.csv`` (one row per cell, ``decision`` and ``label`` to fill in; rows with
``decision`` ``missing`` may be added for cells the detector missed) and ``review.md`` (the cells
with their crops, top 3 classes and reasons).

``apply_review`` reads the filled-in CSV and writes the reviewed sample: ``counts.json`` and
``report.md`` (marked reviewed), ``corrections.csv`` (the decisions), ``labelstudio.json`` and
``labelstudio-config.xml`` (Label Studio import), and ``cells/<class>/<crop>.png``, the reviewed
cells as a ``bloodcell adapt`` folder. The logic is :mod:`bloodcell.smear.review`'s, shared
with the web service; here are only the files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bloodcell.data.images import read_image
from bloodcell.errors import DataError, ImageError
from bloodcell.outputs import check_output_folder, refuse_to_replace
from bloodcell.smear import documents
from bloodcell.smear.differential import write_report
from bloodcell.smear.io import serialisable
from bloodcell.smear.schema import Box, Tally
from bloodcell.smear.review import (
    CSV_COLUMNS,
    ReviewItem,
    apply_corrections,
    corrected_cells,
    corrections_csv,
    labelstudio_config,
    labelstudio_tasks,
    photo_key,
    read_corrections,
    review_items,
    template_rows,
    to_csv,
)
from bloodcell.writing import name_from_text, save_image, write_text

COUNTS = "counts.json"
TEMPLATE_COLUMNS = CSV_COLUMNS[:-3] + ("top_3",) + CSV_COLUMNS[-3:]
INSTRUCTIONS = ("Fill in `decision` in corrections.csv for each cell: accept (the call is right), relabel (give the "
                "right class in `label`) or wrong (not a white cell). Add a row with decision `missing`, the photo, "
                "x1, y1, x2, y2 and `label` for each cell the counter missed. Then run `bloodcell review apply`.")


class _CountedPhoto(BaseModel):
    """What review needs of one photo entry of counts.json (other keys are kept as they are)."""

    model_config = ConfigDict(extra="allow")

    path: str = Field(max_length=4096)
    photo_id: str | None = Field(None, pattern=r"^[0-9a-f]{16}$")  # names the crops' files
    boxes: list[Box] = Field(default_factory=list, max_length=50_000)
    counts: Tally = Field(default_factory=dict)
    wbc_types: Tally = Field(default_factory=dict)
    referred: list[dict[str, Any]] = Field(default_factory=list, max_length=10_000)


class _CountedDoc(BaseModel):
    model_config = ConfigDict(extra="allow")

    images: list[_CountedPhoto] = Field(max_length=10_000)
    sample: dict[str, Any]


@dataclass
class CountedSample:
    """A counted sample read back from its folder: its document, id and the folder."""

    folder: Path
    sample_id: str
    doc: dict[str, Any]


@dataclass
class Reviewed:
    """What ``apply_review`` wrote: the reviewed document, the cells per class and the folder."""

    doc: dict[str, Any]
    cells: dict[str, int]
    folder: Path


def read_counted(folder: str | Path) -> CountedSample:
    """The counted sample in ``folder`` (its counts.json); DataError when there is none."""
    folder = Path(folder)
    path = folder / COUNTS if folder.is_dir() else folder
    try:
        doc = documents.parse_json(documents.read_text(path, "counted sample", documents.MAX_JSON_BYTES), str(path))
    except DataError as exc:
        raise DataError(f"{exc}; give the folder of one sample written by `bloodcell count`") from None
    try:
        _CountedDoc.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the document"
        raise DataError(f"{path}: not a counts.json written by `bloodcell count` ({where}: {first['msg']})") from None
    return CountedSample(path.parent, str(doc.get("sample_id") or path.parent.name), doc)


def photo_path(counted: CountedSample, entry: dict[str, Any]) -> Path:
    """The file of one photo entry: its path as counted, or the same name in the sample's folder."""
    path = Path(name_from_text(entry.get("path", "")))  # a name that was not UTF-8 is written with \xNN escapes
    for candidate in (path, counted.folder / path, counted.folder / path.name):
        if candidate.is_file():
            return candidate
    raise DataError(f"{path}: photo of sample {counted.sample_id} not found (it is needed to cut its cells)")


def load_photos(counted: CountedSample, needed: set[str] | None = None) -> dict[str, Image.Image]:
    """The sample's decoded photos by photo key (only ``needed`` ones when given); sizes noted in the document."""
    photos = {}
    for index, entry in enumerate(counted.doc["images"]):
        key = photo_key(entry, index)
        if needed is not None and key not in needed:
            continue
        path = photo_path(counted, entry)
        try:
            photos[key] = read_image(path)
        except ImageError as exc:
            raise DataError(f"{path}: cannot read the photo again ({exc})") from None
        documents.check_photo_boxes(entry, photos[key].width, photos[key].height, f"{COUNTS} photo {index + 1}")
        entry["width"], entry["height"] = photos[key].width, photos[key].height  # the photo is the truth
    return photos


@dataclass
class ReviewExport:
    """The exported items, and whether every white cell was exported because the sample's lab check found its cells
    unlike every lab the model knows (not because it was asked for)."""

    items: list[ReviewItem]
    unfamiliar_lab: bool


def export_review(counts: str | Path, out: str | Path, classifier=None, every_cell: bool = False, *,
                  overwrite: bool = False) -> ReviewExport:
    """Write the sample's review items (crops, corrections.csv template, review.md) into ``out``: the referred and
    doubtful white cells, or every white cell with ``every_cell`` or when the sample's lab check found its white
    cells unlike every lab the model knows (then none was typed with a measured accuracy). A corrections.csv
    already in ``out`` (perhaps filled in) is refused unless ``overwrite``."""
    refuse_to_replace(Path(out) / "corrections.csv", overwrite)
    counted = read_counted(counts)
    out = check_output_folder(out, "review files")
    unfamiliar = not every_cell and unfamiliar_lab(counted.doc)
    every_cell = every_cell or unfamiliar
    items = review_items(counted.doc, every_cell=every_cell)
    photos = load_photos(counted, {item.photo for item in items})
    items = review_items(counted.doc, photos, classifier, every_cell=every_cell)
    (out / "crops").mkdir(exist_ok=True)
    for item in items:
        save_image(item.crop, out / "crops" / f"{item.id}.png")
    rows = template_rows(items, counted.sample_id)
    write_text(out / "corrections.csv", to_csv(rows, TEMPLATE_COLUMNS))
    write_text(out / "review.md", _review_markdown(counted.sample_id, rows))
    return ReviewExport(items, unfamiliar)


def unfamiliar_lab(doc: dict[str, Any]) -> bool:
    """True when a counted sample's lab check found its white cells unlike every lab the model learned from."""
    check = (doc.get("sample") or {}).get("lab_check")
    return isinstance(check, dict) and check.get("unfamiliar_lab") is True


def _review_markdown(sample_id: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"# Cells to review: {sample_id}", "", INSTRUCTIONS, ""]
    if not rows:
        lines.append("No cell of this sample was referred or doubtful.")
    for row in rows:
        lines += [f"## {row['item']} ({row['image']})", "", f"![cell {row['item']}](crops/{row['item']}.png)", "",
                  f"- call: {row['model_label']} (confidence {row['confidence'] or 'n/a'})",
                  f"- top 3: {row['top_3'] or 'n/a'}", f"- why: {row['reason']}", ""]
    return "\n".join(lines) + "\n"


def apply_review(counts: str | Path, corrections: str | Path, out: str | Path,
                 classes: list[str] | tuple[str, ...]) -> Reviewed:
    """Apply a corrections CSV to a counted sample and write the reviewed sample into ``out`` (see the module)."""
    counted = read_counted(counts)
    if (counted.doc.get("review") or {}).get("reviewed") or any(
            box.get("reviewed") for entry in counted.doc["images"] for box in entry.get("boxes", [])):
        raise DataError(f"{counts}: this sample is already reviewed; apply the corrections to the counts "
                        "`bloodcell count` wrote")
    text = documents.read_text(corrections, "corrections", documents.MAX_CSV_BYTES)
    out = check_output_folder(out, "reviewed sample")
    photos = load_photos(counted)
    doc, decisions = apply_corrections(counted.doc, read_corrections(text), classes)
    cells = corrected_cells(doc, decisions, photos, counted.sample_id, classes)
    for relative, crop in cells:
        (out / "cells" / relative).parent.mkdir(parents=True, exist_ok=True)
        save_image(crop, out / "cells" / relative)
    write_text(out / COUNTS, json.dumps(serialisable(doc), indent=2) + "\n")
    write_report(doc, out / "report.md", counted.sample_id)
    write_text(out / "corrections.csv", corrections_csv(decisions, counted.sample_id))
    tasks = labelstudio_tasks(doc, counted.doc, counted.sample_id)
    write_text(out / "labelstudio.json", json.dumps(tasks, indent=2) + "\n")
    write_text(out / "labelstudio-config.xml", labelstudio_config(classes))
    per_class: dict[str, int] = {}
    for relative, _ in cells:
        per_class[relative.split("/")[0]] = per_class.get(relative.split("/")[0], 0) + 1
    return Reviewed(doc, dict(sorted(per_class.items())), out)

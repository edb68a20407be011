"""Cells as training and evaluation inputs: BCCD's typed white cells cut from their smears, a lab's
``DIR/<class>/<images>`` folder of labelled cells, and the export of BCCD crops with a manifest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from bloodcell.data.bccd import TypedSmear, held_out_ids, typed_smears
from bloodcell.data.images import class_folder_images, read_image
from bloodcell.data.manifest import ManifestRow, write_manifest
from bloodcell.data.smear_manifest import read_smear_manifest
from bloodcell.data.smears import smear_images
from bloodcell.errors import DataError, ImageError
from bloodcell.framing import CONTEXT, crop_around
from bloodcell.outputs import check_output_folder
from bloodcell.progress import track
from bloodcell.provenance import file_sha256
from bloodcell.writing import save_image

SELECTIONS = ("all", "held_out", "train")


@dataclass
class Cells:
    """Decoded cell images with their labels and ids; ``skipped`` lists (id or path, reason); ``labelled_by``: what
    gave the labels, as a sentence names it (a lab's class folders, or the types reviewers gave in the store);
    ``kept_lab``: the lab a store keeps the cells under, named as kept (a name kept before the lab-name rule too)."""

    images: list[Image.Image] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    labelled_by: str = "class folder"
    kept_lab: str | None = None


def bccd_cells(data_root=None, selection: str = "all", context: float = CONTEXT, seed: int = 0) -> Cells:
    """The main white cell of each typed BCCD smear of ``selection`` (all, held_out or train), framed."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}")
    smears, skipped = typed_smears(data_root)
    held = held_out_ids(smears, seed)
    cells = Cells(skipped=list(skipped))
    for smear in smears:
        if selection != "all" and (smear.image_id in held) != (selection == "held_out"):
            continue
        try:
            cells.images.append(crop_around(read_image(smear.path), smear.main_box.xyxy, context))
        except ImageError as exc:
            cells.skipped.append((smear.image_id, str(exc)))
            continue
        cells.labels.append(smear.wbc_type)
        cells.ids.append(smear.image_id)
    if not cells.images:
        raise DataError("no BCCD white cell could be cropped")
    return cells


def folder_cells(root: str | Path) -> Cells:
    """The labelled cells of a ``root/<class>/<images>`` folder; unreadable files are listed, not fatal."""
    root = Path(root)
    cells = Cells()
    for path, label in class_folder_images(root):
        try:
            cells.images.append(read_image(path))
        except ImageError as exc:
            cells.skipped.append((str(path.relative_to(root)), str(exc)))
            continue
        cells.labels.append(label)
        cells.ids.append(str(path.relative_to(root)))
    if not cells.images:
        raise DataError(f"{root}: no readable cell image in {root}/<class>/<images>")
    return cells


def _export_smear(smear: TypedSmear, out: Path, split: str) -> list[ManifestRow]:
    image = read_image(smear.path)
    (out / smear.wbc_type).mkdir(parents=True, exist_ok=True)
    rows = []
    for k, box in enumerate(smear.boxes):
        relative = f"{smear.wbc_type}/{smear.image_id}_{k}.png"
        save_image(crop_around(image, box.xyxy), out / relative)
        rows.append(ManifestRow(relative, smear.wbc_type, "", split, file_sha256(out / relative), smear.image_id))
    return rows


def export_bccd_crops(out: str | Path, data_root=None, seed: int = 0) -> Path:
    """Write every WBC box of the typed BCCD smears as ``out/<type>/<id>_<k>.png`` plus ``out/manifest.csv``.

    The manifest (dataset ``folder``, paths relative to ``out``, grouped by smear) puts the held-out
    smears in ``test`` and the others in ``train``, so training on it never sees the held-out smears.
    """
    out = check_output_folder(out, "white-cell crops")
    smears, _ = typed_smears(data_root)
    held = held_out_ids(smears, seed)
    rows = []
    for smear in smears:
        try:
            rows += _export_smear(smear, out, "test" if smear.image_id in held else "train")
        except ImageError:
            continue
    write_manifest(out / "manifest.csv", "folder", rows)
    return out / "manifest.csv"


def txl_fields_outside_bccd_test(sources: list[str], detector_manifest: str | Path, data_root=None) -> list:
    """TXL-PBC's fields of ``sources``, except those showing a held-out BCCD smear (or a copy of one: the
    detector manifest's ``group``), so BCCD's held-out cells stay unseen."""
    held = held_out_ids(typed_smears(data_root)[0])
    group = {row.image_id: row.group for row in read_smear_manifest(detector_manifest).rows}
    return [p for p in smear_images("txl", data_root) if p.source in sources and group.get(p.image_id, "") not in held]


def export_txl_crops(out: str | Path, sources: list[str], detector_manifest: str | Path, data_root=None,
                     context: float = 2.0) -> dict[str, int]:
    """Write the (untyped) white cells of TXL-PBC's fields of ``sources`` as ``out/<source>/<field>_<k>.png``.

    Fields showing a held-out BCCD smear are left out (:func:`txl_fields_outside_bccd_test`). Returns the
    crops written per source.
    """
    out = check_output_folder(out, "white-cell crops")
    counts: dict[str, int] = {}
    photos = txl_fields_outside_bccd_test(sources, detector_manifest, data_root)
    for photo in track(photos, "white-cell crops", unit="fields"):
        boxes = [b for b in photo.annotation.boxes if b.label == "WBC"]
        if not boxes:
            continue
        image = read_image(photo.path)
        (out / photo.source).mkdir(exist_ok=True)
        for k, box in enumerate(boxes):
            save_image(crop_around(image, box.xyxy, context), out / photo.source / f"{photo.image_id}_{k}.png")
            counts[photo.source] = counts.get(photo.source, 0) + 1
    return counts

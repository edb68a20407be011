"""A lab's reviewed smear photos: photos with VOC ``.xml`` or YOLO ``.txt`` labels of the same stem beside them.

``read_lab_photos(folder)`` finds the photos under ``folder`` and reads each one's labels
(:mod:`bloodcell.data.voc`, :mod:`bloodcell.data.yolo`; YOLO class names from a ``classes.txt`` in
the photo's folder or in ``folder``, else RBC, WBC, Platelets in that order). A photo without a
label file, or whose label file is malformed or names a class other than RBC, WBC and Platelets,
is skipped with one sentence saying why; the others are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bloodcell.data.boxes import SMEAR_LABELS, Annotation
from bloodcell.data.images import oriented_size, scan_folder
from bloodcell.data.voc import parse_voc
from bloodcell.data.yolo import parse_yolo, read_classes
from bloodcell.errors import DataError
from bloodcell.provenance import file_sha256


@dataclass(frozen=True)
class LabPhoto:
    """A reviewed photo, its labelled boxes, the sha256 of the photo's file and the name it is recorded by."""

    path: Path
    annotation: Annotation
    sha256: str
    name: str


def _class_names(photo: Path, folder: Path) -> list[str]:
    listed = next((p / "classes.txt" for p in (photo.parent, folder) if (p / "classes.txt").is_file()), None)
    return list(SMEAR_LABELS) if listed is None else read_classes(listed)


def read_labels(photo: Path, folder: Path) -> Annotation:
    """The boxes labelled on ``photo``; DataError (one sentence) when it has none or they cannot be used."""
    xml, txt = photo.with_suffix(".xml"), photo.with_suffix(".txt")
    if xml.is_file():
        annotation = parse_voc(xml)
    elif txt.is_file():
        width, height = oriented_size(photo)
        annotation = parse_yolo(txt, width, height, _class_names(photo, folder))
    else:
        raise DataError(f"{photo}: no labels beside it ({xml.name} or {txt.name}); review the photo and save its boxes")
    unknown = sorted({box.label for box in annotation.boxes} - set(SMEAR_LABELS))
    if unknown:
        raise DataError(f"{xml if xml.is_file() else txt}: class {unknown[0]!r} is not one of {', '.join(SMEAR_LABELS)}")
    return annotation


def read_lab_photos(folder: str | Path) -> tuple[list[LabPhoto], list[tuple[str, str]]]:
    """(the labelled photos under ``folder``, sorted; (path, reason) of every photo or entry skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of reviewed photos")
    scan = scan_folder(folder)
    photos, skipped = [], list(scan.problems)
    for path in scan.images:
        try:
            photos.append(LabPhoto(path, read_labels(path, folder), file_sha256(path), path.relative_to(folder).as_posix()))
        except (DataError, OSError) as exc:
            skipped.append((str(path), str(exc)))
    return photos, skipped

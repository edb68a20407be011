"""Annotated smear photos of the registry's smear datasets (CBC and BCCD in VOC, TXL-PBC in YOLO),
and the labels of any photo found beside it (for ``bloodcell count --evaluate``).

Every photo becomes a :class:`SmearImage`: an id, its path, its source (TXL-PBC's
``sources.csv`` names bccd, pbc, raabin or kaggle-bcd; a VOC dataset is its own source), the
dataset's own subset (TXL's ``train``/``val`` folders, CBC's ``Training``) and its boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bloodcell.data.boxes import Annotation
from bloodcell.data.images import is_image_path, oriented_size
from bloodcell.data.locate import dataset_root
from bloodcell.data.registry import get_dataset
from bloodcell.data.tables import read_csv
from bloodcell.data.voc import parse_voc, voc_folders
from bloodcell.data.yolo import parse_yolo, read_classes
from bloodcell.errors import DataError

#: TXL-PBC's own subsets (its test split is not published here).
YOLO_SUBSETS = ("train", "val")


@dataclass(frozen=True)
class SmearImage:
    """One annotated smear photo."""

    image_id: str
    path: Path
    source: str
    subset: str
    annotation: Annotation


def smear_images(dataset: str, data_root: str | Path | None = None, subset: str | None = None,
                 ids: set[str] | None = None) -> list[SmearImage]:
    """The annotated photos of smear dataset ``dataset`` (``subset``: one of its subsets, default all
    of TXL's or CBC's ``Training``; ``ids``: only these image ids, whose other files are never opened),
    sorted by id."""
    info = get_dataset(dataset)
    root = dataset_root(info.name, data_root)
    if info.layout == "yolo":
        return _yolo_images(root, subset, ids)
    if info.layout != "voc":
        raise DataError(f"dataset {info.name!r} holds single cells, not annotated smear photos")
    annotations, images = voc_folders(root, subset)
    if not annotations.is_dir():
        raise DataError(f"{annotations} not found (subsets here: "
                        f"{', '.join(sorted(p.name for p in root.iterdir() if p.is_dir()))})")
    found = []
    for xml in sorted(x for x in annotations.glob("*.xml") if ids is None or x.stem in ids):
        ann = parse_voc(xml)
        path = images / Path(ann.filename).name
        found.append(SmearImage(xml.stem, path if path.is_file() else images / f"{xml.stem}.jpg", info.name,
                                annotations.parent.name if annotations.parent != root else info.name, ann))
    if not found:
        raise DataError(f"no .xml annotations in {annotations}")
    return found


def read_sources(root: Path) -> dict[str, dict[str, str]]:
    """``sources.csv`` of a YOLO dataset root: relative file -> {source, width, height} (empty when absent)."""
    path = root / "sources.csv"
    if not path.is_file():
        return {}
    return {row["file"]: row for row in read_csv(path, "sources file", ("file", "source"))[1] if row.get("file")}


def _size(path: Path, row: dict[str, str] | None) -> tuple[int, int]:
    if row and row.get("width") and row.get("height"):
        try:
            return int(row["width"]), int(row["height"])
        except ValueError:
            pass
    return oriented_size(path)


def _yolo_images(root: Path, subset: str | None, ids: set[str] | None) -> list[SmearImage]:
    subsets = [s for s in YOLO_SUBSETS if (root / s / "images").is_dir()] if subset is None else [subset]
    if not subsets or not (root / subsets[0] / "images").is_dir():
        raise DataError(f"{root / (subset or 'train') / 'images'} not found "
                        "(a YOLO dataset holds <subset>/images and <subset>/labels)")
    classes = read_classes(root / "classes.txt")
    sources = read_sources(root)
    found = []
    for name in subsets:
        folder = root / name / "images"
        for path in sorted(p for p in folder.iterdir() if is_image_path(p) and (ids is None or p.stem in ids)):
            relative = f"{name}/images/{path.name}"
            row = sources.get(relative)
            width, height = _size(path, row)
            ann = parse_yolo(root / name / "labels" / f"{path.stem}.txt", width, height, classes)
            found.append(SmearImage(path.stem, path, (row or {}).get("source", "unknown"), name, ann))
    return sorted(found, key=lambda s: s.image_id)


def labels_beside(image: Path, folder: Path | None = None) -> tuple[Annotation, str] | None:
    """The annotation of ``image`` and its source, from VOC ``<stem>.xml`` or YOLO ``<stem>.txt`` files.

    Looks in ``folder`` when given, else in the dataset layouts: ``../Annotations/`` (VOC) and
    ``../labels/`` (YOLO, class names from ``classes.txt`` up to two levels above, source from
    ``sources.csv`` there). None when the image has no label file.
    """
    folders = [folder] if folder is not None else [image.parent.parent / "Annotations", image.parent.parent / "labels"]
    for where in folders:
        xml, txt = where / f"{image.stem}.xml", where / f"{image.stem}.txt"
        if xml.is_file():
            return parse_voc(xml), "all"
        if txt.is_file():
            root = next((p for p in (where.parent, where.parent.parent) if (p / "classes.txt").is_file()), None)
            if root is None:
                raise DataError(f"{txt}: YOLO labels need a classes.txt in {where.parent} or {where.parent.parent}")
            row = read_sources(root).get(str(image.relative_to(root)) if image.is_relative_to(root) else "")
            width, height = oriented_size(image)
            return parse_yolo(txt, width, height, read_classes(root / "classes.txt")), (row or {}).get("source", "all")
    return None

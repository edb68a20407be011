"""The image sets of ``benchmarks/new_lab.py``: every lab's single cells and the non-cells, scored once and cached.

Labs (single stained cells): PBC (test split of ``pbc-seed0``, its own lab), BCCD (the main white cell of each
typed smear, with its label and whether the smear is held out), Raabin-WBC (white cells cut from TXL-PBC's
Raabin fields at their boxes, untyped). Non-cells: scikit-image pictures, blanks, noise, crops of TXL-PBC
smear fields that hold no white cell or platelet (red cells and background only), and whole CBC smear photos
(reported apart: a field is not a single cell).

The crops were looked at where the guard let one through (``audits/smear_crops_without_cell.csv``,
:func:`read_crop_audit`): a crop a person saw a platelet or white cell in is a box missing from TXL-PBC's labels, not
a non-cell, and :func:`split_crop_audit` takes it out of the non-cells to be reported apart.

Each image is decoded as the classifier does (framing as its checkpoint says) and its uint8 model input,
penultimate features of the 8 views and logits are kept in ``~/.cache/bloodcell/new_lab/<model sha>-<set>.npz``,
its cell search (box and count on the image as given) in ``~/.cache/bloodcell/new_lab/search-<set>.npz``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CACHE = Path.home() / ".cache" / "bloodcell" / "new_lab"
CROP_AUDIT = Path(__file__).resolve().parent / "audits" / "smear_crops_without_cell.csv"
#: What a person may see in a crop of ``CROP_AUDIT``: no cell (it stays a non-cell) or a cell no box marks.
NO_CELL = ("red cells only", "stain precipitate")
SHOWS_A_CELL = ("platelet", "white cell")
LAB_SETS = ("pbc", "bccd", "raabin")
NON_CELL_SETS = ("picture", "blank", "noise", "smear_crop_without_cell", "whole_smear_photo")
#: Sets the cell-presence test is calibrated on (``benchmarks/cell_presence.py``), apart from every reported set:
#: PBC's validation split, Raabin's white cells of TXL-PBC's training fields that the reported Raabin set does not
#: hold, and crops of TXL-PBC's training fields.
CALIBRATION_SETS = ("pbc_val", "raabin_train", "smear_crop_without_cell_train")
#: Bumped when a set's making changes, so that its cached scores are made again.
SETS_VERSION = 2
#: Bumped when :func:`bloodcell.framing.search_cells` changes, so that the sets' cell searches are made again.
SEARCH_VERSION = 2
SKIMAGE_PICTURES = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "hubble_deep_field",
                    "immunohistochemistry", "retina", "cat", "page", "moon")


def pbc_cells(data_root, limit: int, seed: int, split: str = "test") -> tuple[list, list, list]:
    from bloodcell.data.images import read_image
    from bloodcell.data.locate import manifest_images_root
    from bloodcell.data.manifest import read_manifest

    rows = read_manifest("pbc-seed0").rows_for(split)
    picks = sorted(np.random.default_rng(seed).permutation(len(rows))[:limit])
    root = manifest_images_root("pbc-seed0", "pbc", data_root)
    return [read_image(root / rows[i].path) for i in picks], [rows[i].label for i in picks], [rows[i].path for i in picks]


def _raabin_boxes(data_root, subset: str | None) -> list:
    from bloodcell.data.smears import smear_images

    fields = [s for s in smear_images("txl", data_root, subset=subset) if s.source == "raabin"]
    return [(f, b) for f in fields for b in f.annotation.boxes if b.label == "WBC" and min(b.width, b.height) > 8]


def _raabin_id(field, box) -> str:
    return f"{field.image_id}:{int(box.x1)},{int(box.y1)}"


def raabin_cells(data_root, limit: int, seed: int, calibration: bool = False) -> tuple[list, list, list]:
    """The reported set: white cells of every Raabin field of TXL-PBC; ``calibration``: cells of its training fields
    that the reported set (same ``limit``, seed 0) does not hold."""
    from bloodcell.data.images import read_image
    from bloodcell.framing import CONTEXT, crop_around

    everything = _raabin_boxes(data_root, None)
    reported = {_raabin_id(*everything[i]) for i in np.random.default_rng(0).permutation(len(everything))[:limit]}
    boxes = ([fb for fb in _raabin_boxes(data_root, "train") if _raabin_id(*fb) not in reported] if calibration
             else everything)
    picks = sorted(np.random.default_rng(seed).permutation(len(boxes))[:limit])
    images, ids = [], []
    for i in picks:
        field, box = boxes[i]
        images.append(crop_around(read_image(field.path), box.xyxy, CONTEXT))
        ids.append(_raabin_id(field, box))
    return images, [None] * len(images), ids


def smear_crops_without_cell(data_root, limit: int, seed: int, subset: str = "val") -> tuple[list, list, list]:
    """Square crops of TXL-PBC ``subset`` fields (all sources) that overlap no white-cell or platelet box (red
    cells and background only), half to one and a half white cells wide (what a detector's false box or a user's
    careless crop would show)."""
    from bloodcell.data.images import read_image
    from bloodcell.data.smears import smear_images

    rng = np.random.default_rng(seed)
    fields = smear_images("txl", data_root, subset=subset)
    images, ids = [], []
    for k in rng.permutation(len(fields)):
        field = fields[k]
        wbc = [b for b in field.annotation.boxes if b.label == "WBC"]
        if not wbc:
            continue
        cells = [b for b in field.annotation.boxes if b.label != "RBC"]
        size = float(np.median([max(b.width, b.height) for b in wbc]))
        image = read_image(field.path)
        for _ in range(50):
            side = int(size * rng.uniform(0.5, 1.5))
            if side >= min(image.size):
                break
            x, y = int(rng.integers(0, image.width - side)), int(rng.integers(0, image.height - side))
            if all(b.x2 <= x or b.x1 >= x + side or b.y2 <= y or b.y1 >= y + side for b in cells):
                images.append(image.crop((x, y, x + side, y + side)))
                ids.append(f"{field.image_id}:{x},{y},{side}")
                break
        if len(images) >= limit:
            break
    return images, [None] * len(images), ids


def other_non_cells(name: str, data_root, seed: int) -> tuple[list, list, list]:
    from bloodcell.data.images import read_image
    from bloodcell.data.locate import dataset_root

    rng = np.random.default_rng(seed)
    if name == "picture":
        from skimage import data

        images = [read_image(getattr(data, n)()) for n in SKIMAGE_PICTURES if hasattr(data, n)]
    elif name == "blank":
        images = [Image.new("RGB", (256, 256), c) for c in
                  [(255, 255, 255), (0, 0, 0), (128, 128, 128), (232, 205, 210), (200, 160, 200)]]
    elif name == "noise":
        images = [Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) for _ in range(10)]
        images += [Image.fromarray(np.clip(rng.normal(200, 30, (256, 256, 3)), 0, 255).astype(np.uint8))
                   for _ in range(10)]
    else:
        photos = sorted((dataset_root("cbc", data_root) / "Training" / "Images").glob("*.jpg"))[:100]
        images = [read_image(p) for p in photos]
    return images, [None] * len(images), [str(i) for i in range(len(images))]


def bccd(data_root) -> tuple[list, list, list, np.ndarray]:
    from bloodcell.data.bccd import held_out_ids, typed_smears
    from bloodcell.workflows.cells import bccd_cells

    cells = bccd_cells(data_root, "all")
    held = held_out_ids(typed_smears(data_root)[0])
    return cells.images, cells.labels, cells.ids, np.array([i in held for i in cells.ids])


def search_geometry(images: list) -> np.ndarray:
    """Per image, its cell search as the guard's layout needs it: box as fractions, count, width, height."""
    from bloodcell.framing import search_cells

    geometry = []
    for image in images:
        search = search_cells(image)
        box = search.box or (np.nan,) * 4
        geometry.append([box[0] / image.width, box[1] / image.height, box[2] / image.width, box[3] / image.height,
                         search.count, image.width, image.height])
    return np.array(geometry, float)


def score_images(classifier, images: list) -> dict[str, np.ndarray]:
    """What the guard and the typing need of each image, decoded as :class:`Classifier` decodes it."""
    from bloodcell.inference.ood import summarise

    pixels = np.stack([classifier.pixels([image.convert("RGB")])[0] for image in images])
    logits, features = [], []
    for start in range(0, len(pixels), 32):
        lg, ft = classifier.score(pixels[start:start + 32], tta=True)
        logits.append(lg)
        features.append(ft)
    return {"pixels": pixels, "logits": np.concatenate(logits, axis=1), "features": np.concatenate(features, axis=1),
            "summaries": summarise(pixels), "geometry": search_geometry(images)}


def set_images(name: str, data_root=None, limit: int = 400, seed: int = 0) -> tuple[list, list, list, np.ndarray | None]:
    """Set ``name``'s images, labels (None where untyped), ids and, for BCCD, whether each smear is held out."""
    if name in ("pbc", "pbc_val"):
        return (*pbc_cells(data_root, limit, seed, "val" if name == "pbc_val" else "test"), None)
    if name == "bccd":
        return bccd(data_root)
    if name in ("raabin", "raabin_train"):
        return (*raabin_cells(data_root, limit, seed, calibration=name == "raabin_train"), None)
    if name in ("smear_crop_without_cell", "smear_crop_without_cell_train"):
        return (*smear_crops_without_cell(data_root, min(limit, 200), seed,
                                          "train" if name.endswith("_train") else "val"), None)
    return (*other_non_cells(name, data_root, seed), None)


def read_crop_audit(path: str | Path = CROP_AUDIT) -> dict[str, str]:
    """``{crop id: what a person sees in it}`` of a review of smear crops without a cell (``crop_id,reviewed_as,note``);
    DataError (one sentence) when it is malformed."""
    from bloodcell.data.tables import read_csv
    from bloodcell.errors import DataError

    audit: dict[str, str] = {}
    for line, row in enumerate(read_csv(path, "crop review file", ("crop_id", "reviewed_as", "note"))[1], start=2):
        crop, seen = (str(row[k] or "").strip() for k in ("crop_id", "reviewed_as"))
        if seen not in (*NO_CELL, *SHOWS_A_CELL):
            raise DataError(f"{path}, line {line}: reviewed_as {seen!r} must be one of "
                            f"{', '.join(NO_CELL + SHOWS_A_CELL)}")
        if not crop or crop in audit:
            raise DataError(f"{path}, line {line}: missing or repeated crop_id {crop!r}")
        audit[crop] = seen
    return audit


def subset(data: dict, keep: np.ndarray) -> dict:
    """A scored set's images where ``keep`` (the views' axis of features and logits kept whole)."""
    return {k: v[:, keep] if k in ("features", "logits") else v[keep] for k, v in data.items()}


def split_crop_audit(data: dict, audit: dict[str, str]) -> tuple[dict, dict]:
    """A crop set as (its non-cells, the crops ``audit`` saw a cell in)."""
    shows = np.array([audit.get(str(i)) in SHOWS_A_CELL for i in data["ids"]], bool)
    return subset(data, ~shows), subset(data, shows)


def load_set(classifier, model_sha: str, name: str, data_root=None, limit: int = 400, seed: int = 0) -> dict:
    """Set ``name`` scored by ``classifier`` (cached by model and set; its cell search cached apart by
    :data:`SEARCH_VERSION`, so that a change of the search does not score the set again)."""
    path = CACHE / f"{model_sha[:16]}-{name}-{limit}-{seed}-v{SETS_VERSION}.npz"
    searched = CACHE / f"search-{name}-{limit}-{seed}-v{SEARCH_VERSION}.npz"
    scored, images = None, None
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            scored = {k: stored[k] for k in stored.files}
    else:
        images, labels, ids, held = set_images(name, data_root, limit, seed)
        scored = score_images(classifier, images)
        scored["labels"] = np.array(["" if label is None else label for label in labels])
        scored["ids"] = np.array(ids)
        scored["held_out"] = np.zeros(len(ids), bool) if held is None else held
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **scored)
    if searched.is_file():
        with np.load(searched, allow_pickle=False) as stored:
            scored["geometry"] = stored["geometry"]
    else:
        if images is None:
            images, _, ids, _ = set_images(name, data_root, limit, seed)
            if list(ids) != scored["ids"].tolist():
                raise RuntimeError(f"set {name}'s images are no longer those it was scored on: delete {path}")
        scored["geometry"] = search_geometry(images)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(searched, geometry=scored["geometry"])
    return scored

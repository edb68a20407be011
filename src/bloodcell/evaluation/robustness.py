"""Robustness of a classifier to what other labs send: magnification, stain, camera, file format.

Three kinds of test images:

- **perturbations** (``PERTURBATIONS``): deterministic transforms of a decoded RGB image,
  applied *before* the model's own preprocessing; each keeps the image's size and mode.
  PBC's white cells fill about 40 % of the frame's width, so a centre crop of 1/1.8 of the
  side makes the cell fill ~70 % of it, 1/2.5 ~100 %, and shrinking to 0.8x on a border-
  coloured canvas ~1/3.
- **untouched originals**: a ``root/<class>/<image>`` folder (e.g. 360x363 PBC JPEGs). An
  original whose re-encoded copy sits in another split of the manifest (often training) is
  left out, so only originals of the scored split count.
- **cross-lab cells** (``bccd_crops``): the largest white-cell box of each BCCD smear,
  expanded to a square with context, cut from the smear photo in memory; ``run_robustness``
  scores the held-out smears only (:func:`~bloodcell.smear.wbc_typing.held_out_ids`), which
  fine-tuning (``bloodcell data crops``) and typing heads never see.

``run_robustness`` scores a checkpoint on all of them and returns a JSON-ready dict.
"""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from skimage.color import hed2rgb, rgb2hed

from bloodcell.data.images import read_image
from bloodcell.data.voc import Annotation, Box, parse_voc
from bloodcell.errors import ConfigError, DataError, ImageError

Perturbation = Callable[[Image.Image], Image.Image]
#: White-cell types of ``bccd/wbc_labels.csv`` (all of them are classes of the PBC model).
BCCD_TYPES = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")


def border_colour(image: Image.Image) -> tuple[int, ...]:
    """Median colour of the image's outermost pixels (the slide background in a cell crop)."""
    array = np.asarray(image.convert("RGB"))
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    return tuple(int(v) for v in np.median(border, axis=0))


def zoom_in(image: Image.Image, factor: float) -> Image.Image:
    """Centre crop of ``1/factor`` of each side, resized back to the original size (magnify)."""
    if factor < 1:
        raise ConfigError(f"zoom_in needs a factor of at least 1, got {factor}")
    width, height = image.size
    crop_w, crop_h = max(1, round(width / factor)), max(1, round(height / factor))
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return image.crop((left, top, left + crop_w, top + crop_h)).resize(image.size, Image.Resampling.BICUBIC)


def zoom_out(image: Image.Image, factor: float) -> Image.Image:
    """Shrink to ``factor`` (< 1) of the size and centre it on a canvas of the border colour."""
    if not 0 < factor <= 1:
        raise ConfigError(f"zoom_out needs a factor in (0, 1], got {factor}")
    width, height = image.size
    small = image.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.Resampling.BICUBIC)
    canvas = Image.new(image.mode, image.size, border_colour(image))
    canvas.paste(small, ((width - small.width) // 2, (height - small.height) // 2))
    return canvas


def hue_shift(image: Image.Image, degrees: float) -> Image.Image:
    """Rotate every pixel's hue by ``degrees`` (HSV)."""
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + round(degrees / 360 * 256)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def channel_gain(image: Image.Image, gains: Sequence[float]) -> Image.Image:
    """Multiply the R, G, B channels by ``gains`` (a white-balance cast)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) * np.asarray(gains, dtype=np.float32)
    return Image.fromarray(np.clip(array + 0.5, 0, 255).astype(np.uint8))


def stain_scale(image: Image.Image, haematoxylin: float, eosin: float) -> Image.Image:
    """Scale the haematoxylin and eosin optical densities (colour deconvolution, HED space)."""
    hed = rgb2hed(np.asarray(image.convert("RGB")))
    hed[..., 0] *= haematoxylin
    hed[..., 1] *= eosin
    return Image.fromarray(np.clip(hed2rgb(hed) * 255 + 0.5, 0, 255).astype(np.uint8))


def desaturate(image: Image.Image, saturation: float) -> Image.Image:
    """Blend towards grey (``saturation`` 1 = unchanged, 0 = grayscale)."""
    return ImageEnhance.Color(image.convert("RGB")).enhance(saturation)


def encode_round_trip(image: Image.Image, fmt: str, **options) -> Image.Image:
    """Encode in ``fmt`` (JPEG, PNG, BMP) in memory and decode again."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format=fmt, **options)
    return read_image(buffer.getvalue())


def rescale(image: Image.Image, factor: float) -> Image.Image:
    """Down-sample to ``factor`` of the size and back up (a lower-resolution camera)."""
    small = image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))),
                         Image.Resampling.BILINEAR)
    return small.resize(image.size, Image.Resampling.BICUBIC)


def blur(image: Image.Image, radius: float) -> Image.Image:
    """Gaussian blur (slightly out of focus)."""
    return image.filter(ImageFilter.GaussianBlur(radius))


@dataclass(frozen=True)
class Spec:
    """A named perturbation and what it simulates."""

    description: str
    apply: Perturbation


#: The deterministic perturbations, in report order.
PERTURBATIONS: dict[str, Spec] = {
    "zoom_in_70": Spec("centre crop 1/1.8 of the side: cell fills ~70% of the frame", lambda im: zoom_in(im, 1.8)),
    "zoom_in_100": Spec("centre crop 1/2.5 of the side: cell fills ~100% of the frame", lambda im: zoom_in(im, 2.5)),
    "zoom_out_33": Spec("shrink to 0.8x on the border colour: cell fills ~1/3 of the frame", lambda im: zoom_out(im, 0.8)),
    "hue_plus_15": Spec("hue rotated by +15 degrees", lambda im: hue_shift(im, 15)),
    "more_blue": Spec("white balance towards blue (R x0.88, B x1.12)", lambda im: channel_gain(im, (0.88, 1.0, 1.12))),
    "more_red": Spec("white balance towards red (R x1.12, B x0.88)", lambda im: channel_gain(im, (1.12, 1.0, 0.88))),
    "stain_lighter": Spec("haematoxylin and eosin densities x0.7 (lighter stain)", lambda im: stain_scale(im, 0.7, 0.7)),
    "stain_darker": Spec("haematoxylin and eosin densities x1.3 (darker stain)", lambda im: stain_scale(im, 1.3, 1.3)),
    "desaturated": Spec("saturation x0.4 (greyish)", lambda im: desaturate(im, 0.4)),
    "jpeg_q40": Spec("JPEG re-encode at quality 40", lambda im: encode_round_trip(im, "JPEG", quality=40)),
    "png": Spec("PNG round trip (lossless)", lambda im: encode_round_trip(im, "PNG")),
    "bmp": Spec("BMP round trip (lossless)", lambda im: encode_round_trip(im, "BMP")),
    "camera_half_res": Spec("down-sampled to 0.5x and back up (lower-resolution camera)", lambda im: rescale(im, 0.5)),
    "blur": Spec("Gaussian blur, radius 1 px", lambda im: blur(im, 1.0)),
}
#: Perturbations that must not change any prediction.
LOSSLESS = ("png", "bmp")


# ----------------------------------------------------------------------------- cross-lab crops


def largest_box(annotation: Annotation, label: str = "WBC") -> Box | None:
    """The largest-area box labelled ``label``, or None."""
    boxes = [b for b in annotation.boxes if b.label == label]
    return max(boxes, key=lambda b: (b.x2 - b.x1) * (b.y2 - b.y1), default=None)


def square_around(box: Box, context: float, width: int, height: int) -> tuple[int, int, int, int]:
    """A square of ``context`` x the box's longer side centred on the box, moved (and if need be
    shrunk) to lie inside a ``width`` x ``height`` image; returns integer (left, top, right, bottom)."""
    if context <= 0:
        raise ConfigError(f"context must be positive, got {context}")
    side = min(round(max(box.x2 - box.x1, box.y2 - box.y1) * context), width, height)
    side = max(side, 1)
    cx, cy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
    left = int(min(max(round(cx - side / 2), 0), width - side))
    top = int(min(max(round(cy - side / 2), 0), height - side))
    return left, top, left + side, top + side


@dataclass
class CrossLabCells:
    """Cropped cells with their labels; ``skipped`` lists (image id, reason)."""

    images: list[Image.Image]
    labels: list[str]
    ids: list[str]
    skipped: list[tuple[str, str]]


def read_wbc_labels(path: str | Path) -> list[tuple[str, str]]:
    """``(image_id, wbc_type)`` rows of a BCCD ``wbc_labels.csv``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: WBC label file not found")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"image_id", "wbc_type"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected the columns image_id and wbc_type")
        return [(row["image_id"].strip(), row["wbc_type"].strip().lower()) for row in reader if row["image_id"]]


def bccd_crops(root: str | Path, context: float = 1.3, labels_csv: str | Path | None = None) -> CrossLabCells:
    """The largest WBC of every labelled smear under ``root`` (``JPEGImages/``, ``Annotations/``,
    ``wbc_labels.csv``), cut as a ``context``-times square; unusable smears are skipped."""
    root = Path(root)
    cells = CrossLabCells([], [], [], [])
    for image_id, wbc_type in read_wbc_labels(labels_csv or root / "wbc_labels.csv"):
        if wbc_type not in BCCD_TYPES:
            cells.skipped.append((image_id, f"unknown wbc_type {wbc_type!r}"))
            continue
        xml = root / "Annotations" / f"{image_id}.xml"
        try:
            box = largest_box(parse_voc(xml))
            image = read_image(root / "JPEGImages" / f"{image_id}.jpg")
        except (DataError, ImageError) as exc:
            cells.skipped.append((image_id, str(exc)))
            continue
        if box is None:
            cells.skipped.append((image_id, "no WBC box"))
            continue
        cells.images.append(image.crop(square_around(box, context, image.width, image.height)))
        cells.labels.append(wbc_type)
        cells.ids.append(image_id)
    return cells


# ----------------------------------------------------------------------------- scoring


def section_metrics(y_true: Sequence[str], probs: np.ndarray, class_names: Sequence[str], seconds: float,
                    n_boot: int = 200) -> dict[str, Any]:
    """N, accuracy (95% bootstrap CI), macro-F1 over the classes present, per-class recall and
    what each true class was predicted as."""
    from bloodcell.metrics.classification import classification_report

    names = list(class_names)
    y = np.asarray([names.index(label) for label in y_true], dtype=np.int64)
    report = classification_report(y, probs, names, n_boot=n_boot, seed=0)
    pred = probs.argmax(axis=1)
    predicted_as = {names[k]: dict(Counter(names[p] for p in pred[y == k]).most_common())
                    for k in sorted(set(y.tolist()))}
    boot = report["bootstrap"]["accuracy"]
    return {
        "n": report["n_samples"],
        "accuracy": report["accuracy"],
        "accuracy_ci95": [boot["low"], boot["high"]],
        "macro_f1": report["macro"]["f1"],
        "recall": {r["name"]: r["recall"] for r in report["per_class"] if r["support"] > 0},
        "predicted_as": predicted_as,
        "seconds": round(seconds, 2),
    }


def _predict(classifier, images: Sequence[Image.Image], batch_size: int, tta: bool = False) -> np.ndarray:
    return np.concatenate([classifier.predict_proba(images[i:i + batch_size], tta=tta)
                           for i in range(0, len(images), batch_size)])


def originals_of_split(paths: Sequence[Path], root: Path, manifest, split: str) -> tuple[list[int], Counter]:
    """Indices of the originals whose ``<class>/<stem>`` is a row of ``split``, and the split of every original.

    Originals not in the manifest at all count under ``"not in manifest"``.
    """
    split_of = {str(Path(row.path).with_suffix("")): row.split for row in manifest.rows}
    found = [split_of.get(str(path.relative_to(root).with_suffix("")), "not in manifest") for path in paths]
    return [i for i, name in enumerate(found) if name == split], Counter(found)


def _decode_all(paths: Sequence[Path], labels: Sequence[str]) -> tuple[list[Image.Image], list[str], list[tuple[str, str]]]:
    images, kept, skipped = [], [], []
    for path, label in zip(paths, labels):
        try:
            images.append(read_image(path))
            kept.append(label)
        except ImageError as exc:
            skipped.append((str(path), str(exc)))
    return images, kept, skipped


def score_split(classifier, paths: Sequence[Path], labels: Sequence[str], perturbations: dict[str, Spec],
                batch_size: int = 32) -> dict[str, Any]:
    """The clean images and each perturbation of them: ``{"clean": ..., name: ...}`` sections.

    Images are decoded once per batch; every perturbation is applied to the decoded image.
    Lossless perturbations also report whether every prediction equals the clean one.
    """
    from bloodcell.progress import track

    names = ["clean", *perturbations]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    seconds = dict.fromkeys(names, 0.0)
    kept: list[str] = []
    skipped: list[tuple[str, str]] = []
    starts = range(0, len(paths), batch_size)
    for start in track(starts, f"{len(paths)} images x {len(names)} conditions", total=len(starts)):
        images, labels_kept, bad = _decode_all(paths[start:start + batch_size], labels[start:start + batch_size])
        skipped += bad
        if not images:
            continue
        kept += labels_kept
        for name in names:
            begin = time.perf_counter()
            batch = images if name == "clean" else [perturbations[name].apply(im) for im in images]
            parts[name].append(classifier.predict_proba(batch))
            seconds[name] += time.perf_counter() - begin
    if not kept:
        raise DataError("no test image could be decoded")
    probs = {n: np.concatenate(parts[n]) for n in names}
    sections = {}
    clean_pred = probs["clean"].argmax(axis=1)
    for name in names:
        section = section_metrics(kept, probs[name], classifier.class_names, seconds[name])
        if name != "clean":
            section["description"] = perturbations[name].description
            section["changed_predictions"] = int((probs[name].argmax(axis=1) != clean_pred).sum())
        if name in LOSSLESS:
            section["identical_to_clean"] = section["changed_predictions"] == 0
        sections[name] = section
    return {"sections": sections, "skipped": skipped}


def score_images(classifier, images: Sequence[Image.Image], labels: Sequence[str], batch_size: int = 32,
                 tta: bool = False) -> dict[str, Any]:
    """One section for already decoded images (labels must be model classes)."""
    unknown = sorted(set(labels) - set(classifier.class_names))
    if unknown:
        raise DataError(f"labels {', '.join(unknown)} are not classes of the model")
    begin = time.perf_counter()
    probs = _predict(classifier, images, batch_size, tta)
    return section_metrics(labels, probs, classifier.class_names, time.perf_counter() - begin)


def run_robustness(checkpoint: str | Path, manifest: str | Path, *, limit: int | None = 800, split: str = "test",
                   data_root: str | Path | None = None, originals: str | Path | None = None,
                   bccd: str | Path | None = None, contexts: Sequence[float] = (1.3, 2.0),
                   batch_size: int = 32, log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Score ``checkpoint`` on the manifest's test split (stratified ``limit`` subset), its
    perturbations, an ``originals`` folder and ``bccd`` cross-lab crops at each context.

    ``split="val"`` scores the validation split instead (sections under ``val_split``), for
    choosing between candidate models without looking at the test split.

    ``originals`` and ``bccd`` are skipped (None in the result) when not given.
    """
    import bloodcell
    from bloodcell.checkpoint import file_sha256
    from bloodcell.evaluation.evaluate import git_commit
    from bloodcell.evaluation.items import folder_items, manifest_items

    checkpoint = Path(checkpoint)
    classifier = bloodcell.load(checkpoint)
    items = manifest_items(manifest, split, "pbc8", data_root, limit=limit)
    log(f"{split} split: {len(items.paths)} images")
    scored = score_split(classifier, items.paths, items.labels, PERTURBATIONS, batch_size)
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": file_sha256(checkpoint),
        "model_name": classifier.model.model_name if classifier.model is not None else None,
        "class_names": classifier.class_names,
        "manifest": str(manifest),
        "manifest_sha256": items.manifest_sha256,
        "limit": limit,
        "git_commit": git_commit(),
        "bloodcell_version": bloodcell.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "split": split,
        f"{split}_split": scored["sections"],
        f"{split}_skipped": [*items.skipped, *scored["skipped"]],
        "originals": None,
        "cross_lab": None,
    }
    if originals is not None:
        from bloodcell.data.manifest import read_manifest

        folder = folder_items(originals)
        keep, splits = originals_of_split(folder.paths, folder.root, read_manifest(manifest), split)
        if not keep:
            raise DataError(f"{originals}: none of its images is an original of the {split} split of {manifest}")
        images, labels, skipped = _decode_all([folder.paths[i] for i in keep], [folder.labels[i] for i in keep])
        log(f"originals: {len(images)} of the {len(folder.paths)} images in {originals} belong to the {split} split")
        sizes = Counter(f"{im.width}x{im.height}" for im in images)
        result["originals"] = {"folder": str(originals), "split_of_originals": dict(splits),
                               "sizes": dict(sizes.most_common()), "skipped": skipped,
                               **score_images(classifier, images, labels, batch_size),
                               "tta": score_images(classifier, images, labels, batch_size, tta=True)}
    if bccd is not None:
        from bloodcell.smear.wbc_typing import held_out_ids

        held = held_out_ids(Path(bccd).parent)  # the smears that fine-tuning and typing heads never see
        result["cross_lab"] = {}
        for context in contexts:
            cells = bccd_crops(bccd, context)
            keep = [i for i, image_id in enumerate(cells.ids) if image_id in held]
            cells = CrossLabCells([cells.images[i] for i in keep], [cells.labels[i] for i in keep],
                                  [cells.ids[i] for i in keep], cells.skipped)
            log(f"BCCD crops of the held-out smears at {context:g}x the box: {len(cells.images)} cells")
            if not cells.images:
                raise DataError(f"{bccd}: no labelled white-cell box could be cropped")
            section = score_images(classifier, cells.images, cells.labels, batch_size)
            result["cross_lab"][f"bccd_box_{context:g}x"] = {
                "folder": str(bccd), "context": context, "skipped": cells.skipped, **section}
    return result

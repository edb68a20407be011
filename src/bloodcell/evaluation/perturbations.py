"""Robustness of a classifier to what other labs send: magnification, stain, camera, file format.

Perturbations (``PERTURBATIONS``) are deterministic transforms of a decoded RGB image, applied
*before* the model's own preprocessing; each keeps the image's size and mode. PBC's white cells
fill about 40 % of the frame's width, so a centre crop of 1/1.8 of the side makes the cell fill
~70 % of it, 1/2.5 ~100 %, and shrinking to 0.8x on a border-coloured canvas ~1/3.
:func:`score_split` scores decoded images and each perturbation of them; the robustness job
(:mod:`bloodcell.workflows.robustness`) chooses the images (a split, untouched originals, another
lab's cells).
"""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from skimage.color import hed2rgb, rgb2hed

from bloodcell.data.images import read_image
from bloodcell.errors import ConfigError, DataError, ImageError
from bloodcell.metrics.classification import classification_report
from bloodcell.progress import track

Perturbation = Callable[[Image.Image], Image.Image]


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


def section_metrics(y_true: Sequence[str], probs: np.ndarray, class_names: Sequence[str], seconds: float,
                    n_boot: int = 200) -> dict[str, Any]:
    """N, accuracy (95% bootstrap CI), macro-F1 over the classes present, per-class recall and
    what each true class was predicted as."""
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


def decode_all(paths: Sequence[Path], labels: Sequence[str]) -> tuple[list[Image.Image], list[str], list[tuple[str, str]]]:
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
    names = ["clean", *perturbations]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    seconds = dict.fromkeys(names, 0.0)
    kept: list[str] = []
    skipped: list[tuple[str, str]] = []
    starts = range(0, len(paths), batch_size)
    for start in track(starts, f"{len(names)} conditions", total=len(paths), unit="images",
                       size=lambda s: min(batch_size, len(paths) - s)):
        images, labels_kept, bad = decode_all(paths[start:start + batch_size], labels[start:start + batch_size])
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



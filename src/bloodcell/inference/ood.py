"""Out-of-distribution guard: refer inputs that are not a single stained blood cell.

Three checks, each calibrated on in-distribution (validation) images so that together about
``pass_rate`` of them pass:

1. blank: a near-uniform image (grey-level standard deviation below ``blank_std``);
2. image statistics: squared Mahalanobis distance of a small colour/texture/layout vector
   (:func:`summarise`) to the validation distribution;
3. feature space: squared Mahalanobis distance of the classifier's penultimate features,
   whitened by PCA to at most ``max_components`` dimensions (the projection is stored, so
   the guard stays a few hundred kilobytes of JSON inside the checkpoint metadata).

:func:`calibrate_ood` fits the guard on a manifest split and rewrites the checkpoint with the
parameters under ``meta["ood"]``; the predictor applies it automatically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bloodcell.errors import ConfigError, DataError

STAT_NAMES = (
    "mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b",
    "mean_sat", "std_sat", "stained_fraction", "hue_cos", "hue_sin",
    "gradient", "centre_minus_border_sat",
)
_STATS_SIZE = 64


def thumbnail(image: Image.Image) -> np.ndarray:
    """The 64x64 RGB and HSV planes (uint8, 64x64x6) that :func:`summarise` works on."""
    resized = image.convert("RGB").resize((_STATS_SIZE, _STATS_SIZE), Image.BILINEAR)
    return np.concatenate([np.asarray(resized), np.asarray(resized.convert("HSV"))], axis=2)


def summarise(thumbnails: np.ndarray) -> np.ndarray:
    """(N, 14) summaries of a (N, 64, 64, 6) stack of :func:`thumbnail` arrays, vectorised.

    Per image: the 13 statistics of ``STAT_NAMES`` (stain colour: RGB, saturation and
    saturation-weighted hue; texture: mean gradient; layout: a single cell is centred, so the
    centre is more stained than the border) and, last, the grey-level (ITU-R 601 luma, 0..1)
    standard deviation that is near 0 for blank images.
    """
    small = thumbnails[..., :3].astype(np.float64) / 255.0
    hsv = thumbnails[..., 3:].astype(np.float64) / 255.0
    hue, sat = hsv[..., 0] * 2 * np.pi, hsv[..., 1]
    weight = sat.sum(axis=(1, 2)) + 1e-6
    pixels = small.reshape(len(small), -1, 3)
    luma = pixels @ np.array([0.299, 0.587, 0.114])
    gy, gx = np.gradient(small.mean(axis=3), axis=(1, 2))
    quarter = _STATS_SIZE // 4
    centre = np.zeros(sat.shape[1:], dtype=bool)
    centre[quarter:-quarter, quarter:-quarter] = True
    return np.column_stack([
        pixels.mean(axis=1),
        pixels.std(axis=1),
        sat.mean(axis=(1, 2)), sat.std(axis=(1, 2)), (sat > 0.25).mean(axis=(1, 2)),
        (np.cos(hue) * sat).sum(axis=(1, 2)) / weight, (np.sin(hue) * sat).sum(axis=(1, 2)) / weight,
        np.hypot(gx, gy).mean(axis=(1, 2)),
        sat[:, centre].mean(axis=1) - sat[:, ~centre].mean(axis=1),
        luma.std(axis=1),
    ])


@dataclass
class Gaussian:
    """A whitening projection and threshold: score = ||(x - mean) @ projection.T||^2."""

    mean: np.ndarray
    projection: np.ndarray
    threshold: float

    def score(self, x: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(x) - self.mean) @ self.projection.T
        return np.einsum("ij,ij->i", z, z)

    @classmethod
    def fit(cls, x: np.ndarray, quantile: float, max_components: int) -> "Gaussian":
        """PCA-whiten ``x`` (rows = samples) and set the threshold at the score ``quantile``."""
        mean = x.mean(axis=0)
        centred = x - mean
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        k = max(1, min(max_components, len(x) - 1, x.shape[1]))
        variance = singular[:k] ** 2 / max(len(x) - 1, 1)
        variance = variance + 1e-3 * max(float(variance.sum()), 1e-12) / k
        projection = vt[:k] / np.sqrt(variance)[:, None]
        gaussian = cls(mean=mean, projection=projection, threshold=0.0)
        gaussian.threshold = float(np.quantile(gaussian.score(x), quantile, method="higher"))
        return gaussian

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": _rounded(self.mean),
            "projection": [_rounded(row) for row in self.projection],
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Gaussian":
        return cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["projection"], dtype=np.float64), float(data["threshold"]))


@dataclass
class OODGuard:
    """Calibrated out-of-distribution checks; :meth:`check` returns a referral reason or None."""

    blank_std: float
    stats: Gaussian
    features: Gaussian
    pass_rate: float
    num_images: int

    def reasons(self, images: list[Image.Image], features: np.ndarray) -> list[str | None]:
        """One reason (or None when the input looks like a single stained cell) per image."""
        return self.judge(summarise(np.stack([thumbnail(im) for im in images])), features)

    def judge(self, summaries: np.ndarray, features: np.ndarray) -> list[str | None]:
        """:meth:`reasons` from the images' :func:`summarise` rows and penultimate features."""
        stat_scores = self.stats.score(summaries[:, :len(STAT_NAMES)])
        feat_scores = self.features.score(features.astype(np.float64))
        out: list[str | None] = []
        for grey, stat_score, feat_score in zip(summaries[:, -1], stat_scores, feat_scores):
            if grey < self.blank_std:
                out.append("not a single blood cell: blank or uniform image")
            elif stat_score > self.stats.threshold:
                out.append(f"not a single blood cell: colour/texture unlike stained cell images (score {stat_score:.0f} > {self.stats.threshold:.0f})")
            elif feat_score > self.features.threshold:
                out.append(f"not a single blood cell: unlike the training images in feature space (score {feat_score:.0f} > {self.features.threshold:.0f})")
            else:
                out.append(None)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "blank_std": self.blank_std,
            "stats": self.stats.to_dict(),
            "features": self.features.to_dict(),
            "pass_rate": self.pass_rate,
            "num_images": self.num_images,
            "stat_names": list(STAT_NAMES),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OODGuard":
        return cls(
            blank_std=float(data["blank_std"]),
            stats=Gaussian.from_dict(data["stats"]),
            features=Gaussian.from_dict(data["features"]),
            pass_rate=float(data["pass_rate"]),
            num_images=int(data["num_images"]),
        )


def fit_guard(images: list[Image.Image], features: np.ndarray, pass_rate: float = 0.99, max_components: int = 32) -> OODGuard:
    """Fit the guard on in-distribution images and their penultimate features.

    Each of the three checks keeps ``1 - (1 - pass_rate) / 3`` of the images, so at least
    ``pass_rate`` of them pass all checks.
    """
    if not 0.5 < pass_rate < 1.0:
        raise ConfigError(f"pass_rate must be between 0.5 and 1, got {pass_rate}")
    if len(images) < 10:
        raise DataError(f"calibrating the out-of-distribution guard needs at least 10 images, got {len(images)}")
    quantile = 1.0 - (1.0 - pass_rate) / 3.0
    summaries = summarise(np.stack([thumbnail(im) for im in images]))
    return OODGuard(
        blank_std=float(min(0.02, np.quantile(summaries[:, -1], 1.0 - quantile) / 2)),
        stats=Gaussian.fit(summaries[:, :len(STAT_NAMES)], quantile, max_components=len(STAT_NAMES)),
        features=Gaussian.fit(np.asarray(features, dtype=np.float64), quantile, max_components=max_components),
        pass_rate=pass_rate,
        num_images=len(images),
    )


def calibrate_ood(
    checkpoint_path: str | Path,
    manifest: str | Path,
    split: str = "val",
    *,
    data_root: str | Path | None = None,
    limit: int | None = 2000,
    pass_rate: float = 0.99,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit the guard on ``split`` of ``manifest`` and store it in the checkpoint's metadata.

    The checkpoint is rewritten in place (``update_metadata`` with ``ood=...``);
    the fitted parameters are returned. ``limit`` caps the images used (a seeded sample).
    """
    from bloodcell.checkpoint import load_checkpoint, update_metadata
    from bloodcell.data.images import read_image
    from bloodcell.data.locate import dataset_root
    from bloodcell.data.manifest import read_manifest
    from bloodcell.errors import ImageError
    from bloodcell.inference.predictor import Classifier
    from bloodcell.progress import track

    checkpoint = load_checkpoint(checkpoint_path)
    data = read_manifest(manifest)
    rows = list(data.rows_for(split))
    if not rows:
        raise DataError(f"{manifest}: split {split!r} has no images")
    if limit is not None and len(rows) > limit:
        picks = np.random.default_rng(seed).choice(len(rows), size=limit, replace=False)
        rows = [rows[i] for i in sorted(picks)]
    root = dataset_root(data.dataset, data_root)
    classifier = Classifier.from_checkpoint(checkpoint, use_ood=False)
    images: list[Image.Image] = []
    features: list[np.ndarray] = []
    for start in track(range(0, len(rows), batch_size), "calibrating OOD guard", total=-(-len(rows) // batch_size)):
        batch = []
        for row in rows[start:start + batch_size]:
            try:
                batch.append(read_image(root / row.path))
            except ImageError:
                continue
        if batch:
            features.append(classifier.features(batch))
            images.extend(batch)
    guard = fit_guard(images, np.concatenate(features), pass_rate=pass_rate)
    params = guard.to_dict()
    params.update(split=split, manifest_sha256=data.sha256)
    update_metadata(checkpoint_path, ood=params)
    return params


def _rounded(values: np.ndarray) -> list[float]:
    return [float(f"{v:.6g}") for v in np.asarray(values, dtype=np.float64).ravel()]

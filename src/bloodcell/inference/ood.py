"""Out-of-distribution guard: refer inputs that are not a single stained blood cell.

Three checks, each calibrated on in-distribution (validation) images so that together about
``pass_rate`` of them pass; checks 2 and 3 keep one Gaussian per calibration source (lab), and
an input passes when it is close to any of them:

1. blank: a near-uniform image (grey-level standard deviation below ``blank_std``);
2. image statistics: squared Mahalanobis distance of a small colour/texture/layout vector
   (:func:`summarise`, computed from the model's own uint8 input pixels) to the validation
   distribution;
3. feature space: squared Mahalanobis distance of the classifier's penultimate features,
   whitened by PCA to at most ``max_components`` dimensions (the projection is stored, so
   the guard stays a few hundred kilobytes of JSON inside the checkpoint metadata).

:func:`calibrate_ood` fits the guard on a manifest split (plus, optionally, other labs' cells)
and rewrites the checkpoint with the parameters under ``meta["ood"]``; the predictor applies
it automatically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bloodcell.errors import CheckpointError, ConfigError, DataError

STAT_NAMES = (
    "mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b",
    "mean_sat", "std_sat", "stained_fraction", "hue_cos", "hue_sin",
    "gradient", "centre_minus_border_sat",
)
#: Side of the box-averaged image the statistics are computed on.
_STATS_SIDE = 32
#: Version of the statistics; a guard fitted on another version must be calibrated again.
GUARD_VERSION = 2


def _small_planes(pixels: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """(N, 3, H, W) uint8 model-input pixels box-averaged to about 32x32: (N, 3, h*w) floats in 0..1, and (h, w)."""
    factor = max(1, min(pixels.shape[2:]) // _STATS_SIDE)
    small = np.asarray([[np.asarray(Image.fromarray(plane).reduce(factor)) for plane in image] for image in pixels],
                       dtype=np.float32)
    return small.reshape(len(pixels), 3, -1) / np.float32(255.0), small.shape[2:]


def _hue_saturation(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV hue (radians) and saturation (0..1) of RGB planes in 0..1."""
    top, bottom = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    chroma = top - bottom
    saturation = np.where(top > 0, chroma / np.maximum(top, 1e-6), 0.0)
    safe = np.maximum(chroma, 1e-6)
    sector = np.where(top == r, ((g - b) / safe) % 6.0, np.where(top == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    return np.where(chroma > 0, sector, 0.0) * (np.pi / 3.0), saturation


def summarise(pixels: np.ndarray) -> np.ndarray:
    """(N, 14) summaries of a batch of uint8 model-input pixels (N, 3, H, W), vectorised.

    Per image: the 13 statistics of ``STAT_NAMES`` (stain colour: RGB, saturation and
    saturation-weighted hue; texture: mean gradient; layout: a single cell is centred, so the
    centre is more stained than the border) and, last, the grey-level (ITU-R 601 luma, 0..1)
    standard deviation that is near 0 for blank images. Computed on the box-averaged image
    (:func:`_small_planes`), so it costs little next to the model.
    """
    planes, (height, width) = _small_planes(pixels)
    r, g, b = planes[:, 0], planes[:, 1], planes[:, 2]
    hue, sat = _hue_saturation(r, g, b)
    weight = sat.sum(axis=1) + 1e-6
    gy, gx = np.gradient(planes.mean(axis=1).reshape(len(planes), height, width), axis=(1, 2))
    centre = np.zeros((height, width), dtype=np.float32)
    centre[height // 4:height - height // 4, width // 4:width - width // 4] = 1.0
    centre = centre.ravel()
    return np.column_stack([
        planes.mean(axis=2),
        planes.std(axis=2),
        sat.mean(axis=1), sat.std(axis=1), (sat > 0.25).mean(axis=1),
        (np.cos(hue) * sat).sum(axis=1) / weight, (np.sin(hue) * sat).sum(axis=1) / weight,
        np.hypot(gx, gy).reshape(len(planes), -1).mean(axis=1),
        np.einsum("np,p->n", sat, centre) / centre.sum() - np.einsum("np,p->n", sat, 1.0 - centre) / (1.0 - centre).sum(),
        (0.299 * r + 0.587 * g + 0.114 * b).std(axis=1),
    ]).astype(np.float64)


@dataclass
class Gaussian:
    """A whitening projection and threshold: score = ||(x - mean) @ projection.T||^2."""

    mean: np.ndarray
    projection: np.ndarray
    threshold: float

    def score(self, x: np.ndarray) -> np.ndarray:
        # einsum, not BLAS: a BLAS thread pool busy-waiting after the call would steal the model's cores
        z = np.einsum("nd,kd->nk", np.atleast_2d(x) - self.mean, self.projection)
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


def _nearest(components: list[Gaussian], x: np.ndarray) -> np.ndarray:
    """Per row, the smallest score-to-threshold ratio over ``components`` (at most 1: within one of them)."""
    return np.min([g.score(x) / max(g.threshold, 1e-12) for g in components], axis=0)


@dataclass
class OODGuard:
    """Calibrated out-of-distribution checks; :meth:`reasons` gives a referral reason or None per image.

    The image-statistics and feature checks hold one :class:`Gaussian` per calibration source
    (a lab): an input passes a check when it lies within any source's threshold.
    """

    blank_std: float
    stats: list[Gaussian]
    features: list[Gaussian]
    pass_rate: float
    num_images: int
    sources: list[str]

    def reasons(self, pixels: np.ndarray, features: np.ndarray) -> list[str | None]:
        """One reason (or None when the input looks like a single stained cell) per image.

        ``pixels`` are the uint8 model inputs (N, 3, H, W) and ``features`` their penultimate
        features (N, D), both as the :class:`~bloodcell.inference.predictor.Classifier` makes them.
        """
        summaries = summarise(pixels)
        stat_ratios = _nearest(self.stats, summaries[:, :len(STAT_NAMES)])
        feat_ratios = _nearest(self.features, features.astype(np.float64))
        out: list[str | None] = []
        for grey, stat_ratio, feat_ratio in zip(summaries[:, -1], stat_ratios, feat_ratios):
            if grey < self.blank_std:
                out.append("not a single blood cell: blank or uniform image")
            elif stat_ratio > 1.0:
                out.append(f"not a single blood cell: colour/texture unlike stained cell images ({stat_ratio:.1f}x the limit)")
            elif feat_ratio > 1.0:
                out.append(f"not a single blood cell: unlike the training images in feature space ({feat_ratio:.1f}x the limit)")
            else:
                out.append(None)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": GUARD_VERSION,
            "blank_std": self.blank_std,
            "stats": [g.to_dict() for g in self.stats],
            "features": [g.to_dict() for g in self.features],
            "pass_rate": self.pass_rate,
            "num_images": self.num_images,
            "sources": list(self.sources),
            "stat_names": list(STAT_NAMES),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OODGuard":
        if data.get("version") != GUARD_VERSION:
            raise CheckpointError(f"the out-of-distribution guard in this checkpoint was fitted by an older bloodcell "
                                  f"(version {data.get('version')}, need {GUARD_VERSION}); fit it again with "
                                  f"`bloodcell calibrate-ood CHECKPOINT --manifest MANIFEST`")
        return cls(
            blank_std=float(data["blank_std"]),
            stats=[Gaussian.from_dict(g) for g in data["stats"]],
            features=[Gaussian.from_dict(g) for g in data["features"]],
            pass_rate=float(data["pass_rate"]),
            num_images=int(data["num_images"]),
            sources=list(data["sources"]),
        )


def fit_guard(pixels: np.ndarray, features: np.ndarray, pass_rate: float = 0.99, max_components: int = 32,
              sources: Sequence[str] | None = None) -> OODGuard:
    """Fit the guard on in-distribution model inputs (uint8, N x 3 x H x W) and their penultimate features.

    ``sources`` names each row's origin (a lab; default: one source); each source gets its own
    Gaussians. Each of the three checks keeps ``1 - (1 - pass_rate) / 3`` of every source's
    images, so at least ``pass_rate`` of them pass all checks.
    """
    if not 0.5 < pass_rate < 1.0:
        raise ConfigError(f"pass_rate must be between 0.5 and 1, got {pass_rate}")
    labels = np.asarray(["default"] * len(pixels) if sources is None else list(sources))
    if len(labels) != len(pixels):
        raise ConfigError(f"{len(labels)} source names for {len(pixels)} images")
    names = list(dict.fromkeys(labels.tolist()))
    for name in names:
        count = int((labels == name).sum())
        if count < 10:
            raise DataError(f"calibrating the out-of-distribution guard needs at least 10 images per source, "
                            f"got {count} from {name}")
    quantile = 1.0 - (1.0 - pass_rate) / 3.0
    summaries = summarise(pixels)
    features = np.asarray(features, dtype=np.float64)
    return OODGuard(
        blank_std=float(min(0.02, np.quantile(summaries[:, -1], 1.0 - quantile) / 2)),
        stats=[Gaussian.fit(summaries[labels == name, :len(STAT_NAMES)], quantile, max_components=len(STAT_NAMES))
               for name in names],
        features=[Gaussian.fit(features[labels == name], quantile, max_components=max_components) for name in names],
        pass_rate=pass_rate,
        num_images=len(pixels),
        sources=names,
    )


def calibrate_ood(
    checkpoint_path: str | Path,
    manifest: str | Path,
    split: str = "val",
    *,
    extra: Sequence[str | Path] = (),
    data_root: str | Path | None = None,
    limit: int | None = 2000,
    pass_rate: float = 0.99,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit the guard on ``split`` of ``manifest`` and store it in the checkpoint's metadata.

    ``extra`` manifests add the cells of other labs (their ``train`` split, e.g. the crops the
    model was fine-tuned with), so that stained cells from those labs pass the guard too.
    The checkpoint is rewritten in place (``update_metadata`` with ``ood=...``); the fitted
    parameters are returned. ``limit`` caps the images used from each manifest (a seeded sample).
    """
    from bloodcell.checkpoint import load_checkpoint, update_metadata
    from bloodcell.data.locate import dataset_root, manifest_images_root
    from bloodcell.data.manifest import read_manifest
    from bloodcell.inference.predictor import Classifier

    classifier = Classifier.from_checkpoint(load_checkpoint(checkpoint_path), use_ood=False)
    main = read_manifest(manifest)
    sources = [(main, split, dataset_root(main.dataset, data_root))]
    for path in extra:
        data = read_manifest(path)
        sources.append((data, "train", manifest_images_root(path, data.dataset, data_root)))
    pixels, features, names = [], [], []
    for data, part, root in sources:
        source_pixels, source_features = _calibration_set(classifier, data, part, root, limit=limit,
                                                          batch_size=batch_size, seed=seed)
        pixels.append(source_pixels)
        features.append(source_features)
        names += [f"{data.path} ({part})"] * len(source_pixels)
    guard = fit_guard(np.concatenate(pixels), np.concatenate(features), pass_rate=pass_rate, sources=names)
    params = guard.to_dict()
    params.update(split=split, manifest_sha256=main.sha256,
                  extra_sha256={str(path): data.sha256 for path, (data, _, _) in zip(extra, sources[1:])})
    update_metadata(checkpoint_path, ood=params)
    return params


def _calibration_set(classifier, data, split: str, root: Path, *, limit: int | None, batch_size: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Model-input pixels and penultimate features of ``split`` of manifest ``data`` (images under ``root``)."""
    from bloodcell.data.images import read_image
    from bloodcell.errors import ImageError
    from bloodcell.progress import track

    rows = list(data.rows_for(split))
    if not rows:
        raise DataError(f"{data.path}: split {split!r} has no images")
    if limit is not None and len(rows) > limit:
        picks = np.random.default_rng(seed).choice(len(rows), size=limit, replace=False)
        rows = [rows[i] for i in sorted(picks)]
    pixels, features = [], []
    for start in track(range(0, len(rows), batch_size), f"calibrating OOD guard ({Path(data.path).name})",
                       total=-(-len(rows) // batch_size)):
        batch = []
        for row in rows[start:start + batch_size]:
            try:
                batch.append(read_image(root / row.path))
            except ImageError:
                continue
        if batch:
            pixels.append(classifier.pixels(batch))
            features.append(classifier.pixel_features(pixels[-1]))
    if not pixels:
        raise DataError(f"{data.path}: none of the {split} images could be read")
    return np.concatenate(pixels), np.concatenate(features)


def _rounded(values: np.ndarray) -> list[float]:
    return [float(f"{v:.6g}") for v in np.asarray(values, dtype=np.float64).ravel()]

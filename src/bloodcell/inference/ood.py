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

An input that fails them is told apart by a second question, which needs no lab's limits: is it a
single stained cell at all? A single-cell image by its layout (the stained cell nearest the centre,
found by :mod:`bloodcell.framing` without the model on the image as given, is centred and fills much
of it; neighbours cut by the edge allowed: :meth:`~bloodcell.framing.CellSearch.single_cell`) that
shows a stained cell is referred as an unfamiliar lab's cell, with what to do (review, then adapt);
anything else as not a single blood cell. Whether a stained cell is there at all
(:func:`~bloodcell.inference.cell_presence.cell_present`) is asked first, lab or no lab. Measured
leave-one-lab-out (each lab's cells under a guard calibrated without them) with non-cells in
``benchmarks/new_lab.py``.

:func:`fit_guard` fits it on in-distribution model inputs and features (the calibration
workflow, :mod:`bloodcell.workflows.calibrate`, stores it under the checkpoint's ``ood``
metadata); the predictor applies it automatically. A stored guard is validated when read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bloodcell.errors import CheckpointError, ConfigError, DataError
from bloodcell.framing import search_cells
from bloodcell.inference.cell_presence import cell_present

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
    count, _, height, width = pixels.shape
    if factor in (1, 2, 4, 8, 16) and height % factor == 0 and width % factor == 0:
        # Pillow's reduce() for the whole batch at once: box sums (in uint16, which holds 16 x 16 x 255) rounded
        # half up, exactly Pillow's result for power-of-two boxes; added slice by slice, faster than a sum over axes
        boxes = pixels.reshape(count, 3, height // factor, factor, width // factor, factor)
        sums = np.zeros((count, 3, height // factor, width // factor), np.uint16)
        for row in range(factor):
            for column in range(factor):
                np.add(sums, boxes[:, :, :, row, :, column], out=sums, casting="unsafe")
        small = ((sums + factor * factor // 2) // (factor * factor)).astype(np.float32)
    else:
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
    def from_dict(cls, data: dict[str, Any], dimension: int | None = None) -> "Gaussian":
        """A stored Gaussian; ValueError unless its arrays are finite and their shapes agree."""
        mean = np.asarray(data["mean"], dtype=np.float64)
        projection = np.asarray(data["projection"], dtype=np.float64)
        threshold = float(data["threshold"])
        if mean.ndim != 1 or projection.ndim != 2 or projection.shape[1] != len(mean) or not len(mean):
            raise ValueError(f"a mean of shape {mean.shape} does not fit a projection of shape {projection.shape}")
        if dimension is not None and len(mean) != dimension:
            raise ValueError(f"it scores {len(mean)} values where {dimension} are expected")
        if not (np.isfinite(mean).all() and np.isfinite(projection).all() and math.isfinite(threshold) and threshold > 0):
            raise ValueError("it holds values that are not finite or a threshold that is not positive")
        return cls(mean, projection, threshold)


def _ratios(components: list[Gaussian], x: np.ndarray) -> np.ndarray:
    """Score-to-threshold ratios (sources, rows): at most 1 where a row lies within a source's Gaussian."""
    return np.array([g.score(x) / max(g.threshold, 1e-12) for g in components])


#: How the referral reason and the note of an unfamiliar lab's cell begin (what callers look for).
UNFAMILIAR = "unfamiliar lab"

#: The referral reason of a stained cell unlike the cells of every lab the guard knows.
UNFAMILIAR_REFERRAL = (f"{UNFAMILIAR}: a stained single cell, but unlike the cells of every lab this model knows "
                       "(stain, camera or magnification; colour statistics {stats:.1f}x, features {features:.1f}x the "
                       "limits), so its type would be a guess: have a person review it, then adapt the model to your "
                       "lab from reviewed cells with `bloodcell adapt`")


def single_cell_input(pixels: np.ndarray) -> bool:
    """True when a uint8 model input (3, H, W), taken as the image, is a single-cell image (no model; see
    :meth:`~bloodcell.framing.CellSearch.single_cell`)."""
    image = Image.fromarray(np.ascontiguousarray(np.asarray(pixels, dtype=np.uint8).transpose(1, 2, 0)))
    return search_cells(image).single_cell(image.size)


#: The note of a cell that looks like a stained blood cell, but not like those of the model's own labs.
UNFAMILIAR_NOTE = (f"{UNFAMILIAR}: stain or camera unlike those of the labs this model learned from, so its accuracy "
                   "here is unknown; adapt it to your lab with `bloodcell adapt DIR`")


@dataclass
class OODGuard:
    """Calibrated out-of-distribution checks; :meth:`assess` gives a referral reason and a note per image.

    The image-statistics and feature checks hold one :class:`Gaussian` per calibration source
    (a lab): an input is like a source's cells when it lies within both of that source's thresholds. A source
    that is not ``layout_free`` (white cells cut from another lab's photos, ``calibrate-ood --extra`` and
    ``--unfamiliar``) vouches only for an image laid out as a single-cell image as well: such a lab's whole photo
    lies within its limits too.
    """

    blank_std: float
    stats: list[Gaussian]
    features: list[Gaussian]
    pass_rate: float
    num_images: int
    sources: list[str]
    #: Per source: a lab the model learned from (True), or another lab's stained cells (False).
    familiar: list[bool] = field(default_factory=list)
    #: Per source: its limits alone let a cell through (the model's own validation cells, held out from its training
    #: lab; a lab's own reviewed cells that it adapted the model from), or only with a single-cell layout (False).
    layout_free: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.familiar = list(self.familiar) or [True] * len(self.sources)
        self.layout_free = list(self.layout_free) or [True] * len(self.sources)

    def assess(self, pixels: np.ndarray, features: np.ndarray,
               single: Sequence[bool] | None = None) -> list[tuple[str | None, str | None]]:
        """Per image, (referral reason, note): (None, None) for a cell like those of the model's own labs,
        (None, :data:`UNFAMILIAR_NOTE`) for a cell of another lab the guard was calibrated with,
        (:data:`UNFAMILIAR_REFERRAL`, None) for a stained single cell unlike every known lab, ("not a single blood
        cell: ...", None) otherwise.

        Two questions are kept apart: is it a cell of a lab the guard knows (colour statistics and features
        within a lab's limits), and, when not, is it a single stained cell at all (a single-cell image by its
        layout, showing a stained cell: :func:`~bloodcell.inference.cell_presence.cell_present`), which needs no
        lab's limits and is asked first: an image with no stained cell in it is not a cell even when its colours
        and features lie within a lab's limits (a crop of red cells only). A cell of an unknown
        lab fails the first on its features, its colours or both, and passes the second.
        ``pixels`` are the uint8 model inputs (N, 3, H, W) and ``features`` their penultimate features (N, D),
        both as the :class:`~bloodcell.inference.predictor.Classifier` makes them; ``single`` says per input
        whether the image it came from is a single-cell image (:meth:`~bloodcell.framing.CellSearch.single_cell`;
        a field or smear photo is not, even when the model's framing cut it down to one cell); when not given,
        it is judged on the model inputs (:func:`single_cell_input`).
        """
        if single is not None and len(single) != len(pixels):
            raise ValueError(f"{len(single)} layouts for {len(pixels)} images")
        summaries = summarise(pixels)
        stats = _ratios(self.stats, summaries[:, :len(STAT_NAMES)])
        feats = _ratios(self.features, features.astype(np.float64))
        like = (stats <= 1.0) & (feats <= 1.0)  # (sources, images): within both of a source's limits
        every = np.ones(len(self.sources), bool)
        home, free = np.asarray(self.familiar, bool), np.asarray(self.layout_free, bool)
        present = cell_present(pixels)

        def within(sources: np.ndarray, i: int) -> bool:
            return bool(like[sources, i].any())

        @lru_cache(maxsize=None)
        def lone(i: int) -> bool:  # the layout, looked for only where it decides
            return single_cell_input(pixels[i]) if single is None else bool(single[i])

        out: list[tuple[str | None, str | None]] = []
        for i, grey in enumerate(summaries[:, -1]):
            stat, feat = stats[:, i].min(), feats[:, i].min()
            if grey < self.blank_std:
                out.append(("not a single blood cell: blank or uniform image", None))
            elif not present[i]:
                out.append(("not a single blood cell: no stained nucleus or granules stand out from the red cells and "
                            "background", None))
            elif within(home & free, i) or (within(home, i) and lone(i)):
                out.append((None, None))
            elif within(free, i) or (within(every, i) and lone(i)):
                out.append((None, UNFAMILIAR_NOTE))
            elif lone(i):
                out.append((UNFAMILIAR_REFERRAL.format(stats=stat, features=feat), None))
            else:
                out.append(("not a single blood cell: stained, but not one cell centred in the image and filling "
                            "much of it as in a single-cell image (for smear photos use `bloodcell count`)", None))
        return out

    def unfamiliar(self, pixels: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Per input already known to be a cell (a detected white cell): True when it is unlike the cells of every
        lab the model learned from (colour statistics or features beyond each such lab's limits)."""
        home = np.asarray(self.familiar, bool)
        stats = _ratios([g for g, h in zip(self.stats, home) if h], summarise(pixels)[:, :len(STAT_NAMES)])
        feats = _ratios([g for g, h in zip(self.features, home) if h], features.astype(np.float64))
        return ~((stats <= 1.0) & (feats <= 1.0)).any(axis=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": GUARD_VERSION,
            "blank_std": self.blank_std,
            "stats": [g.to_dict() for g in self.stats],
            "features": [g.to_dict() for g in self.features],
            "pass_rate": self.pass_rate,
            "num_images": self.num_images,
            "sources": list(self.sources),
            "familiar": list(self.familiar),
            "layout_free": list(self.layout_free),
            "stat_names": list(STAT_NAMES),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> "OODGuard":
        """The guard stored in a checkpoint's ``ood`` metadata; CheckpointError when it is malformed."""
        where = source or "the checkpoint"
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: its out-of-distribution guard is not a JSON object")
        if data.get("version") != GUARD_VERSION:
            raise CheckpointError(f"{where}: its out-of-distribution guard was fitted by an older bloodcell "
                                  f"(version {data.get('version')}, need {GUARD_VERSION}); fit it again with "
                                  f"`bloodcell calibrate-ood --model CHECKPOINT --manifest MANIFEST`")
        try:
            stats = [Gaussian.from_dict(g, len(STAT_NAMES)) for g in data["stats"]]
            features = [Gaussian.from_dict(g) for g in data["features"]]
            sources = [str(s) for s in data["sources"]]
            familiar = _flags(data.get("familiar"), len(sources))
            layout_free = _flags(data.get("layout_free"), len(sources))
            if not stats or not len(stats) == len(features) == len(sources) == len(familiar) == len(layout_free) \
                    or len({len(g.mean) for g in features}) != 1:
                raise ValueError("it needs one statistics and one feature Gaussian per source, of one dimension")
            if not any(familiar):
                raise ValueError("none of its sources is a lab the model learned from")
            return cls(blank_std=float(data["blank_std"]), stats=stats, features=features,
                       pass_rate=float(data["pass_rate"]), num_images=int(data["num_images"]),
                       sources=sources, familiar=familiar, layout_free=layout_free)
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:  # 1e999 reads as inf: int(inf) overflows
            raise CheckpointError(f"{where}: its out-of-distribution guard is malformed ({exc})") from None

    @property
    def feature_dimension(self) -> int:
        return len(self.features[0].mean)


def _flags(stored: Any, count: int) -> list[bool]:
    """A stored per-source list of booleans (absent: all True, as guards stored before it read); ValueError else."""
    if stored is None:
        return [True] * count
    if not isinstance(stored, list) or not all(isinstance(flag, bool) for flag in stored):
        raise ValueError(f"per-source flags must be a list of true/false values, got {str(stored)[:60]}")
    return stored


def fit_guard(pixels: np.ndarray, features: np.ndarray, pass_rate: float = 0.99, max_components: int = 32,
              sources: Sequence[str] | None = None, unfamiliar: Sequence[str] = (),
              layout_free: Sequence[str] | None = None) -> OODGuard:
    """Fit the guard on in-distribution model inputs (uint8, N x 3 x H x W) and their penultimate features.

    ``sources`` names each row's origin (a lab; default: one source); each source gets its own
    Gaussians; the sources named in ``unfamiliar`` are other labs' stained cells the model did not
    learn from (their cells pass with the unfamiliar-lab note). The sources named in ``layout_free`` (default:
    the first, a model's own validation cells) vouch for an image on their limits alone, the others only for an
    image laid out as a single-cell image (:class:`OODGuard`). Each of the three checks keeps
    ``1 - (1 - pass_rate) / 3`` of every source's images, so at least ``pass_rate`` of them pass all checks.
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
        familiar=[name not in unfamiliar for name in names],
        layout_free=[name in (names[:1] if layout_free is None else layout_free) for name in names],
    )


def _rounded(values: np.ndarray) -> list[float]:
    return [float(f"{v:.6g}") for v in np.asarray(values, dtype=np.float64).ravel()]

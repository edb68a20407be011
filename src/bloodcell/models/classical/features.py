"""Hand-crafted cell features (shape, texture, colour) and the scikit-learn transformer computing them."""

from __future__ import annotations

import cv2
import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
from skimage.measure import perimeter
from sklearn.base import BaseEstimator, TransformerMixin

from bloodcell.errors import ImageError
from bloodcell.segmentation import Segmentation, lobe_count, preprocess, segment

SHAPE_NAMES = [f"{region}_{name}" for region in ("cell", "nucleus")
               for name in ("area", "perimeter", "circularity", "eccentricity", "solidity")]
SHAPE_NAMES += ["nucleus_cell_ratio", "lobe_count"]
GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation")
GLCM_DISTANCES = (1, 2)
GLCM_NAMES = [f"glcm_{prop}_d{d}" for prop in GLCM_PROPS for d in GLCM_DISTANCES]
LBP_POINTS = 8
LBP_NAMES = [f"lbp_{region}_{i}" for region in ("cell", "nucleus") for i in range(LBP_POINTS + 2)]
CHANNELS = ("R", "G", "B", "H", "S", "V", "L", "a", "b")
STATS = ("mean", "std", "p10", "p50", "p90")
COLOUR_NAMES = [f"{region}_{channel}_{stat}" for region in ("nucleus", "cytoplasm")
                for channel in CHANNELS for stat in STATS]
FEATURE_NAMES = SHAPE_NAMES + GLCM_NAMES + LBP_NAMES + COLOUR_NAMES + ["segmentation_failed"]
#: Most images per joblib task when extracting in parallel.
CHUNK = 64


def _shape(mask: np.ndarray, image_area: int) -> list[float]:
    """Area and perimeter (relative to the image), circularity, eccentricity, solidity of a mask."""
    area = float(mask.sum())
    if area == 0:
        return [0.0] * 5
    binary = mask.astype(np.uint8)
    edge = float(perimeter(mask))
    circularity = 4 * np.pi * area / edge**2 if edge > 0 else 0.0
    moments = cv2.moments(binary, binaryImage=True)
    mu20, mu02, mu11 = (moments[k] / moments["m00"] for k in ("mu20", "mu02", "mu11"))
    spread = np.sqrt(((mu20 - mu02) / 2) ** 2 + mu11**2)
    major, minor = (mu20 + mu02) / 2 + spread, (mu20 + mu02) / 2 - spread
    eccentricity = np.sqrt(max(1 - minor / major, 0.0)) if major > 0 else 0.0
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.fillConvexPoly(np.zeros_like(binary), cv2.convexHull(np.concatenate(contours)), 1)
    solidity = area / max(float(hull.sum()), area)
    return [area / image_area, edge / np.sqrt(image_area), min(circularity, 1.5), float(eccentricity), solidity]


def _glcm(gray: np.ndarray, cell: np.ndarray) -> list[float]:
    """GLCM properties of the cell's bounding box in 32 grey levels, averaged over 4 angles."""
    ys, xs = np.nonzero(cell)
    crop = gray[ys.min():ys.max() + 1, xs.min():xs.max() + 1] if ys.size else gray
    matrix = graycomatrix(crop // 8, GLCM_DISTANCES, (0, np.pi / 4, np.pi / 2, 3 * np.pi / 4),
                          levels=32, symmetric=True, normed=True)
    return [float(v) for prop in GLCM_PROPS for v in graycoprops(matrix, prop).mean(axis=1)]


def _lbp_codes(gray: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Uniform LBP codes (8 points, radius 1), computed only over the cell's bounding box (+1 pixel)."""
    codes = np.zeros(gray.shape, dtype=np.float64)
    ys, xs = np.nonzero(cell)
    top, left = max(ys.min() - 1, 0), max(xs.min() - 1, 0)
    bottom, right = ys.max() + 2, xs.max() + 2
    codes[top:bottom, left:right] = local_binary_pattern(np.ascontiguousarray(gray[top:bottom, left:right]),
                                                         LBP_POINTS, 1, method="uniform")
    return codes


def _lbp_histogram(codes: np.ndarray, mask: np.ndarray) -> list[float]:
    values = codes[mask]
    if values.size == 0:
        return [0.0] * (LBP_POINTS + 2)
    return list(np.bincount(values.astype(np.int64), minlength=LBP_POINTS + 2) / values.size)


def _colour(channels: np.ndarray, mask: np.ndarray) -> list[float]:
    """Mean, std and 10/50/90th percentiles of every uint8 channel within ``mask`` (zeros when empty).

    Computed from 256-bin histograms (percentiles are the lowest value reaching the rank).
    """
    pixels = channels[mask]
    if pixels.shape[0] == 0:
        return [0.0] * (len(CHANNELS) * len(STATS))
    count = pixels.shape[0]
    offsets = np.arange(pixels.shape[1]) * 256
    histograms = np.bincount((pixels + offsets).ravel(), minlength=256 * pixels.shape[1]).reshape(-1, 256)
    values = np.arange(256, dtype=np.float64)
    mean = histograms @ values / count
    std = np.sqrt(np.maximum(histograms @ values**2 / count - mean**2, 0.0))
    cumulative = np.cumsum(histograms, axis=1)
    ranks = np.array([0.1, 0.5, 0.9]) * count
    quantiles = np.stack([np.searchsorted(row, ranks) for row in cumulative]).astype(np.float64)
    return list(np.column_stack([mean, std, quantiles]).ravel())


def image_features(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Feature vector (ordered as :data:`FEATURE_NAMES`) of one RGB uint8 image and a failure reason.

    When segmentation fails, the whole image stands in for the cell, the nucleus is empty and
    ``segmentation_failed`` is 1: the vector is still finite.
    """
    clean = preprocess(image)
    seg = segment(clean)
    height, width = seg.cell.shape
    if seg.failure is not None:
        seg = Segmentation(np.ones((height, width), dtype=bool), seg.nucleus, seg.failure)
    area = height * width
    cell_shape, nucleus_shape = _shape(seg.cell, area), _shape(seg.nucleus, area)
    ratio = float(seg.nucleus.sum()) / max(float(seg.cell.sum()), 1.0)
    gray = cv2.cvtColor(clean, cv2.COLOR_RGB2GRAY)
    codes = _lbp_codes(gray, seg.cell)
    hsv = cv2.cvtColor(clean, cv2.COLOR_RGB2HSV)
    lab = cv2.cvtColor(clean, cv2.COLOR_RGB2LAB)
    channels = np.concatenate([clean, hsv, lab], axis=2).astype(np.int64)
    cytoplasm = seg.cell & ~seg.nucleus
    vector = (cell_shape + nucleus_shape + [ratio, float(lobe_count(seg.nucleus))] + _glcm(gray, seg.cell)
              + _lbp_histogram(codes, seg.cell) + _lbp_histogram(codes, seg.nucleus)
              + _colour(channels, seg.nucleus) + _colour(channels, cytoplasm) + [float(seg.failure is not None)])
    return np.nan_to_num(np.asarray(vector, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0), seg.failure


def _as_image(image) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ImageError(f"expected an HxWx3 uint8 RGB image, got shape {array.shape} and dtype {array.dtype}")
    return array


def _extract(images) -> tuple[np.ndarray, list[str | None]]:
    results = [image_features(_as_image(image)) for image in images]
    return np.stack([r[0] for r in results]), [r[1] for r in results]


class CellFeatureExtractor(TransformerMixin, BaseEstimator):
    """Images -> shape, texture and colour features of the centre cell (see :data:`FEATURE_NAMES`).

    ``transform`` accepts a uint8 array (N, S, S, 3) or a list of HxWx3 uint8 images. It is
    stateless apart from ``failures_``: (index, reason) of the images of the last call whose
    segmentation failed (their features are defaults plus ``segmentation_failed = 1``).
    """

    def __init__(self, n_jobs: int = 1):
        self.n_jobs = n_jobs

    def fit(self, X, y=None):
        self.n_features_out_ = len(FEATURE_NAMES)
        return self

    def transform(self, X) -> np.ndarray:
        images = list(X)
        if not images:
            raise ImageError("no images to extract features from")
        size = min(CHUNK, -(-len(images) // effective_n_jobs(self.n_jobs)))  # at least one chunk per worker
        chunks = [images[i:i + size] for i in range(0, len(images), size)]
        if self.n_jobs == 1 or len(chunks) == 1:
            parts = [_extract(chunk) for chunk in chunks]
        else:
            parts = Parallel(n_jobs=self.n_jobs)(delayed(_extract)(chunk) for chunk in chunks)
        self.failures_ = [(i, reason) for i, reason in enumerate(r for part in parts for r in part[1]) if reason]
        return np.concatenate([part[0] for part in parts])

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.asarray(FEATURE_NAMES, dtype=object)

    def __sklearn_is_fitted__(self) -> bool:
        return True

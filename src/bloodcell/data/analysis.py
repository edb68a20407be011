"""Per-file facts used by ``check`` and ``split``: sha256, decodability, mode, size,
perceptual hash and focus score; plus duplicate grouping and blur thresholds."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import imagehash
import numpy as np
from PIL import Image

from bloodcell.data.images import decode_bytes
from bloodcell.errors import ImageError
from bloodcell.progress import track

#: Default Hamming distance (of 64-bit pHashes) at or below which two images are near-duplicates.
NEAR_DUPLICATE_DISTANCE = 4
#: Robust z-score (log focus, per class, median/MAD) below which an image is listed as blurry.
BLUR_Z = -3.5


@dataclass
class FileFacts:
    """What one file is. ``problem`` is None, ``"unreadable"`` or ``"truncated"``."""

    path: str
    sha256: str
    problem: str | None = None
    reason: str = ""
    mode: str = ""
    width: int = 0
    height: int = 0
    phash: int | None = None
    focus: float | None = None


def focus_score(gray: np.ndarray) -> float:
    """Variance of the Laplacian of an 8-bit grayscale image (low = out of focus)."""
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def analyse_file(path: Path, rel: str, focus: bool = True) -> FileFacts:
    """Facts about one file; decoding problems are recorded, never raised."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return FileFacts(rel, "", "unreadable", f"cannot be read ({exc.strerror or exc})")
    facts = FileFacts(rel, hashlib.sha256(data).hexdigest())
    try:
        rgb = decode_bytes(data, name=rel)
        with Image.open(io.BytesIO(data)) as header:
            facts.mode = header.mode
    except ImageError as exc:
        facts.problem = "truncated" if "truncated" in str(exc) else "unreadable"
        facts.reason = str(exc)
        return facts
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for garbage headers
        facts.problem, facts.reason = "unreadable", f"{rel}: not an image file ({type(exc).__name__})"
        return facts
    facts.width, facts.height = rgb.size
    facts.phash = int(str(imagehash.phash(rgb)), 16)
    if focus:
        facts.focus = focus_score(np.asarray(rgb.convert("L")))
    return facts


def analyse_files(
    root: Path, rel_paths: Sequence[str], focus: bool = True, workers: int = 2, description: str = "Reading images"
) -> list[FileFacts]:
    """Analyse files in order, with a progress bar; Pillow/OpenCV release the GIL so threads help."""
    def one(rel: str) -> FileFacts:
        return analyse_file(root / rel, rel, focus)

    if workers <= 1:
        return [one(rel) for rel in track(rel_paths, description, total=len(rel_paths))]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(track(pool.map(one, rel_paths, chunksize=1), description, total=len(rel_paths)))


class UnionFind:
    """Disjoint sets over 0..n-1 (path halving)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        return True

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return sorted(out.values(), key=lambda g: g[0])


def near_duplicate_pairs(hashes: Sequence[int], max_distance: int = NEAR_DUPLICATE_DISTANCE) -> list[tuple[int, int, int]]:
    """All (i, j, distance) with i < j and Hamming distance <= ``max_distance`` (numpy popcount)."""
    values = np.array([h & 0xFFFFFFFFFFFFFFFF for h in hashes], dtype=np.uint64)
    pairs = []
    for i in range(len(values) - 1):
        dist = np.bitwise_count(values[i + 1 :] ^ values[i])
        for j in np.flatnonzero(dist <= max_distance):
            pairs.append((i, i + 1 + int(j), int(dist[j])))
    return pairs


def duplicate_groups(facts: Sequence[FileFacts], max_distance: int = NEAR_DUPLICATE_DISTANCE) -> list[dict]:
    """Groups of exact (same sha256) or near (pHash distance) duplicates among readable files."""
    readable = [i for i, f in enumerate(facts) if f.problem is None]
    uf = UnionFind(len(readable))
    kinds: dict[tuple[int, int], int] = {}
    by_sha: dict[str, int] = {}
    for k, i in enumerate(readable):
        first = by_sha.setdefault(facts[i].sha256, k)
        if first != k:
            uf.union(first, k)
            kinds[(first, k)] = 0
    if max_distance >= 0:
        for a, b, d in near_duplicate_pairs([facts[i].phash or 0 for i in readable], max_distance):
            uf.union(a, b)
            kinds.setdefault((a, b), d)
    groups = []
    for members in uf.groups():
        if len(members) < 2:
            continue
        member_set = set(members)
        dists = [d for (a, b), d in kinds.items() if a in member_set and b in member_set]
        paths = [facts[readable[k]].path for k in members]
        exact = len({facts[readable[k]].sha256 for k in members}) == 1
        groups.append({"kind": "exact" if exact else "near", "max_distance": max(dists), "paths": paths})
    return groups


def blurry_images(
    facts: Sequence[FileFacts], labels: Sequence[str], z: float = BLUR_Z
) -> tuple[list[dict], dict[str, float]]:
    """Images whose log focus score is below median - |z| * 1.4826 * MAD of their class.

    Returns the blurry list (blurriest first) and each class's focus threshold.
    """
    by_class: dict[str, list[int]] = {}
    for i, (f, label) in enumerate(zip(facts, labels)):
        if f.focus is not None:
            by_class.setdefault(label, []).append(i)
    blurry, thresholds = [], {}
    for label in sorted(by_class):
        idx = by_class[label]
        logs = np.log1p(np.array([facts[i].focus for i in idx], dtype=np.float64))
        median = float(np.median(logs))
        mad = float(np.median(np.abs(logs - median))) * 1.4826
        cut = median - abs(z) * mad if mad > 0 else median * 0.5
        thresholds[label] = float(np.expm1(cut))
        for i, value in zip(idx, logs):
            if value < cut:
                robust_z = round(float((value - median) / mad), 2) if mad > 0 else None
                blurry.append({"path": facts[i].path, "label": label, "focus": round(facts[i].focus, 3), "robust_z": robust_z})
    blurry.sort(key=lambda b: (b["robust_z"] if b["robust_z"] is not None else float("-inf"), b["path"]))
    return blurry, thresholds

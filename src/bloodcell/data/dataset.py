"""Torch datasets: ``ManifestDataset`` over a manifest split, with an optional on-disk
memory-mapped cache of decoded, resized uint8 images (built once, atomically)."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from bloodcell.data.images import read_image
from bloodcell.data.locate import dataset_root
from bloodcell.data.manifest import Manifest, ManifestRow, read_manifest
from bloodcell.data.split import largest_remainder
from bloodcell.data.taxonomy import Taxonomy, get_taxonomy, labels_taxonomy
from bloodcell.errors import ConfigError, DataError, ImageError
from bloodcell.progress import track

CACHE_VERSION = 1


#: How an image becomes a square: "crop" (shorter side to the size, then a centre crop: the aspect ratio is
#: kept) or "squash" (both sides to the size: the aspect ratio is not kept, as Keras' and OpenCV's plain resize).
RESIZES = ("crop", "squash")


def check_resize(resize: str) -> str:
    """``resize`` if it is one of :data:`RESIZES`; ConfigError otherwise."""
    if resize not in RESIZES:
        raise ConfigError(f"unknown resize {resize!r}; choose one of {', '.join(RESIZES)}")
    return resize


def resize_square(image: Image.Image, size: int, resize: str = "crop") -> Image.Image:
    """``image`` as a ``size x size`` square: :func:`resize_center_crop` ("crop") or both sides resized ("squash")."""
    if check_resize(resize) == "crop":
        return resize_center_crop(image, size)
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """``image`` with its shorter side resized to ``size`` (bilinear, antialiased): the whole image, before
    :func:`resize_center_crop` crops it (which leaves an image already this size as it is)."""
    width, height = image.size
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    return image if new == image.size else image.resize(new, Image.Resampling.BILINEAR, reducing_gap=None)


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (bilinear, antialiased), then centre-crop ``size x size``."""
    image = resize_shorter_side(image, size)
    new = image.size
    if new == (size, size):  # a square: nothing to crop
        return image
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def stratified_subset(targets: list[int], limit: int, seed: int = 0) -> list[int]:
    """Deterministic indices: ``limit`` items spread over classes by largest remainder."""
    if limit >= len(targets):
        return list(range(len(targets)))
    classes = sorted(set(targets))
    by_class = {c: [i for i, t in enumerate(targets) if t == c] for c in classes}
    quotas = largest_remainder(limit, tuple(Fraction(len(by_class[c]), len(targets)) for c in classes))
    rng = np.random.default_rng(seed)
    chosen = []
    for c, k in zip(classes, quotas):
        members = by_class[c]
        chosen += [members[j] for j in sorted(rng.permutation(len(members))[:k].tolist())]
    return sorted(chosen)


def _to_chw(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class ManifestDataset(Dataset):
    """Images of one manifest split: ``ds[i] -> (tensor, class index)``.

    With ``transform=None`` the tensor is uint8 CHW. ``prepare`` (named ``prepare_name``) frames each
    decoded image before it is resized (the model's ``DataConfig.prepare``); ``resize`` says how it becomes
    a square (:data:`RESIZES`). ``cache_dir`` + ``cache_size`` store the decoded, prepared, resized split as a
    memory-mapped ``.npy`` (keyed by manifest hash, split, size, preparation, resize, taxonomy and limit).
    Rows without a label under the taxonomy are counted in ``unlabelled``; unreadable files are skipped
    and listed in ``skipped``.
    """

    def __init__(
        self,
        manifest: Manifest | str | Path,
        split: str | None,
        taxonomy: str | Taxonomy = "pbc8",
        root: str | Path | None = None,
        transform: Callable | None = None,
        cache_dir: str | Path | None = None,
        cache_size: int | None = None,
        limit: int | None = None,
        prepare: Callable[[Image.Image], Image.Image] | None = None,
        prepare_name: str = "none",
        resize: str = "crop",
    ) -> None:
        self.prepare, self.prepare_name, self.resize = prepare, prepare_name, check_resize(resize)
        self.manifest = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
        rows = self.manifest.rows_for(split)
        if taxonomy == "labels":
            taxonomy = labels_taxonomy(r.label for r in self.manifest.rows)
        self.taxonomy = get_taxonomy(taxonomy)
        if root is None and self.manifest.dataset == "folder":
            raise DataError("a 'folder' manifest needs root= (the folder it was made from)")
        self.root = Path(root) if root is not None else dataset_root(self.manifest.dataset)
        if cache_dir is not None and not cache_size:
            raise ConfigError("cache_dir needs cache_size (the side in pixels of the cached images)")
        if cache_size is not None and cache_size < 1:
            raise ConfigError(f"cache_size must be a positive number of pixels, got {cache_size}")
        self.split, self.transform, self.cache_size = split, transform, cache_size
        labelled = [(r, self.taxonomy.index_of(r)) for r in rows]
        self.unlabelled = sum(1 for _, t in labelled if t is None)
        labelled = [(r, t) for r, t in labelled if t is not None]
        if not labelled:
            raise DataError(f"split {split!r} of {self.manifest.path or 'the manifest'} has no images labelled under {self.taxonomy.name}")
        if limit is not None:
            if limit < 1:
                raise ConfigError(f"limit must be at least 1, got {limit}")
            keep = stratified_subset([t for _, t in labelled], limit)
            labelled = [labelled[i] for i in keep]
        self.limit = limit
        self.skipped: list[tuple[str, str]] = []
        self._array: np.ndarray | None = None
        if cache_dir is not None:
            self._rows, self.targets = self._load_or_build_cache(Path(cache_dir), labelled)
        else:
            self._rows, self.targets = self._check_headers(labelled)

    @property
    def class_names(self) -> list[str]:
        return list(self.taxonomy.class_names)

    @property
    def paths(self) -> list[Path]:
        return [self.root / r.path for r in self._rows]

    def __len__(self) -> int:
        return len(self._rows)

    def _check_headers(self, labelled: list[tuple[ManifestRow, int]]) -> tuple[list[ManifestRow], list[int]]:
        """Skip files that are missing or whose header is not an image (cheap; no full decode)."""
        rows, targets = [], []
        for row, target in labelled:
            path = self.root / row.path
            try:
                with Image.open(path) as image:
                    image.size  # noqa: B018 - header parsed by open
            except FileNotFoundError:
                self.skipped.append((row.path, "file not found"))
                continue
            except Exception as exc:  # noqa: BLE001 - any Pillow failure means "not an image"
                self.skipped.append((row.path, f"not an image file ({type(exc).__name__})"))
                continue
            rows.append(row)
            targets.append(target)
        return rows, targets

    def _decode(self, row: ManifestRow) -> Image.Image:
        image = read_image(self.root / row.path)
        image = self.prepare(image) if self.prepare is not None else image
        return resize_square(image, self.cache_size, self.resize) if self.cache_size else image

    def cache_key(self) -> str:
        parts = [str(CACHE_VERSION), self.manifest.sha256, str(self.split), str(self.cache_size), self.taxonomy.name,
                 str(self.limit)] + ([self.prepare_name] if self.prepare is not None else [])
        if self.resize != "crop":  # the default adds nothing, so caches built before the option stay valid
            parts.append(f"resize={self.resize}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]

    def _load_or_build_cache(self, cache_dir: Path, labelled: list[tuple[ManifestRow, int]]) -> tuple[list[ManifestRow], list[int]]:
        key = self.cache_key()
        array_path, index_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
        if not (array_path.is_file() and index_path.is_file()):
            self._build_cache(cache_dir, array_path, index_path, labelled)
        index = json.loads(index_path.read_text(encoding="utf-8"))
        by_path = {row.path: (row, t) for row, t in labelled}
        self.skipped = [tuple(s) for s in index["skipped"]]
        self._array = np.load(array_path, mmap_mode="r")
        if len(self._array) != len(index["paths"]):
            raise DataError(f"cache {array_path} does not match its index; delete {cache_dir} and retry")
        pairs = [by_path[p] for p in index["paths"]]
        self.cache_path = array_path
        return [row for row, _ in pairs], [t for _, t in pairs]

    def _build_cache(self, cache_dir: Path, array_path: Path, index_path: Path, labelled: list[tuple[ManifestRow, int]]) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        size, tag = self.cache_size, f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp = cache_dir / f".{array_path.name}.{tag}.tmp"
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(labelled), size, size, 3))
        paths, skipped = [], []
        for row, _ in track(labelled, f"Caching {self.split} images at {size}px", total=len(labelled)):
            try:
                array[len(paths)] = np.asarray(self._decode(row), dtype=np.uint8)
            except ImageError as exc:
                skipped.append((row.path, str(exc)))
                continue
            paths.append(row.path)
        array.flush()
        if len(paths) < len(labelled):
            compact_tmp = cache_dir / f".{array_path.name}.{tag}.compact.tmp"
            compact = np.lib.format.open_memmap(compact_tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
            compact[:] = array[: len(paths)]
            compact.flush()
            del compact
            os.replace(compact_tmp, tmp)
        del array
        index_tmp = cache_dir / f".{index_path.name}.{tag}.tmp"
        index_tmp.write_text(json.dumps({"paths": paths, "skipped": skipped}), encoding="utf-8")
        os.replace(tmp, array_path)
        os.replace(index_tmp, index_path)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self._array is not None:
            tensor = torch.from_numpy(np.array(self._array[i])).permute(2, 0, 1).contiguous()
        else:
            tensor = _to_chw(self._decode(self._rows[i]))
        if self.transform is not None:
            tensor = self.transform(tensor)
        return tensor, self.targets[i]

"""A trained CenterNet run on smear photos of any size and magnification.

Checkpoints trained at a fixed red-cell size (``cell_size_px`` in their ``detector`` metadata)
see every photo at that scale: the photo is resized so that its red cells are
``cell_size_px`` wide. The scale comes from ``--cell-size-px`` (the typical red-cell diameter in
the photo's pixels) when the user knows it, else from the photo itself
(:meth:`LearnedDetector.estimate_cell_size`): the detector probes a window of the photo at
several assumed red-cell sizes, keeps the size at which it finds cells most confidently, and
reads the red cells' median diameter there. A resized photo larger than :data:`TILE` is cut
into overlapping tiles; each cell is kept from the one tile whose core (the tile minus half of
each overlap) holds its centre, so cells on tile borders are counted once.

Cells cut by the photo's border are detected and counted like the others: every visible cell
counts, as in TXL-PBC's labels. Older checkpoints (no ``cell_size_px``) resize the photo so that
its longer side is ``input_size``, as they were trained.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bloodcell.checkpoint import load_checkpoint, read_checkpoint_meta
from bloodcell.data.boxes import SMEAR_LABELS, Box
from bloodcell.data.images import to_rgb
from bloodcell.errors import CheckpointError, ConfigError
from bloodcell.models import get_model_entry
from bloodcell.models.centernet import MULTIPLE, input_shape, to_input
from bloodcell.weights import resolve

#: Side of the square tiles a large resized photo is cut into, and their overlap (resized pixels).
TILE = 768
OVERLAP = 128
#: Large downscales first reduce by an integer factor down to this many times the target size (Pillow's
#: ``reducing_gap``: several times faster on a phone photo, indistinguishable at 3).
REDUCING_GAP = 3.0
#: Side of the window the scale probes look at (resized pixels).
PROBE = 192
#: Red-cell diameters tried, as fractions of the photo's shorter side, and the usual one (tried first).
SIZE_RANGE = (1 / 100, 1 / 2.5)
USUAL_SIZE = 1 / 5
#: Score above which a probe's detection counts as found.
PROBE_SCORE = 0.3
#: A white cell's typical diameter in red-cell diameters (TXL-PBC's four sources: 1.9-2.1).
WBC_TO_RBC = 2.1


class DetectorSettings(BaseModel):
    """The ``detector`` section of a detector checkpoint, validated."""

    model_config = ConfigDict(extra="allow")
    thresholds: dict[str, float]
    input_size: int = Field(ge=MULTIPLE, le=2048)
    cell_size_px: int | None = Field(default=None, ge=8, le=256)

    def ordered_thresholds(self) -> list[float]:
        missing = [label for label in SMEAR_LABELS if label not in self.thresholds]
        if missing or not all(0.0 <= self.thresholds[label] <= 1.0 for label in SMEAR_LABELS):
            raise ValueError(f"thresholds must give a probability for each of {', '.join(SMEAR_LABELS)}")
        return [float(self.thresholds[label]) for label in SMEAR_LABELS]


@dataclass(frozen=True)
class CellSize:
    """A photo's typical red-cell diameter in its own pixels, and how it was found."""

    pixels: float
    method: str  # "given" | "red cells" | "white cells" | "default"


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(start, end, core start, core end) of overlapping tiles covering ``length``; cores partition it.

    As few tiles as fit ``tile`` with at least ``overlap`` between neighbours, all of one size (a multiple
    of :data:`MULTIPLE`, the network's padding) spread evenly: less padding and overlap to compute than
    fixed-size tiles. A length that fits one tile is one tile of that length.
    """
    if length <= tile:
        return [(0, length, 0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    size = min(tile, math.ceil((length + (count - 1) * overlap) / count / MULTIPLE) * MULTIPLE)
    starts = [round(i * (length - size) / (count - 1)) for i in range(count)]
    spans = []
    for i, start in enumerate(starts):
        core_start = 0 if i == 0 else (starts[i - 1] + size + start) // 2
        core_end = length if i == len(starts) - 1 else (start + size + starts[i + 1]) // 2
        spans.append((start, start + size, core_start, core_end))
    return spans


class LearnedDetector:
    """``detector(image, cell_size_px=None) -> list[Box]`` in the photo's pixels."""

    def __init__(self, model: torch.nn.Module, settings: DetectorSettings, mean: Sequence[float],
                 std: Sequence[float], source: str | None = None):
        # in place: channels_last halves a 768-px tile's time on this project's 2-core CPU (0.63 -> 0.33 s)
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.settings = settings
        self.thresholds = settings.ordered_thresholds()
        self.mean, self.std = tuple(mean), tuple(std)
        self.source = source

    def _detect_array(self, array: np.ndarray, thresholds: Sequence[float]) -> list[Box]:
        return self.model.detect(to_input(array, self.mean, self.std), thresholds, (array.shape[1], array.shape[0]))

    def detect_resized(self, resized: Image.Image, thresholds: Sequence[float] | None = None) -> list[Box]:
        """Boxes on an already resized photo, tile by tile; each cell from the tile whose core holds its centre."""
        array = np.asarray(to_rgb(resized))
        thresholds = self.thresholds if thresholds is None else thresholds
        found = []
        for y0, y1, cy0, cy1 in tile_spans(array.shape[0], TILE, OVERLAP):
            for x0, x1, cx0, cx1 in tile_spans(array.shape[1], TILE, OVERLAP):
                for box in self._detect_array(np.ascontiguousarray(array[y0:y1, x0:x1]), thresholds):
                    x, y = box.centre
                    if cx0 <= x + x0 < cx1 and cy0 <= y + y0 < cy1:
                        found.append(Box(box.label, box.x1 + x0, box.y1 + y0, box.x2 + x0, box.y2 + y0, box.score))
        return found

    def scale_for(self, image: Image.Image, cell_size: CellSize | None) -> float:
        """Resize factor from photo to network pixels."""
        if self.settings.cell_size_px is None:
            return input_shape(image.width, image.height, self.settings.input_size)[0]
        return self.settings.cell_size_px / cell_size.pixels

    def __call__(self, image: Image.Image, cell_size_px: float | None = None) -> list[Box]:
        return self.detect(image, cell_size_px)[0]

    def detect(self, image: Image.Image, cell_size_px: float | None = None) -> tuple[list[Box], CellSize | None]:
        """Boxes in photo pixels and the red-cell size used (None for a longer-side checkpoint).

        Without ``cell_size_px`` a photo that fits one tile at the usual red-cell size (a fifth of its
        shorter side) is first read whole at that size: when its red cells measure about that, this
        pass is the answer (one network pass for most photos); otherwise the photo is read again at
        the measured size, or the size is searched for (:meth:`estimate_cell_size`).
        """
        if self.settings.cell_size_px is None:
            return self._at_scale(image, self.scale_for(image, None)), None
        if cell_size_px:
            size = CellSize(float(cell_size_px), "given")
            return self._at_scale(image, self.scale_for(image, size)), size
        usual = CellSize(min(image.size) * USUAL_SIZE, "red cells")
        scale = self.scale_for(image, usual)
        if max(image.size) * scale <= TILE:
            boxes = self._at_scale(image, scale)
            measured = _median_size([b.scaled(scale) for b in boxes if _inside(b, image.size)], scale)
            if measured is not None and measured.method == "red cells":
                if 0.9 < measured.pixels / usual.pixels < 1.11:
                    return boxes, measured
                if 0.7 < measured.pixels / usual.pixels < 1.45:
                    return self._at_scale(image, self.scale_for(image, measured)), measured
        size = self.estimate_cell_size(image)
        return self._at_scale(image, self.scale_for(image, size)), size

    def _at_scale(self, image: Image.Image, scale: float) -> list[Box]:
        """Boxes of the photo read at ``scale`` (network pixels per photo pixel), in photo pixels."""
        width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        resized = to_rgb(image).resize((width, height), Image.BILINEAR, reducing_gap=REDUCING_GAP)
        return [_clip(b.scaled(1 / scale), image.width, image.height) for b in self.detect_resized(resized)]

    def _probe(self, image: Image.Image, cell_px: float) -> tuple[float, list[Box], float]:
        """Detections in a centred window of the photo seen as if its red cells were ``cell_px`` wide:
        (confidence, boxes inside the window (not cut by its border), in window pixels, window scale)."""
        scale = self.settings.cell_size_px / cell_px
        side = PROBE / scale
        cx, cy = image.width / 2, image.height / 2
        box = (max(0, round(cx - side / 2)), max(0, round(cy - side / 2)),
               min(image.width, round(cx + side / 2)), min(image.height, round(cy + side / 2)))
        window = image.crop(box)
        resized = window.resize((max(1, round(window.width * scale)), max(1, round(window.height * scale))),
                                Image.BILINEAR, reducing_gap=REDUCING_GAP)
        boxes = self._detect_array(np.asarray(to_rgb(resized)), [PROBE_SCORE] * len(SMEAR_LABELS))
        confidence = sum(b.score for b in boxes if b.label != "Platelets")
        inside = [b for b in boxes if b.x1 > 1 and b.y1 > 1 and b.x2 < resized.width - 1 and b.y2 < resized.height - 1]
        return confidence, inside, scale

    def estimate_cell_size(self, image: Image.Image) -> CellSize:
        """The photo's typical red-cell diameter: assumed sizes a factor 2 apart are probed, the usual one
        (a fifth of the shorter side) first, until one shows at least 3 red cells at about the assumed size."""
        shorter = min(image.size)
        usual = shorter * USUAL_SIZE
        low, high = max(4.0, shorter * SIZE_RANGE[0]), max(4.0, shorter * SIZE_RANGE[1])
        steps = range(math.floor(math.log2(low / usual)), math.ceil(math.log2(high / usual)) + 1)
        candidates = sorted((usual * 2.0 ** k for k in steps), key=lambda px: abs(math.log(px / usual)))
        best: tuple[float, CellSize | None] = (-1.0, None)
        for px in candidates:
            confidence, boxes, scale = self._probe(image, px)
            size = _median_size(boxes, scale)
            if size is not None and size.method == "red cells" and 0.7 < size.pixels / px < 1.45:
                if not 0.9 < size.pixels / px < 1.11:  # measured away from the trained size: measure again there
                    size = _median_size(*self._probe(image, size.pixels)[1:]) or size
                return size
            if confidence > best[0]:
                best = (confidence, size)
        return best[1] or CellSize(usual, "default")


def _median_size(boxes: list[Box], scale: float) -> CellSize | None:
    """Median red-cell diameter (photo pixels) of probe boxes; from the white cells when no red cell was found."""
    for label, factor, method in (("RBC", 1.0, "red cells"), ("WBC", 1 / WBC_TO_RBC, "white cells")):
        sizes = [math.sqrt(b.width * b.height) for b in boxes if b.label == label]
        if len(sizes) >= (3 if label == "RBC" else 1):
            return CellSize(float(np.median(sizes)) * factor / scale, method)
    return None


def _inside(box: Box, size: tuple[int, int]) -> bool:
    """True for a box not cut by the photo's border."""
    return box.x1 > 1 and box.y1 > 1 and box.x2 < size[0] - 1 and box.y2 < size[1] - 1


def _clip(box: Box, width: int, height: int) -> Box:
    return Box(box.label, max(0.0, box.x1), max(0.0, box.y1), min(float(width), box.x2), min(float(height), box.y2),
               box.score, box.count)


def detector_settings(meta: dict, path: str | Path) -> DetectorSettings:
    """The validated ``detector`` section of a checkpoint's metadata; CheckpointError when it is no detector."""
    try:
        kind = get_model_entry(str(meta.get("model_name"))).kind
    except ConfigError:
        kind = None
    if kind != "detector" or not isinstance(meta.get("detector"), dict):
        raise CheckpointError(f"{path}: not a smear detector checkpoint (model {meta.get('model_name')!r}); "
                              "train one with 'bloodcell detector train'")
    try:
        settings = DetectorSettings.model_validate(meta["detector"])
        settings.ordered_thresholds()
    except (ValidationError, ValueError) as exc:
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise CheckpointError(f"{path}: invalid detector metadata ({detail})") from None
    return settings


def read_detector(spec: str | Path) -> tuple[Path, dict, DetectorSettings]:
    """A detector checkpoint's file, metadata and validated settings; CheckpointError for anything else."""
    path = resolve(spec, default="smear-detector")
    if path.suffix == ".onnx":
        raise CheckpointError(f"{path.name}: an exported ONNX model, not a smear detector checkpoint; the bundled "
                              "detector is smear-detector, or train one with 'bloodcell detector train'")
    meta = read_checkpoint_meta(path)
    return path, meta, detector_settings(meta, path)


def load_detector(spec: str | Path) -> LearnedDetector:
    """Load a detector checkpoint (the bundled ``smear-detector`` or a file written by ``bloodcell detector train``)."""
    path, _, settings = read_detector(spec)
    checkpoint = load_checkpoint(path)
    config = checkpoint.data_config
    return LearnedDetector(checkpoint.model, settings, config.mean, config.std, str(checkpoint.path))


def check_cell_size(cell_size_px: float | None) -> None:
    """Refuse a red-cell diameter outside 4-2000 pixels in one sentence."""
    if cell_size_px is not None and not 4 <= cell_size_px <= 2000:
        raise ConfigError(f"--cell-size-px is the typical red-cell diameter in pixels (4-2000), got {cell_size_px:g}")

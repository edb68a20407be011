"""The CLI's fixed choices as enums, so that help lists them and shell completion offers them."""

from __future__ import annotations

from enum import Enum


class Engine(str, Enum):
    torch = "torch"
    onnx = "onnx"


class Split(str, Enum):
    test = "test"
    val = "val"


class Taxonomy(str, Enum):
    pbc8 = "pbc8"
    pbc11 = "pbc11"
    labels = "labels"


class Augment(str, Enum):
    none = "none"
    flips = "flips"
    literature = "literature"
    strong = "strong"
    balanced = "balanced"
    multilab = "multilab"


class ExportFormat(str, Enum):
    onnx = "onnx"


class CropSet(str, Enum):
    bccd = "bccd"
    txl = "txl"

"""Colour statistics of other labs' white cells, for the ``multilab`` augmentation's style transfer.

The white cells of TXL-PBC's fields (untyped boxes) from the chosen sources are framed as the
classifier frames cells and summarised by :func:`bloodcell.transforms.lab_style`. Fields that show
a held-out BCCD smear (or a copy of one, per the detector manifest's ``group``) are left out, so no
colour of a held-out BCCD image reaches training. TXL's ``pbc`` fields are PBC images and are not
matched against PBC's test split: a bank with the ``pbc`` source may hold colour statistics (six
numbers per cell) of PBC test images; models evaluated on PBC's test split should use a bank
without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bloodcell.data.images import read_image
from bloodcell.errors import ConfigError, DataError, ImageError
from bloodcell.framing import crop_around, frame_cell
from bloodcell.progress import track
from bloodcell.resources import style_bank_path
from bloodcell.transforms import lab_style
from bloodcell.workflows.cells import txl_fields_outside_bccd_test
from bloodcell.writing import write_text

FORMAT = "bloodcell-style-bank/1"
#: Context of the crop taken around a white-cell box before it is framed.
BOX_CONTEXT = 2.0


def build_style_bank(sources: list[str], out: str | Path, detector_manifest: str | Path, data_root=None,
                     size: int = 128, command: str | None = None) -> dict[str, Any]:
    """Write the style bank of the white cells of TXL ``sources`` to ``out`` (JSON); returns it."""
    if not sources:
        raise ConfigError("name at least one TXL source for the style bank")
    fields = txl_fields_outside_bccd_test(sources, detector_manifest, data_root)
    styles = []
    for field in track(fields, "white-cell colours", unit="fields"):
        try:
            photo = read_image(field.path)
        except ImageError:
            continue
        for box in (b for b in field.annotation.boxes if b.label == "WBC"):
            cell = frame_cell(crop_around(photo, box.xyxy, BOX_CONTEXT)).resize((size, size))
            styles.append([round(v, 5) for v in lab_style(np.asarray(cell))])
    if not styles:
        raise DataError(f"no white cell found in the TXL fields of {', '.join(sources)}")
    bank = {"format": FORMAT, "command": command, "sources": sorted(sources), "cells": len(styles), "styles": styles}
    write_text(out, json.dumps(bank) + "\n")
    return bank


def read_style_bank(path: str | Path) -> np.ndarray:
    """The (K, 6) style rows of a bank file; DataError when it is not one."""
    try:
        bank = json.loads(style_bank_path(path).read_text())
        styles = np.asarray(bank["styles"], dtype=np.float32)
        if bank.get("format") != FORMAT or styles.ndim != 2 or styles.shape[1] != 6 or not np.isfinite(styles).all():
            raise ValueError("not a style bank")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a readable style bank ({exc})") from None
    return styles

"""Calibrate and check the guard's is-it-a-cell questions: cell presence and the single-cell layout.

Calibrated only on sets no report uses (``new_lab_sets.CALIBRATION_SETS``): PBC's validation cells (every type,
platelets and erythroblasts included), Raabin's cells of TXL-PBC's training fields that the reported Raabin set does
not hold, and crops of TXL-PBC's training fields holding no white cell or platelet.

- Presence (``bloodcell.inference.cell_presence.PRESENCE_CONTRAST``): the 99th percentile of the crops' contrast,
  rounded up to 0.01 (as low as the red cells allow, so that weaker-stained labs' cells still count).
- Layout (``bloodcell.framing.SINGLE_CELL_SPAN`` / ``SINGLE_CELL_OFFSET``): the calibration cells' smallest span
  (of those alone in their image: no other white-cell-sized group wholly inside it) rounded down and largest offset
  rounded up to 0.01. Per set, the share of images showing several such groups wholly (a neighbour cut by the
  edge is not one) is given too.

Crops a person saw a platelet or white cell in (``audits/smear_crops_without_cell.csv``) are taken out of the crop
sets and reported apart. Two second features that were tried against the crops' real misses (Raabin's dark purple red
cells), each set to keep 99.5 % of the calibration cells that show a cell, are measured and not used
(:func:`second_features`): the stain contrast at the single most stained pixel (``peak``), and how far it lies above
the contrast in use (``peakedness``: a red cell is evenly stained, a nucleus or platelet has a core).

The JSON gives the values proposed and in use, the calibration sets' rates at those in use (per PBC type), the red
cells of TXL-PBC's training fields per source (why they do not tell a whole smear photo with one centred white cell
from a single-cell crop: :func:`red_cells_by_source`) and, for reference only, the reported sets' rates
(``benchmarks/new_lab.py`` reports those).

    python benchmarks/cell_presence.py [--model pbc8] [--crop-audit AUDIT.csv] [--out RESULT.json]
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from new_lab_sets import (CALIBRATION_SETS, CROP_AUDIT, LAB_SETS, NON_CELL_SETS, load_set,  # noqa: E402
                          read_crop_audit, split_crop_audit)


def quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"p{q}": round(float(np.percentile(values, q)), 3) for q in (0, 1, 5, 50, 95, 99, 100)}


def layout(cell_search, geometry: np.ndarray) -> tuple[float, float] | None:
    """(span, offset) of a cached image's cell search (box as fractions, count, size; ``new_lab_sets``)."""
    x1, y1, x2, y2, count, width, height = geometry
    box = None if np.isnan(x1) else (x1 * width, y1 * height, x2 * width, y2 * height)
    return cell_search(box, int(count)).layout((int(width), int(height)))


def rates(data: dict, threshold: float, contrast_of) -> dict:
    """A set's presence contrast, the share showing a cell at ``threshold`` (per type where labelled) and the share
    laid out as a single-cell image."""
    from new_lab import single_cell

    contrast, single = contrast_of(data["pixels"]), single_cell(data["geometry"])
    row = {"images": len(contrast), "contrast": quantiles(contrast),
           "present": round(float((contrast >= threshold).mean()), 4), "single_cell": round(float(single.mean()), 4),
           "several_whole_groups": round(float((data["geometry"][:, 4] > 1).mean()), 4)}
    if data["labels"].any():
        row["by_type"] = {t: {"present": round(float((contrast[data["labels"] == t] >= threshold).mean()), 4),
                              "single_cell": round(float(single[data["labels"] == t].mean()), 4)}
                          for t in sorted(set(data["labels"].tolist()))}
    return row


def peak_contrast(pixels: np.ndarray) -> np.ndarray:
    """The presence contrast at the single most stained pixel of the image's middle."""
    from unittest import mock

    from bloodcell.inference import cell_presence

    with mock.patch.object(cell_presence, "TOP_SHARE", 0.0):
        return cell_presence.presence_contrast(pixels)


def second_features(calibration: dict[str, dict], reported: dict[str, dict], threshold: float) -> dict:
    """Per candidate second feature: the value keeping 99.5 % of the calibration cells that pass the presence test
    (0.5th percentile, rounded down to 0.01), and per set, of the images passing the presence test, how many it
    would turn away (per PBC type where labelled)."""
    from bloodcell.inference.cell_presence import presence_contrast

    def values(data):
        contrast, peak = presence_contrast(data["pixels"]), peak_contrast(data["pixels"])
        return contrast >= threshold, {"peak": peak, "peakedness": peak - contrast}

    scored = {n: values(d) for n, d in {**calibration, **reported}.items()}
    cells = [n for n in calibration if "crop" not in n]
    out = {}
    for feature in ("peak", "peakedness"):
        pooled = np.concatenate([scored[n][1][feature][scored[n][0]] for n in cells])
        limit = math.floor(float(np.percentile(pooled, 0.5)) * 100) / 100
        row: dict = {"at_least": limit}
        for name, (present, value) in scored.items():
            data = {**calibration, **reported}[name]
            turned = present & (value[feature] < limit)
            row[name] = {"present": int(present.sum()), "turned_away": int(turned.sum())}
            if name in calibration or name.startswith("smear_crop"):
                row[name]["ids_turned_away"] = [str(i) for i in data["ids"][turned]]
            if data["labels"].any():
                row[name]["by_type"] = {t: int(turned[data["labels"] == t].sum()) for t in sorted(set(data["labels"]))}
        out[feature] = row
    return out


def apart(sets: dict[str, dict], audit: dict[str, str]) -> dict[str, dict]:
    """The crop sets without the crops ``audit`` saw a cell in; those crops as ``<set>_showing_a_cell``."""
    out = {}
    for name, data in sets.items():
        if name.startswith("smear_crop"):
            data, shown = split_crop_audit(data, audit)
            out[name.replace("without_cell", "showing_a_cell")] = shown
        out[name] = data
    return out


def separation(rows: dict[str, list[tuple[float, int, float]]]) -> dict:
    """Per red-cell measure that grows with the field shown (whole red cells, longer side in red-cell sides): the
    value keeping 99.5 % of PBC's and Raabin's fields (single-cell images' sources) and the share of BCCD's and
    Kaggle-BCD's fields (whole smear photos) above it, with every red cell boxed (the best a red-cell count could
    do)."""
    out = {}
    for column, name in ((1, "whole_red_cells"), (2, "longer_side_in_red_cell_sides")):
        kept = np.concatenate([np.array(rows[s])[:, column] for s in ("pbc", "raabin") if s in rows])
        limit = float(np.percentile(kept, 99.5))
        out[name] = {"keeping_99_5_of_pbc_and_raabin": round(limit, 3),
                     **{f"{s}_fields_above": round(float((np.array(rows[s])[:, column] > limit).mean()), 4)
                        for s in ("bccd", "kaggle-bcd") if s in rows}}
    return out


def red_cells_by_source(data_root) -> dict:
    """Why red cells do not tell a whole smear photo from a single-cell crop (nothing is set on it): per source of
    TXL-PBC's training fields whose white cell nearest the centre lies within the single-cell offset, from the boxes
    (every red cell boxed, cut ones too): a red cell's side over the image's shorter side, the red cells wholly inside
    the image, and the longer side in red-cell sides."""
    from PIL import Image

    from bloodcell.data.smears import smear_images
    from bloodcell.framing import SINGLE_CELL_OFFSET

    rows: dict[str, list[tuple[float, int, float]]] = {}
    for field in smear_images("txl", data_root, subset="train"):
        width, height = Image.open(field.path).size
        white = [b for b in field.annotation.boxes if b.label == "WBC"]
        red = [b for b in field.annotation.boxes if b.label == "RBC"]
        offsets = [math.hypot((b.x1 + b.x2 - width) / 2, (b.y1 + b.y2 - height) / 2) for b in white]
        if not red or not offsets or min(offsets) > SINGLE_CELL_OFFSET * math.hypot(width, height):
            continue
        side = float(np.median([max(b.width, b.height) for b in red]))
        whole = sum(b.x1 > 1 and b.y1 > 1 and b.x2 < width - 1 and b.y2 < height - 1 for b in red)
        rows.setdefault(field.source, []).append((side / min(width, height), whole, max(width, height) / side))
    return {**{source: {"fields": len(values), "red_cell_side_over_shorter_side": quantiles(np.array(values)[:, 0]),
                        "whole_red_cells": quantiles(np.array(values)[:, 1]),
                        "longer_side_in_red_cell_sides": quantiles(np.array(values)[:, 2])}
               for source, values in sorted(rows.items())}, "separation": separation(rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pbc8", help="bundled name or .safetensors (its input staging)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--crop-audit", default=str(CROP_AUDIT),
                        help="review of the smear crops without a cell: crops it saw a cell in are reported apart")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cell_presence.json"))
    args = parser.parse_args(argv)
    from bloodcell.errors import DataError

    try:
        audit = read_crop_audit(args.crop_audit)
    except DataError as exc:
        print(exc, file=sys.stderr)
        return 1
    import torch

    from bloodcell.framing import SINGLE_CELL_OFFSET, SINGLE_CELL_SPAN, CellSearch
    from bloodcell.inference.cell_presence import PRESENCE_CONTRAST, presence_contrast
    from bloodcell.inference.predictor import load
    from bloodcell.provenance import file_sha256, git_commit, machine, now
    from bloodcell.weights import resolve

    torch.set_num_threads(args.threads)
    classifier = load(args.model)
    sha = file_sha256(resolve(args.model))
    sets = apart({n: load_set(classifier, sha, n, args.data_root, args.limit) for n in CALIBRATION_SETS}, audit)
    cell_sets, crops = CALIBRATION_SETS[:-1], CALIBRATION_SETS[-1]
    proposed = math.ceil(float(np.percentile(presence_contrast(sets[crops]["pixels"]), 99)) * 100) / 100
    layouts = np.array([lay for n in cell_sets for lay in map(lambda g: layout(CellSearch, g), sets[n]["geometry"])
                        if lay is not None])
    alone = np.array([layout(CellSearch, g)[0] for n in cell_sets for g in sets[n]["geometry"]
                      if g[4] <= 1 and not np.isnan(g[0])])
    calibration = {n: rates(data, PRESENCE_CONTRAST, presence_contrast) for n, data in sets.items() if len(data["ids"])}
    reported_sets = apart({n: load_set(classifier, sha, n, args.data_root, args.limit)
                           for n in (*LAB_SETS, *NON_CELL_SETS)}, audit)
    reported = {n: rates(data, PRESENCE_CONTRAST, presence_contrast) for n, data in reported_sets.items()
                if len(data["ids"])}
    given = sys.argv[1:] if argv is None else argv
    result = {"command": shlex.join(["python", "benchmarks/cell_presence.py", *given]),
              "commit": git_commit(), "date": now(), "machine": machine(), "model": Path(str(args.model)).name,
              "presence_contrast": {"in_use": PRESENCE_CONTRAST, "proposed": proposed},
              "single_cell_span_min": {"in_use": SINGLE_CELL_SPAN[0],
                                       "proposed": math.floor(float(alone.min()) * 100) / 100},
              "single_cell_offset": {"in_use": SINGLE_CELL_OFFSET,
                                     "proposed": math.ceil(float(layouts[:, 1].max()) * 100) / 100},
              "calibration": calibration,
              "second_features_not_used": second_features({n: d for n, d in sets.items() if len(d["ids"])},
                                                          {n: d for n, d in reported_sets.items() if len(d["ids"])},
                                                          PRESENCE_CONTRAST),
              "red_cells_by_source_txl_train": red_cells_by_source(args.data_root),
              "reported_sets_for_reference": reported}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("presence_contrast", "single_cell_span_min", "single_cell_offset")} |
                     {n: (r["present"], r["single_cell"]) for n, r in {**calibration, **reported}.items()}, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

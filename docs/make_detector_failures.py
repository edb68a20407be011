"""Redraw docs/detector-failures.png: what the bundled smear detector gets wrong, drawn on TXL-PBC val fields.

Counts every TXL-PBC val field (all four sources) with the bundled detector as ``bloodcell count`` does,
matches its boxes to the complete labels per class (IoU >= 0.5, greedy) and draws the chosen failures
(``PANELS``: a field, a class and a window of it) in a grid: labelled cells the detector missed in
yellow, boxes it drew that match no labelled cell in magenta, matched cells thin green (labelled
outline) under the detector's box. Each panel says the field's counts of that class (labelled /
counted). TXL val chose the detector's epoch and thresholds, so these fields flatter it; the failures
shown are the kinds a new lab meets more often (README: leave-one-source-out).

    python docs/make_detector_failures.py                      # the figure
    python docs/make_detector_failures.py --candidates DIR     # the worst fields of each kind, to choose from

Needs TXL-PBC (``$BLOODCELL_DATA``); 247 fields take about a minute on one core.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from bloodcell.data.images import read_image
from bloodcell.data.smears import smear_images
from bloodcell.metrics.detection import iou
from bloodcell.smear.counting import count_image
from bloodcell.writing import save_image

OUTPUT = Path(__file__).with_name("detector-failures.png")
PANEL, CAPTION = 300, 34
MISSED, FALSE, MATCHED = (255, 215, 0), (255, 0, 200), (0, 200, 80)
#: The failures drawn: (TXL val field, class, window x, y, side in the field's pixels, what it shows). Chosen after
#: looking at every candidate ``--candidates`` drew.
PANELS = [
    ("f92c6c01-26a6-571d-81b1-0e2e2d50a1a9", "Platelets", 200, 0, 160, "two touching platelets missed"),
    ("28b6be45-d490-572e-8eff-255d3c5cf465", "Platelets", 430, 20, 200, "pale platelets by a red cell missed"),
    ("03f5b89f-538f-5c2a-b2c6-3024e2cf9c5d", "Platelets", 40, 140, 200, "platelet on a white cell missed"),
    ("8728f46e-4e3e-519d-9ba9-b7c59fc5c388", "RBC", 360, 100, 280, "overlapping red cells split"),
    ("1d20f57c-f0f3-5501-8ba1-d0ae0c552c81", "RBC", 0, 230, 250, "boxes between overlapping red cells"),
    ("62f0690f-a678-5285-8451-b59e8a7bba9a", "WBC", 60, 30, 260, "large pale white cell boxed twice"),
]
#: Per kind of failure: the class and how a field is ranked (most missed or most false boxes of that class).
KINDS = {"platelets-missed": ("Platelets", "missed"), "rbc-false": ("RBC", "false"), "rbc-missed": ("RBC", "missed"),
         "wbc-false": ("WBC", "false"), "wbc-missed": ("WBC", "missed")}


def matched(detections: list[dict], truths: list[tuple], label: str) -> tuple[list, list, list]:
    """(matched detections, detections matching no labelled cell, labelled cells no detection matches) of ``label``."""
    boxes = sorted((d for d in detections if d["label"] == label), key=lambda d: -(d["score"] or 0))
    labelled = [t[1:] for t in truths if t[0] == label]
    used, hits, false = [False] * len(labelled), [], []
    for box in boxes:
        xyxy = (box["x1"], box["y1"], box["x2"], box["y2"])
        overlaps = [0.0 if used[i] else iou(xyxy, t) for i, t in enumerate(labelled)]
        best = max(range(len(labelled)), key=overlaps.__getitem__, default=-1)
        if best >= 0 and overlaps[best] >= 0.5:
            used[best] = True
            hits.append((xyxy, labelled[best]))
        else:
            false.append(xyxy)
    return hits, false, [t for t, u in zip(labelled, used) if not u]


def count_val(data_root: str | None) -> list[dict]:
    """Every TXL-PBC val field counted: its id, source, path, labelled boxes and detected boxes."""
    fields = []
    for photo in smear_images("txl", data_root, "val"):
        entry = count_image(read_image(photo.path), None, "learned", None)
        fields.append({"id": photo.image_id, "source": photo.source, "path": photo.path, "boxes": entry["boxes"],
                       "truths": [(b.label, b.x1, b.y1, b.x2, b.y2) for b in photo.annotation.boxes]})
    return fields


def drawn(field: dict, label: str) -> Image.Image:
    """The whole field with the failures of ``label`` drawn."""
    image = read_image(field["path"])
    draw = ImageDraw.Draw(image)
    hits, false, missed = matched(field["boxes"], field["truths"], label)
    for _, truth in hits:
        draw.rectangle(truth, outline=MATCHED, width=1)
    for box in false:
        draw.rectangle(box, outline=FALSE, width=2)
    for box in missed:
        draw.rectangle(box, outline=MISSED, width=2)
    return image


def captioned(image: Image.Image, field: dict, label: str, text: str) -> Image.Image:
    tile = Image.new("RGB", (image.width, image.height + CAPTION), "white")
    tile.paste(image, (0, CAPTION))
    labelled = sum(t[0] == label for t in field["truths"])
    counted = sum(b["label"] == label for b in field["boxes"])
    words = ImageDraw.Draw(tile)
    words.text((4, 2), f"{text} ({field['source']})", fill="black")
    words.text((4, 17), f"{label}: {labelled} labelled, {counted} counted in the field", fill="black")
    return tile


def panel(field: dict, label: str, window: tuple[int, int, int], text: str) -> Image.Image:
    """One square window (x, y, side) of a field with the failures of ``label`` drawn, scaled to PANEL px, captioned."""
    x, y, side = window
    crop = drawn(field, label).crop((x, y, x + side, y + side)).resize((PANEL, PANEL), Image.LANCZOS)
    return captioned(crop, field, label, text)


def grid(tiles: list[Image.Image], columns: int = 3) -> Image.Image:
    rows = -(-len(tiles) // columns)
    legend = 22
    sheet = Image.new("RGB", (columns * (PANEL + 6), rows * (PANEL + CAPTION + 6) + legend), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * (PANEL + 6), (i // columns) * (PANEL + CAPTION + 6)))
    draw = ImageDraw.Draw(sheet)
    y = sheet.height - legend + 4
    for x, colour, words in ((4, MISSED, "labelled, missed"), (180, FALSE, "detected, no labelled cell"),
                             (420, MATCHED, "labelled and found")):
        draw.rectangle((x, y, x + 14, y + 12), outline=colour, width=2)
        draw.text((x + 20, y), words, fill="black")
    return sheet


def candidates(fields: list[dict], out: Path, per_kind: int = 6) -> None:
    """The ``per_kind`` worst fields of each kind, whole, with the failures of the kind's class drawn."""
    out.mkdir(parents=True, exist_ok=True)
    for kind, (label, which) in KINDS.items():
        position = {"false": 1, "missed": 2}[which]
        ranked = sorted(fields, key=lambda f: -len(matched(f["boxes"], f["truths"], label)[position]))
        for rank, field in enumerate(ranked[:per_kind]):
            tile = captioned(drawn(field, label), field, label, f"{kind} #{rank + 1} {field['id']}")
            save_image(tile, out / f"{kind}-{rank + 1}-{field['source']}-{field['id']}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--candidates", type=Path, default=None, help="Draw the worst fields of each kind here.")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    fields = count_val(args.data_root)
    if args.candidates:
        candidates(fields, args.candidates)
        return
    by_id = {f["id"]: f for f in fields}
    tiles = [panel(by_id[field], label, (x, y, side), text) for field, label, x, y, side, text in PANELS]
    save_image(grid(tiles), OUTPUT)
    print(f"{len(tiles)} panels -> {OUTPUT}")


if __name__ == "__main__":
    main()

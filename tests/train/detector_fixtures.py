"""Helpers of the detector training tests: synthetic 640x480 smears with VOC boxes, a CBC-like tree."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

BG, PINK, PURPLE = (200, 202, 205), (205, 150, 140), (110, 70, 190)


def draw_smear(seed: int) -> tuple[Image.Image, list[tuple]]:
    """Eight red cells, one white cell and one platelet on a grey background, with their boxes."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (640, 480), BG)
    draw = ImageDraw.Draw(image)
    boxes = []
    for i in range(8):
        x, y = 70 + 120 * (i % 4) + int(rng.integers(-10, 10)), 80 + 130 * (i // 4) + int(rng.integers(-10, 10))
        draw.ellipse([x - 40, y - 40, x + 40, y + 40], fill=PINK)
        boxes.append(("RBC", x - 40, y - 40, x + 40, y + 40))
    draw.ellipse([500, 330, 620, 450], fill=(210, 180, 210))
    draw.ellipse([530, 360, 590, 420], fill=PURPLE)
    boxes.append(("WBC", 500, 330, 620, 450))
    draw.ellipse([60, 400, 80, 420], fill=PURPLE)
    boxes.append(("Platelets", 52, 392, 88, 428))
    return image, boxes


def voc(name: str, boxes: list[tuple]) -> str:
    objects = "".join(f"<object><name>{label}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                      f"<ymax>{y2}</ymax></bndbox></object>" for label, x1, y1, x2, y2 in boxes)
    return (f"<annotation><filename>{name}.jpg</filename><size><width>640</width><height>480</height></size>"
            f"{objects}</annotation>")


def make_cbc_tree(root: Path) -> tuple[Path, Path, dict[str, str]]:
    """``root/cbc/Training`` with 4 train, 2 val smears and 2 test ids whose files are not even readable,
    and ``root/split.csv``; returns (manifest, folder, split)."""
    folder = root / "cbc" / "Training"
    (folder / "Annotations").mkdir(parents=True)
    (folder / "Images").mkdir()
    split = {}
    for index in range(8):
        name = f"BloodImage_{index:05d}"
        split[name] = "train" if index < 4 else "val" if index < 6 else "test"
        if split[name] == "test":
            (folder / "Images" / f"{name}.jpg").write_bytes(b"held out")
            (folder / "Annotations" / f"{name}.xml").write_text("held out")
            continue
        image, boxes = draw_smear(index)
        image.save(folder / "Images" / f"{name}.jpg", quality=95)
        (folder / "Annotations" / f"{name}.xml").write_text(voc(name, boxes))
    manifest = root / "split.csv"
    with manifest.open("w", newline="") as handle:
        csv.writer(handle).writerows([("image_id", "split"), *sorted(split.items())])
    return manifest, folder, split

"""Contact sheets of BCCD's typed white cells, to review their labels by eye (``audits/bccd_wbc_types.csv``).

Every main white cell of ``wbc_labels.csv``, cropped as the benchmarks crop it, sorted by label and
image id, 30 to a sheet, each tile captioned with its number and its label only (never a model's
prediction, so the review does not lean on one). ``index.csv`` maps the numbers to image ids.

    python benchmarks/bccd_review_sheets.py --out DIR [--data-root ROOT]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

TILE, COLUMNS, ROWS = 192, 6, 5


def tile(image, caption: str):
    from PIL import Image, ImageDraw

    image = image.convert("RGB")
    image.thumbnail((TILE, TILE))
    out = Image.new("RGB", (TILE, TILE), "white")
    out.paste(image, ((TILE - image.width) // 2, (TILE - image.height) // 2))
    draw = ImageDraw.Draw(out)
    draw.rectangle([0, 0, TILE - 1, 13], fill="white")
    draw.text((2, 1), caption, fill="black")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the sheets and index.csv")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    from PIL import Image

    from bloodcell.errors import BloodcellError
    from bloodcell.workflows.cells import bccd_cells

    try:
        cells = bccd_cells(args.data_root, "all")
    except BloodcellError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(cells.ids)), key=lambda i: (cells.labels[i], cells.ids[i]))
    per_sheet = COLUMNS * ROWS
    with (out / "index.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "image_id", "label", "sheet"])
        for start in range(0, len(order), per_sheet):
            sheet = Image.new("RGB", (COLUMNS * TILE, ROWS * TILE), "white")
            name = f"sheet-{start // per_sheet:02d}.png"
            for j, i in enumerate(order[start:start + per_sheet]):
                sheet.paste(tile(cells.images[i], f"{start + j:03d} {cells.labels[i]}"),
                            ((j % COLUMNS) * TILE, (j // COLUMNS) * TILE))
                writer.writerow([start + j, cells.ids[i], cells.labels[i], name])
            sheet.save(out / name)
    print(f"wrote {(len(order) + per_sheet - 1) // per_sheet} sheets of {len(order)} cells to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

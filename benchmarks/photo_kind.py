"""Auto mode's rule (single cell or smear field, by the cells the bundled detector finds) on real photos.

Single cells: the first 6 images of each class of ``pbc_originals_sample`` (untouched 360x363 PBC originals).
Smear fields: one 256x256 and one 360x360 field cut at a seeded random place from every 15th CBC photo
(Training/Images, 20 photos). Each image goes through the detector alone (``count_image`` without a
classifier), then :func:`bloodcell.smear.photo_kind.photo_kind`. Writes the share taken right per group and
every miss with its reason.

    python benchmarks/photo_kind.py [--out benchmarks/results/photo_kind.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PER_CLASS, EVERY, PHOTOS, SEED = 6, 15, 20, 0


def images(root: Path):
    """(group, name, image, expected kind) for every image of the benchmark."""
    for folder in sorted(p for p in (root / "pbc_originals_sample").iterdir() if p.is_dir()):
        for path in sorted(folder.glob("[!.]*.jpg"))[:PER_CLASS]:
            yield f"pbc {folder.name}", path.name, Image.open(path).convert("RGB"), "cell"
    rng = random.Random(SEED)
    for path in sorted((root / "cbc" / "Training" / "Images").glob("*.jpg"))[::EVERY][:PHOTOS]:
        photo = Image.open(path).convert("RGB")
        for side in (256, 360):
            x, y = rng.randint(0, photo.width - side), rng.randint(0, photo.height - side)
            yield f"cbc field {side}px", f"{path.name}@{x},{y}", photo.crop((x, y, x + side, y + side)), "smear"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "photo_kind.json"))
    args = parser.parse_args(argv)
    from bloodcell.provenance import git_commit, machine, now
    from bloodcell.smear.counting import count_image
    from bloodcell.smear.photo_kind import photo_kind

    groups: dict[str, list[int]] = {}
    misses = []
    for group, name, image, expected in images(Path(os.environ["BLOODCELL_DATA"])):
        found = count_image(image, classifier=None)
        kind = photo_kind(found["counts"], found["boxes"], image.width, image.height)
        right = kind.kind == expected
        groups.setdefault(group, [0, 0])
        groups[group][0] += right
        groups[group][1] += 1
        if not right:
            misses.append({"group": group, "image": name, "reason": kind.reason})
    total = [sum(v[0] for v in groups.values()), sum(v[1] for v in groups.values())]
    command = ["python", "benchmarks/photo_kind.py", *(argv if argv is not None else sys.argv[1:])]
    result = {"command": shlex.join(command),
              "commit": git_commit(), "date": now(), "machine": machine(), "detector": "learned (bundled)",
              "right": {g: f"{a}/{n}" for g, (a, n) in groups.items()}, "total": f"{total[0]}/{total[1]}",
              "misses": misses}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("right", "total")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

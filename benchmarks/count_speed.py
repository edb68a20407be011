"""End-to-end speed of ``bloodcell count`` on one photo: decode, scale estimate, detection (tiled when
large), white-cell typing and the annotated image, as ``count_image`` does it.

Photos: held-out CBC smears (640x480, as taken) and 4000x3000 phone-camera-sized fields made of a
5x5 mosaic of those smears (red cells about 96 px across, so the photo is read at ~0.42x and
tiled). Median of --repeats timed runs after one warm-up per photo, on --threads torch threads.

    python benchmarks/count_speed.py [--threads 2] [--photos 10] [--out RESULT.json]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TARGETS_S = {"640x480": 0.150, "4000x3000": 3.0}


def mosaic(photos: list[Image.Image], size=(4000, 3000)) -> Image.Image:
    """A ``size`` field tiled with the photos (5 x 5 of 800x600 tiles)."""
    canvas = Image.new("RGB", size)
    tile_w, tile_h = size[0] // 5, size[1] // 5
    for k in range(25):
        tile = photos[k % len(photos)].resize((tile_w, tile_h), Image.BILINEAR)
        canvas.paste(tile, ((k % 5) * tile_w, (k // 5) * tile_h))
    return canvas


def time_photo(image: Image.Image, classifier, detector: str, repeats: int) -> float:
    from bloodcell.smear.counting import count_image

    count_image(image, classifier, detector)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        count_image(image, classifier, detector)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--photos", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--detector", default="learned")
    parser.add_argument("--model", default="pbc8", help="classifier typing the white cells")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "count_speed.json"))
    args = parser.parse_args(argv)
    import torch

    from bloodcell.data.images import read_image
    from bloodcell.data.smear_manifest import read_smear_manifest
    from bloodcell.data.smears import smear_images
    from bloodcell.inference.predictor import load
    from bloodcell.provenance import git_commit, machine, now

    torch.set_num_threads(args.threads)
    test = set(read_smear_manifest("cbc-seed0").ids("test"))
    photos = [read_image(p.path) for p in smear_images("cbc", args.data_root, "Training") if p.image_id in test]
    photos = photos[:args.photos]
    classifier = load(args.model, num_threads=args.threads)
    small = [time_photo(p, classifier, args.detector, args.repeats) for p in photos]
    large = [time_photo(mosaic(photos[k:] + photos[:k]), classifier, args.detector, 1) for k in range(3)]
    result = {"command": shlex.join(["python", "benchmarks/count_speed.py", *(argv if argv is not None else sys.argv[1:])]),
              "commit": git_commit(), "date": now(), "machine": machine(), "threads": args.threads,
              "detector": args.detector, "classifier": args.model,
              "median_seconds": {"640x480": statistics.median(small), "4000x3000": statistics.median(large)},
              "per_photo_seconds": {"640x480": small, "4000x3000": large}, "targets_seconds": TARGETS_S}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median_seconds"]), "->", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How well the out-of-distribution guard separates single blood cells from everything else.

Negatives (should be referred): whole CBC smear photos and random 256x256 crops of them,
scikit-image sample pictures, synthetic blank and noise images. Positives (should pass): PBC
images of a manifest split (default ``test``) and, with ``--other-lab``, the test split of
another lab's cell crops (e.g. the held-out BCCD smears' white cells from ``bloodcell data
crops``): stained single cells the guard should pass too. ``--unseen-lab DIR``: a lab's cell
crops that played no part in the model or its guard (e.g. ``bloodcell data crops --dataset txl``'s
Raabin cells for a PBC model): whether they are referred as an unfamiliar lab's or as non-cells. The model must carry a calibrated
guard (``bloodcell calibrate-ood``); default model: the bundled one.

    python benchmarks/ood_detection.py --manifest MANIFEST.csv [--model CKPT] [--split test]
        [--other-lab CROPS/manifest.csv] [--unseen-lab DIR] [--positives 800] [--smears 100] [--out RESULT.json]

Writes benchmarks/results/ood_detection.json (or ``--out``) with the command and the git commit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "ood_detection.json"
SKIMAGE_PICTURES = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "hubble_deep_field",
                    "immunohistochemistry", "retina", "cat", "page", "moon")


def negatives(data_home: Path, smears: int, seed: int) -> dict[str, list[Image.Image]]:
    """Non-cell images by category."""
    from skimage import data

    from bloodcell.data.images import read_image

    rng = np.random.default_rng(seed)
    photos = sorted((data_home / "cbc" / "Training" / "Images").glob("*.jpg"))[:smears]
    whole = [read_image(p) for p in photos]
    crops = []
    for image in whole:
        for _ in range(2):
            x, y = rng.integers(0, image.width - 256), rng.integers(0, image.height - 256)
            crops.append(image.crop((int(x), int(y), int(x) + 256, int(y) + 256)))
    pictures = [read_image(getattr(data, name)()) for name in SKIMAGE_PICTURES if hasattr(data, name)]
    blanks = [Image.new("RGB", (256, 256), colour) for colour in
              [(255, 255, 255), (0, 0, 0), (128, 128, 128), (232, 205, 210), (200, 160, 200)]]
    noise = [Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) for _ in range(10)]
    noise += [Image.fromarray(np.clip(rng.normal(200, 30, (256, 256, 3)), 0, 255).astype(np.uint8)) for _ in range(10)]
    return {"cbc_whole_smear": whole, "cbc_smear_crop_256": crops, "skimage_picture": pictures,
            "blank": blanks, "noise": noise}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="PBC manifest; positives come from --split")
    parser.add_argument("--model", default=None, help="checkpoint with a calibrated OOD guard (default: bundled)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--other-lab", default=None, help="folder manifest of another lab's cells; its test split should pass")
    parser.add_argument("--unseen-lab", default=None,
                        help="folder of a lab's cell crops that played no part in the model or its guard: what the guard says of them")
    parser.add_argument("--positives", type=int, default=800)
    parser.add_argument("--smears", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULT, help="result JSON")
    args = parser.parse_args()
    os.environ.setdefault("BLOODCELL_NO_PROGRESS", "1")

    from bloodcell.data.locate import data_home, dataset_root
    from bloodcell.data.manifest import read_manifest
    from bloodcell.inference.predictor import load
    from bloodcell.provenance import git_commit

    classifier = load(args.model, num_threads=args.threads)
    if classifier.guard is None:
        sys.exit("the model has no OOD guard; run `bloodcell calibrate-ood --model MODEL --manifest MANIFEST` on it first")
    manifest = read_manifest(args.manifest)
    rows = manifest.rows_for(args.split)
    picks = np.random.default_rng(args.seed).permutation(len(rows))[: args.positives]
    root = dataset_root(manifest.dataset)
    positives = [str(root / rows[i].path) for i in sorted(picks)]

    def flagged(images) -> tuple[int, Counter, int]:
        results = [r for r in classifier.predict(images, batch_size=16) if r.error is None]
        checks = Counter((r.reason or "").split(":")[-1].split("(")[0].strip() for r in results if r.referred)
        return sum(bool(r.referred) for r in results), checks, len(results)

    report = {}
    for category, images in negatives(data_home(), args.smears, args.seed).items():
        n_flagged, checks, n = flagged(images)
        report[category] = {"images": n, "referred": n_flagged, "detection_rate": round(n_flagged / max(n, 1), 4),
                            "by_check": dict(checks)}
        print(category, report[category])
    def passed(images) -> dict:
        n_flagged, checks, n = flagged(images)
        return {"images": n, "referred": n_flagged, "false_referral_rate": round(n_flagged / max(n, 1), 4),
                "by_check": dict(checks)}

    positive = passed(positives)
    print("pbc", positive)
    other_lab = None
    if args.other_lab:
        lab = read_manifest(args.other_lab)
        other_lab = {"manifest": Path(args.other_lab).name, "manifest_sha256": lab.sha256,
                     **passed([str(Path(args.other_lab).parent / row.path) for row in lab.rows_for("test")])}
        print("other lab", other_lab)
    unseen_lab = None
    if args.unseen_lab:
        from bloodcell.data.images import image_files

        files = image_files(args.unseen_lab)
        picks = sorted(np.random.default_rng(args.seed).permutation(len(files))[: args.positives])
        unseen_lab = {"folder": Path(args.unseen_lab).name, **passed([str(files[i]) for i in picks])}
        print("unseen lab", unseen_lab)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": git_commit() or "unknown",
        "model": Path(classifier.source).name,
        "guard": {"pass_rate": classifier.guard.pass_rate, "calibration_images": classifier.guard.num_images,
                  "sources": classifier.guard.sources},
        "negatives": report,
        "overall_detection_rate": round(sum(v["referred"] for v in report.values()) / sum(v["images"] for v in report.values()), 4),
        f"pbc_{args.split}": positive,
    }
    if other_lab:
        result["other_lab_test"] = other_lab
    if unseen_lab:
        result["unseen_lab"] = unseen_lab
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

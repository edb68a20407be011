"""Evaluate the smear counter on a split of CBC Training (manifests/cbc-seed0.csv).

    nice -n 5 .venv/bin/python benchmarks/smear_eval.py --detector classical --split test

Writes benchmarks/results/smear_eval_<detector>.json (command, commit, figures, targets).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"count_accuracy_min": 0.98, "wbc_exact_min": 0.97, "platelets_exact_min": 0.90, "rbc_mape_max": 0.05,
           "wbc_ap50_min": 0.95}
#: Count accuracy of the published YOLO counter (Alam & Islam 2019) on their CBC test images, for comparison.
PUBLISHED_YOLO_COUNT_ACCURACY = {"RBC": 0.961, "WBC": 0.869, "Platelets": 0.964}


def main() -> None:
    os.environ.setdefault("BLOODCELL_NO_PROGRESS", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="centernet")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--manifest", default=str(REPO / "manifests" / "cbc-seed0.csv"))
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from bloodcell.smear.splits import read_split

    from bloodcell.data.voc import smear_annotations
    from bloodcell.evaluation.evaluate import git_commit
    from bloodcell.smear.counting import count_smears
    from bloodcell.smear.evaluation import evaluate_counts

    split = read_split(args.manifest)
    pairs = [(img, ann) for img, ann in smear_annotations("cbc", "Training", args.data_root)
             if split.get(img.stem) == args.split]
    start = time.perf_counter()
    doc = count_smears([str(img) for img, _ in pairs], detector=args.detector)
    seconds = time.perf_counter() - start
    truths = [[(b.label, b.x1, b.y1, b.x2, b.y2) for b in ann.boxes] for _, ann in pairs]
    result = evaluate_counts(doc["images"], truths)
    checks = {
        "count_accuracy": all(result[k]["count_accuracy"] >= TARGETS["count_accuracy_min"] for k in ("RBC", "WBC", "Platelets")),
        "wbc_exact": result["WBC"]["exact_fraction"] >= TARGETS["wbc_exact_min"],
        "platelets_exact": result["Platelets"]["exact_fraction"] >= TARGETS["platelets_exact_min"],
        "rbc_mape": result["RBC"]["mape"] <= TARGETS["rbc_mape_max"],
        "wbc_ap50": result["WBC"]["ap50"] >= TARGETS["wbc_ap50_min"],
    }
    report = {"command": "python " + " ".join(sys.argv), "commit": git_commit(),
              "dataset": "cbc/Training", "manifest": args.manifest, "split": args.split, "detector": args.detector,
              "seconds_per_image": seconds / max(1, len(pairs)), "errors": doc["errors"], **result,
              "targets": TARGETS, "targets_met": checks,
              "published_yolo_count_accuracy": PUBLISHED_YOLO_COUNT_ACCURACY}
    kind, _, path = args.detector.rpartition(":") if args.detector.endswith(".safetensors") else ("", "", args.detector)
    tag = "-".join(filter(None, (kind, Path(path).parent.name))) if path.endswith(".safetensors") else args.detector
    out = Path(args.out or REPO / "benchmarks" / "results" / f"smear_eval_{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    for label in ("RBC", "WBC", "Platelets"):
        r = result[label]
        print(f"{label}: AP50 {r['ap50']:.3f} P {r['precision']:.3f} R {r['recall']:.3f} count acc {r['count_accuracy']:.3f} "
              f"MAE {r['mae']:.2f} MAPE {r['mape']:.3f} exact {r['exact_fraction']:.2f}")
    print("targets met:", checks, "->", out)


if __name__ == "__main__":
    main()

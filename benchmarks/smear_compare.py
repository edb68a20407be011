"""Side-by-side table of the smear detectors evaluated by smear_eval.py on the same split.

    python benchmarks/smear_compare.py classical cbc-centernet-384 hybrid-cbc-centernet-384

Reads benchmarks/results/smear_eval_<tag>.json for each tag and writes
benchmarks/results/smear_detector_comparison.json (and prints a Markdown table).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ("ap50", "precision", "recall", "count_accuracy", "mae", "mape", "exact_fraction")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tags", nargs="+")
    parser.add_argument("--out", default=str(RESULTS / "smear_detector_comparison.json"))
    args = parser.parse_args()
    table, splits = {}, set()
    for tag in args.tags:
        report = json.loads((RESULTS / f"smear_eval_{tag}.json").read_text())
        splits.add((report["manifest"].rsplit("/", 1)[-1], report["split"], report["images"]))
        table[tag] = {"detector": report["detector"], "seconds_per_image": report["seconds_per_image"],
                      "targets_met": report["targets_met"],
                      **{label: {k: report[label][k] for k in FIELDS} for label in ("RBC", "WBC", "Platelets")}}
    if len(splits) != 1:
        raise SystemExit(f"the reports were made on different splits: {sorted(splits)}")
    manifest, split, images = splits.pop()
    doc = {"command": "python " + " ".join(sys.argv), "manifest": manifest, "split": split, "images": images,
           "detectors": table}
    Path(args.out).write_text(json.dumps(doc, indent=2))
    print("| detector | class | AP50 | count acc | MAPE | exact |\n|---|---|---|---|---|---|")
    for tag, row in table.items():
        for label in ("RBC", "WBC", "Platelets"):
            r = row[label]
            cells = ["n/a" if r[k] is None else f"{r[k]:.3f}" for k in ("ap50", "count_accuracy", "mape", "exact_fraction")]
            print(f"| {tag} | {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

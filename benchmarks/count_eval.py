"""The smear counter against complete labels: TXL-PBC per source, CBC's held-out smears, left-out sources.

    python benchmarks/count_eval.py --set txl-val [--detector learned] [--out RESULT.json]
    python benchmarks/count_eval.py --set cbc-test [--labels txl|cbc]
    python benchmarks/count_eval.py --set loso --held-out raabin --detector runs/det-loso-raabin/best.safetensors

* ``txl-val``: TXL-PBC's val subset, per source (bccd, pbc, raabin, kaggle-bcd) and over all.
* ``cbc-test``: the 45 held-out smears of the frozen manifest cbc-seed0; ``--labels cbc`` scores against
  CBC's own (incomplete) boxes, the published comparison; ``--labels txl`` against TXL-PBC's complete
  boxes of the same photos, for the smears TXL-PBC has.
* ``loso``: every TXL-PBC field (train and val) of the held-out source(s), for a detector trained
  without them (kaggle-bcd fields copy BCCD photos: hold them out with bccd).

Each photo is counted as ``bloodcell count`` does (the red-cell scale estimated per photo unless
``--cell-size-px``); figures: count accuracy (1 - |counted - labelled| / labelled), per-photo MAPE,
exact counts, AP@0.5 (pycocotools; VOC all-point AP beside it), and the median time per photo.
Writes the JSON with the command, commit, detector sha256 and targets.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"txl-val": {"count_accuracy_rbc_wbc": 0.97, "count_accuracy_platelets": 0.90, "wbc_ap50": 0.95,
                       "rbc_ap50": 0.90},
           "loso": {"count_accuracy_rbc_wbc": 0.90}}
#: Count accuracy of the published YOLO counter (Alam & Islam 2019) on CBC's test images, for comparison.
PUBLISHED_YOLO_COUNT_ACCURACY = {"RBC": 0.961, "WBC": 0.869, "Platelets": 0.964}


def photos_of(args):
    """(photos, label set description) of the chosen set."""
    from bloodcell.data.smear_manifest import read_smear_manifest
    from bloodcell.data.smears import smear_images

    if args.set == "txl-val":
        return [p for p in smear_images("txl", args.data_root, "val")], "TXL-PBC val (complete labels)"
    if args.set == "loso":
        held = set(args.held_out.split(","))
        return [p for p in smear_images("txl", args.data_root) if p.source in held], f"TXL-PBC fields of {sorted(held)}"
    test = set(read_smear_manifest("cbc-seed0").ids("test"))
    if args.labels == "cbc":
        return [p for p in smear_images("cbc", args.data_root, "Training") if p.image_id in test], "CBC's own boxes"
    group = {r.image_id: r.group for r in read_smear_manifest("txl-detector").rows}
    fields = [p for p in smear_images("txl", args.data_root) if p.source == "bccd" and group.get(p.image_id) in test]
    return fields, "TXL-PBC's complete boxes of the CBC test photos it has"


def count_all(photos, detector: str, cell_size_px):
    from bloodcell.data.images import read_image
    from bloodcell.smear.counting import count_image

    entries, truths, seconds = [], [], []
    for photo in photos:
        image = read_image(photo.path)
        start = time.perf_counter()
        entry = count_image(image, None, detector, None, cell_size_px)
        seconds.append(time.perf_counter() - start)
        entry.pop("annotated")
        entries.append({"path": photo.image_id, "source": photo.source, **entry})
        truths.append([(b.label, b.x1, b.y1, b.x2, b.y2) for b in photo.annotation.boxes])
    return entries, truths, seconds


def figures(entries, truths) -> dict:
    from bloodcell.data.boxes import SMEAR_LABELS
    from bloodcell.metrics.detection import coco_ap50, evaluate_counts

    result = evaluate_counts(entries, truths, SMEAR_LABELS)
    for label, ap in coco_ap50(entries, truths, SMEAR_LABELS).items():
        result[label]["ap50"] = ap
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True, choices=("txl-val", "cbc-test", "loso"))
    parser.add_argument("--labels", default="txl", choices=("txl", "cbc"))
    parser.add_argument("--held-out", default=None, help="loso: comma-separated held-out sources")
    parser.add_argument("--detector", default="learned")
    parser.add_argument("--cell-size-px", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.set == "loso" and not args.held_out:
        parser.error("--set loso needs --held-out SOURCE[,SOURCE] (the sources the detector never saw)")
    import torch

    from bloodcell.provenance import file_sha256, git_commit, machine, now
    from bloodcell.weights import DEFAULT_DETECTOR, resolve

    torch.set_num_threads(args.threads)
    photos, labels = photos_of(args)
    entries, truths, seconds = count_all(photos, args.detector, args.cell_size_px)
    sources = sorted({e["source"] for e in entries})
    per_source = {s: figures([e for e in entries if e["source"] == s], [t for e, t in zip(entries, truths)
                                                                         if e["source"] == s]) for s in sources}
    detector_file = None if args.detector == "classical" else resolve(
        DEFAULT_DETECTOR if args.detector == "learned" else args.detector)
    result = {"command": shlex.join(["python", "benchmarks/count_eval.py", *(argv if argv is not None else sys.argv[1:])]),
              "commit": git_commit(), "date": now(), "machine": machine(), "threads": args.threads,
              "set": args.set, "labels": labels, "photos": len(entries),
              "detector": args.detector if detector_file is None else detector_file.name,
              "detector_sha256": file_sha256(detector_file) if detector_file else None,
              "median_seconds_per_photo": statistics.median(seconds),
              "border_cells": "every visible cell counts, cells cut by the photo's border included, in counts and labels",
              "all": figures(entries, truths), "sources": per_source,
              "targets": TARGETS.get(args.set), "published_yolo_count_accuracy": PUBLISHED_YOLO_COUNT_ACCURACY}
    tag = args.set + (f"-{args.labels}" if args.set == "cbc-test" else "") + (f"-{args.held_out}" if args.held_out else "")
    tag += "-classical" if args.detector == "classical" else ""
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"count_eval-{tag}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for source, figs in [("all", result["all"]), *per_source.items()]:
        print(source, {label: {k: None if figs[label][k] is None else round(figs[label][k], 3)
                               for k in ("count_accuracy", "ap50", "mape")} for label in ("RBC", "WBC", "Platelets")})
    print(f"median {result['median_seconds_per_photo']:.3f} s per photo -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

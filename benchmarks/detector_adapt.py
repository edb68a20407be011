"""Adapting the smear detector to a TXL-PBC source from k of its reviewed photos, counting its other fields.

    nice -n 10 python benchmarks/detector_adapt.py --sources bccd --k 5 --draws 1 --threads 2
    python benchmarks/detector_adapt.py --start bccd=runs/det-loso-bccd/best.safetensors ...

For each source and k, ``--draws`` seeded draws of k photos of the source are given to
``bloodcell detector adapt`` (folder of symbolic links to the photos and their YOLO labels); the
adapted and the starting detector then count the source's other photos (count accuracy and AP@0.5
per class, as ``benchmarks/count_eval.py``), and the first ``--others`` val fields of every other
source (forgetting). The cross-validated figures ``adapt`` recorded and its wall time are kept.

Starting detector: leave-one-source-out detectors are named with ``--start SOURCE=FILE``; the
README's leave-one-source-out figures were made by runs whose checkpoints are not kept in the
repository, so without ``--start`` the bundled detector is the start. It was trained on every
source's train fields (its thresholds and epoch chosen on the val fields), so then only the
source's val fields are drawn from and counted, and the figures show adaptation to a lab the
detector already knows, not to a new one (the JSON says which).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
SOURCES = ("pbc", "bccd", "kaggle-bcd", "raabin")


def _lab_folder(photos, root: Path, data_root: Path) -> Path:
    """A folder of symbolic links to ``photos`` and their YOLO labels, with TXL-PBC's classes.txt."""
    root.mkdir(parents=True)
    (root / "classes.txt").symlink_to(data_root / "classes.txt")
    for photo in photos:
        (root / photo.path.name).symlink_to(photo.path)
        (root / f"{photo.path.stem}.txt").symlink_to(photo.path.parent.parent / "labels" / f"{photo.path.stem}.txt")
    return root


def _summary(figures: dict) -> dict:
    return {label: {k: figures[label].get(k) for k in ("count_accuracy", "ap50", "annotated", "counted")}
            for label in ("RBC", "WBC", "Platelets")}


def _counted(photos, detector: str) -> dict:
    from count_eval import count_all, figures

    entries, truths, _ = count_all(photos, detector, None)
    return _summary(figures(entries, truths))


def run_one(source: str, k: int, draw: int, pool, others, start: str, args, scratch: Path) -> dict:
    import numpy as np

    from bloodcell.train.detector_adapt import AdaptOptions
    from bloodcell.workflows.detector_adapt import adapt_detector

    rng = np.random.default_rng([draw, k, SOURCES.index(source)])
    chosen = sorted(int(i) for i in rng.choice(len(pool), size=k, replace=False))
    given = [pool[i] for i in chosen]
    rest = [p for i, p in enumerate(pool) if i not in set(chosen)]
    folder = _lab_folder(given, scratch / f"{source}-k{k}-d{draw}", args.data_root)
    out = scratch / f"{source}-k{k}-d{draw}.safetensors"
    tick = time.monotonic()
    adapted = adapt_detector(folder, out, lab=f"TXL-PBC {source}", detector=start, folds=min(args.folds, k),
                             options=AdaptOptions(epochs=args.epochs, seed=draw))
    seconds = time.monotonic() - tick
    return {"source": source, "k": k, "draw": draw, "photos": [p.image_id for p in given],
            "adapt_seconds": round(seconds, 1), "kept_because": adapted["kept_because"],
            "cross_validated": adapted["cross_validated"], "counted_fields": len(rest),
            "adapted": _counted(rest, str(out)), "start": _counted(rest, start),
            "other_sources_val": {s: {"fields": len(p), "adapted": _counted(p, str(out)), "start": _counted(p, start)}
                                  for s, p in others.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default=",".join(SOURCES))
    parser.add_argument("--k", default="3,5,10")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--start", action="append", default=[], help="SOURCE=FILE: a detector trained without SOURCE")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--others", type=int, default=8, help="val fields of each other source counted (forgetting)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import torch

    from bloodcell.data.locate import dataset_root
    from bloodcell.data.smears import smear_images
    from bloodcell.provenance import file_sha256, git_commit, machine, now
    from bloodcell.weights import DEFAULT_DETECTOR, resolve

    torch.set_num_threads(args.threads)
    commit = git_commit()  # the code this run imports, before any later commit
    args.data_root = dataset_root("txl", args.data_root)
    starts = dict(spec.split("=", 1) for spec in args.start)
    photos = smear_images("txl", args.data_root)
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for source in args.sources.split(","):
            start = starts.get(source, DEFAULT_DETECTOR)
            loso = source in starts
            pool = [p for p in photos if p.source == source and (loso or p.subset == "val")]
            others = {s: [p for p in photos if p.source == s and p.subset == "val"][:args.others]
                      for s in SOURCES if s != source}
            for k in (int(v) for v in args.k.split(",")):
                for draw in range(args.draws):
                    run = run_one(source, k, draw, pool, others, start, args, Path(scratch))
                    run["start_detector"] = {"file": resolve(start).name, "sha256": file_sha256(resolve(start)),
                                             "leave_one_source_out": loso}
                    runs.append(run)
                    print(source, k, draw, {side: {label: round(run[side][label]["count_accuracy"] or 0, 3)
                                                   for label in ("RBC", "WBC", "Platelets")}
                                            for side in ("start", "adapted")}, f"{run['adapt_seconds']:.0f} s")
    result = {"command": shlex.join(["python", "benchmarks/detector_adapt.py",
                                     *(argv if argv is not None else sys.argv[1:])]),
              "commit": commit, "date": now(), "machine": machine(), "threads": args.threads,
              "note": ("sources named by --start begin from that detector, trained without them: adaptation to a "
                       "new lab, drawn from and counted on all of its fields; any other source begins from the "
                       "bundled detector, trained on its train fields: adaptation to a known lab, counted on its "
                       "val fields"),
              "runs": runs}
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / "detector_adapt.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

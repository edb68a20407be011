"""Classical baselines on real PBC: feature-extraction speed and an indicative sk/svm accuracy.

Images come from the frozen split: a stratified subset of the *train* split for fitting and
of the *val* split for scoring (the test split is never touched). Images are resized and
centre-cropped to 128 px as the trainer does. Feature extraction is timed serially
(n_jobs=1) and with joblib workers; sk/svm is then fitted on the train features and scored
on the val features. The accuracy is only an indication (one small split, no tuning).

    python benchmarks/classical_pbc.py [--manifest pbc-seed0] [--train 1500] [--eval 500] [--jobs 2]

Writes benchmarks/results/classical_pbc.json with the command, the git commit and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "classical_pbc.json"
SIZE = 128


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _load(rows, root: Path, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from bloodcell.data.dataset import resize_center_crop

    images = [np.asarray(resize_center_crop(Image.open(root / row.path).convert("RGB"), SIZE)) for row in rows]
    return np.stack(images), np.asarray([class_names.index(row.label) for row in rows])


def _subset(manifest, split: str, limit: int, class_names: list[str]):
    from bloodcell.data.dataset import stratified_subset

    rows = [row for row in manifest.rows_for(split) if row.label in class_names]
    return [rows[i] for i in stratified_subset([class_names.index(r.label) for r in rows], limit)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="pbc-seed0")
    parser.add_argument("--data-root", default=None, help="PBC folder (default: located from BLOODCELL_DATA)")
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--eval", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    from bloodcell.data.locate import dataset_root
    from bloodcell.data.manifest import read_manifest
    from bloodcell.data.taxonomy import get_taxonomy
    from bloodcell.models import create_model
    from bloodcell.models.classical import CellFeatureExtractor

    manifest = read_manifest(args.manifest)
    root = Path(args.data_root) if args.data_root else dataset_root(manifest.dataset)
    class_names = list(get_taxonomy("pbc8").class_names)
    train_x, train_y = _load(_subset(manifest, "train", args.train, class_names), root, class_names)
    eval_x, eval_y = _load(_subset(manifest, "val", args.eval, class_names), root, class_names)

    timings = {}
    for jobs in sorted({1, args.jobs}):
        extractor = CellFeatureExtractor(n_jobs=jobs)
        sample = eval_x if jobs == 1 else train_x
        start, cpu_start = time.perf_counter(), time.process_time()
        extractor.transform(sample)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        timings[f"n_jobs={jobs}"] = {"images": len(sample), "images_per_second": len(sample) / seconds,
                                     "ms_per_image": 1000 * seconds / len(sample)}
        if jobs == 1:  # CPU time of this process; meaningful only without workers
            timings[f"n_jobs={jobs}"]["cpu_ms_per_image"] = 1000 * cpu_seconds / len(sample)
        print(f"features n_jobs={jobs}: {timings[f'n_jobs={jobs}']}", flush=True)

    extractor = CellFeatureExtractor(n_jobs=args.jobs)
    train_f = extractor.transform(train_x)
    train_failures = len(extractor.failures_)
    eval_f = extractor.transform(eval_x)
    eval_failures = extractor.failures_
    pipeline = create_model("sk/svm", num_classes=len(class_names), class_names=class_names)
    start = time.perf_counter()
    tail = pipeline[1:].fit(train_f, train_y)
    fit_seconds = time.perf_counter() - start
    predicted = tail.predict(eval_f)
    per_class = {name: float((predicted[eval_y == i] == i).mean()) for i, name in enumerate(class_names)}
    failures_by_class = {name: int(sum(eval_y[i] == c for i, _ in eval_failures))
                         for c, name in enumerate(class_names)}
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": _commit(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "data": {"manifest": str(args.manifest), "train_split_images": len(train_y), "val_split_images": len(eval_y),
                 "input_size": SIZE},
        "feature_extraction": timings,
        "segmentation_failures": {"train": train_failures, "val": len(eval_failures),
                                  "val_by_class": failures_by_class},
        "sk_svm": {"val_accuracy": float(accuracy_score(eval_y, predicted)),
                   "val_balanced_accuracy": float(balanced_accuracy_score(eval_y, predicted)),
                   "val_recall_per_class": per_class, "fit_seconds": fit_seconds,
                   "chance_accuracy": float(np.bincount(eval_y).max() / len(eval_y))},
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["sk_svm"], indent=2))


if __name__ == "__main__":
    main()

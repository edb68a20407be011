"""BCCD white-cell typing: classify the main annotated WBC of each smear, directly and adapted.

    python -m bloodcell.smear.wbc_typing CHECKPOINT [--out FILE.json] [--save-head FILE.safetensors] [--record]

Each BCCD smear's largest annotated WBC box is cropped (square, cell ~45% of the crop) and
classified; ``wbc_labels.csv`` gives the truth. Smears are split (seeded, stratified 70/30)
into train/held-out; the direct accuracy is on the held-out part, and the adaptation fits a
logistic regression on the classifier's penultimate features of the train part (features
averaged over the 8 flips/rotations of each crop; the regularisation C is chosen by 4-fold
cross-validation on the train smears only). ``--save-head`` writes that head as a
:class:`~bloodcell.smear.typing_head.TypingHead`, with its held-out accuracy in the metadata; ``--record`` stores the direct held-out accuracy in the
checkpoint's own metadata (``smear_typing``), which ``bloodcell count`` reports.
"""

from __future__ import annotations

import argparse
import sys
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from bloodcell.data.images import read_image
from bloodcell.data.locate import dataset_root
from bloodcell.data.voc import parse_voc
from bloodcell.errors import DataError
from bloodcell.smear.counting import crop_cell
from bloodcell.smear.typing_head import TypingHead, dihedral_features


def bccd_smears(data_root: str | Path | None = None, limit: int | None = None) -> list[tuple[str, str, Path, list]]:
    """(image id, white-cell type, photo path, WBC boxes) of the smears in wbc_labels.csv that have a WBC box."""
    root = dataset_root("bccd", data_root)
    labels_path = root / "wbc_labels.csv"
    if not labels_path.is_file():
        raise DataError(f"{labels_path} not found")
    with labels_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    smears = []
    for row in rows[:limit]:
        xml = root / "Annotations" / f"{row['image_id']}.xml"
        if not xml.is_file():
            continue
        boxes = [(b.x1, b.y1, b.x2, b.y2) for b in parse_voc(xml).boxes if b.label == "WBC"]
        if boxes:
            smears.append((row["image_id"], row["wbc_type"].strip().lower(),
                           root / "JPEGImages" / f"{row['image_id']}.jpg", boxes))
    return smears


def bccd_wbc_crops(data_root: str | Path | None = None, limit: int | None = None) -> tuple[list, list[str], list[str]]:
    """(crops, true types, image ids) of the labelled BCCD smears: each smear's largest WBC box."""
    crops, truth, ids = [], [], []
    for image_id, wbc_type, path, boxes in bccd_smears(data_root, limit):
        crops.append(crop_cell(read_image(path), max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))))
        truth.append(wbc_type)
        ids.append(image_id)
    return crops, truth, ids


def held_out_ids(data_root: str | Path | None = None, seed: int = 0) -> set[str]:
    """Image ids of the held-out BCCD smears (never used to fit heads or to fine-tune)."""
    smears = bccd_smears(data_root)
    return {s[0] for s, held in zip(smears, held_out_split([s[1] for s in smears], seed)) if held}


def export_wbc_crops(out: str | Path, data_root: str | Path | None = None, seed: int = 0) -> Path:
    """Write every WBC box of the labelled BCCD smears as ``out/<type>/<id>_<k>.png`` plus ``out/manifest.csv``.

    The manifest (dataset ``folder``, paths relative to ``out``, grouped by smear) puts the
    smears of :func:`held_out_split` in ``test`` and the others in ``train``, so training on it
    (``bloodcell train --extra-train out/manifest.csv``) never sees the held-out smears.
    """
    from bloodcell.checkpoint import file_sha256
    from bloodcell.data.manifest import ManifestRow, write_manifest

    out = Path(out)
    smears = bccd_smears(data_root)
    if not smears:
        raise DataError("no labelled BCCD smear with a WBC box")
    held = held_out_split([wbc_type for _, wbc_type, _, _ in smears], seed)
    rows = []
    for (image_id, wbc_type, path, boxes), is_held in zip(smears, held):
        image = read_image(path)
        (out / wbc_type).mkdir(parents=True, exist_ok=True)
        for k, box in enumerate(boxes):
            relative = f"{wbc_type}/{image_id}_{k}.png"
            crop_cell(image, box).save(out / relative)
            rows.append(ManifestRow(relative, wbc_type, "", "test" if is_held else "train", file_sha256(out / relative), image_id))
    write_manifest(out / "manifest.csv", "folder", rows)
    return out / "manifest.csv"


def held_out_split(truth: list[str], seed: int = 0, test_fraction: float = 0.3) -> np.ndarray:
    """Boolean mask of held-out smears, stratified by type (classes with one smear stay in train)."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(truth), bool)
    for name in sorted(set(truth)):
        index = np.flatnonzero(np.array(truth) == name)
        rng.shuffle(index)
        held[index[: int(round(test_fraction * len(index))) if len(index) > 1 else 0]] = True
    return held


def fit_typing_head(features: np.ndarray, labels: np.ndarray, seed: int = 0):
    """Scaled logistic regression with C chosen by stratified cross-validation on these smears only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, class_weight="balanced"))
    folds = int(min(4, np.unique(labels, return_counts=True)[1].min()))
    if folds < 2:
        return pipeline.set_params(logisticregression__C=0.1).fit(features, labels)
    search = GridSearchCV(pipeline, {"logisticregression__C": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]},
                          cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return search.fit(features, labels).best_estimator_


def evaluate_typing(classifier, crops: list, truth: list[str], seed: int = 0) -> tuple[dict[str, Any], Any]:
    """(direct and adapted accuracy on the held-out smears, the fitted head pipeline)."""
    import warnings

    truth_arr = np.array(truth)
    held = held_out_split(truth, seed)
    predicted = np.array([p.label for p in classifier.predict(crops, top_k=1)])
    features = dihedral_features(classifier, crops)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes rarer than the folds (BCCD has 3 basophils) warn in CV
        head = fit_typing_head(features[~held], truth_arr[~held], seed)
    adapted = head.predict(features[held])
    return {"smears": len(truth), "train": int((~held).sum()), "held_out": int(held.sum()), "seed": seed,
            "direct_accuracy_held_out": float(np.mean(predicted[held] == truth_arr[held])),
            "direct_accuracy_all": float(np.mean(predicted == truth_arr)),
            "adapted_accuracy_held_out": float(np.mean(adapted == truth_arr[held])),
            "adapted_C": float(head.get_params()["logisticregression__C"]),
            "held_out_types": {k: int(v) for k, v in zip(*np.unique(truth_arr[held], return_counts=True))}}, head


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="BCCD white-cell typing accuracy of a checkpoint.")
    parser.add_argument("checkpoint")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--save-head", default=None, help="Write the adapted head (fitted on the train smears) here.")
    parser.add_argument("--record", action="store_true",
                        help="Store the direct held-out accuracy in the checkpoint's metadata (smear_typing), for count reports.")
    args = parser.parse_args(argv)
    import torch

    from bloodcell.checkpoint import file_sha256
    from bloodcell.evaluation.evaluate import git_commit
    from bloodcell.inference.predictor import load

    torch.set_num_threads(1)
    crops, truth, _ = bccd_wbc_crops(args.data_root, args.limit)
    scores, head = evaluate_typing(load(args.checkpoint, num_threads=1), crops, truth, args.seed)
    result = {
        "command": " ".join(["python -m bloodcell.smear.wbc_typing", *(argv if argv is not None else sys.argv[1:])]),
        "commit": git_commit(),
        "checkpoint": str(args.checkpoint),
        **scores,
    }
    if args.record:  # first: it rewrites the checkpoint, so a head saved below is tied to the new file
        from bloodcell.checkpoint import read_checkpoint_meta, update_metadata

        extra = read_checkpoint_meta(args.checkpoint).get("train_config", {}).get("extra_train") or []
        fitted = {"fitted_on": "fine-tuned with " + ", ".join(Path(p).parent.name for p in extra)} if extra else {}
        update_metadata(args.checkpoint, smear_typing={
            "dataset": "bccd", "held_out_smears": scores["held_out"], "held_out_accuracy": scores["direct_accuracy_held_out"],
            "seed": args.seed, "commit": result["commit"], **fitted})
    result["checkpoint_sha256"] = file_sha256(args.checkpoint)
    if args.save_head:
        meta = {"name": "bccd", "fitted_on": f"fitted on BCCD wbc_labels.csv, {scores['train']} training smears (seed {args.seed})",
                "held_out_smears": scores["held_out"], "held_out_accuracy": scores["adapted_accuracy_held_out"],
                "direct_accuracy_held_out": scores["direct_accuracy_held_out"], "commit": result["commit"]}
        TypingHead.from_pipeline(head, result["checkpoint_sha256"], meta).save(args.save_head)
        result["head"] = str(args.save_head)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

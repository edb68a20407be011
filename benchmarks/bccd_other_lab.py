"""A lab the model never saw: BCCD's typed white cells, unadapted and adapted from a few cells.

1. **Unadapted** (leave-one-lab-out when the model was trained without BCCD): accuracy on the main
   white cell of the held-out BCCD smears (the split every BCCD figure shares; also averaged over
   the 8 quarter-turn and mirror views, as ``--tta``) and on all typed smears; accuracy against
   coverage (cells kept at each confidence threshold); what the guard says (familiar, unfamiliar
   lab, not a cell).
2. **Adapted** (``bloodcell adapt``'s engine): for n in --cells (default 5, 10, 20) cells per class and
   --draws random draws, the last layer is refitted on n cells of each type that has more than n
   (basophils, 3 smears, take no part), and scored on every other typed BCCD cell (plain and 8
   views; also on the cells of the adapted types only, and what each type is called, summed over the
   draws). The model's features of each cell's 8 views are computed once.

BCCD's labels are not all right (``audits/``: only 31 of its 75 "eosinophils" show eosinophil granules).
``--review benchmarks/audits/bccd_wbc_types.csv`` keeps only the cells whose label the review confirms,
for scoring and for adapting alike.

``--stain-normalise reinhard|macenko`` (torchstain: ``pip install -e .[bench]``) first maps every BCCD crop
to the colours of 32 PBC training images: the test-time alternative to colour augmentation in training.

    python benchmarks/bccd_other_lab.py --model CKPT [--cells 5,10,20] [--draws 5] [--stain-normalise none]
        [--review REVIEW.csv] [--out RESULT.json]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def coverage_table(probs: np.ndarray, truth: np.ndarray) -> list[dict]:
    """Accuracy of the cells kept at each confidence threshold."""
    confidence, correct = probs.max(1), probs.argmax(1) == truth
    rows = []
    for threshold in (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        kept = confidence >= threshold
        rows.append({"refer_below": threshold, "coverage": float(kept.mean()),
                     "accuracy_kept": float(correct[kept].mean()) if kept.any() else None})
    return rows


def confirmed_cells(cells, review_path):
    """The cells whose label the review confirms, and what the review said of all of them."""
    from bloodcell.data.bccd import UNCLEAR, read_type_review
    from bloodcell.errors import DataError
    from bloodcell.workflows.cells import Cells

    review = read_type_review(review_path)
    said = Counter()
    keep = []
    for i, (image_id, label) in enumerate(zip(cells.ids, cells.labels)):
        reviewed_label, seen = review.get(image_id, (None, None))
        if reviewed_label != label:
            raise DataError(f"{review_path}: does not review {image_id} as labelled {label!r}; it was made on "
                            "other labels")
        said["confirmed" if seen == label else UNCLEAR if seen == UNCLEAR else f"looks like {seen}"] += 1
        if seen == label:
            keep.append(i)
    if not keep:
        raise DataError(f"{review_path}: confirms none of the cells' labels")
    kept = Cells([cells.images[i] for i in keep], [cells.labels[i] for i in keep], [cells.ids[i] for i in keep],
                 cells.skipped)
    return kept, dict(said)


def adaptation_sizes(text: str, labels: list[str]) -> list[int]:
    """The cells per class of ``--cells``; each must leave at least 2 types with more cells than that."""
    from bloodcell.errors import DataError

    try:
        sizes = [int(n) for n in text.split(",")]
    except ValueError:
        raise DataError(f"--cells takes whole numbers separated by commas, not {text!r}") from None
    counts = Counter(labels).values()
    for n in sizes:
        if n < 1 or sum(c > n for c in counts) < 2:
            raise DataError(f"adapting from {n} cells per class needs at least 2 types with more than {n} cells "
                            f"(types have {', '.join(map(str, sorted(counts)))})")
    return sizes


def unadapted(classifier, cells, held: set[str]) -> tuple[dict, np.ndarray, np.ndarray]:
    from bloodcell.inference.ood import UNFAMILIAR
    from bloodcell.workflows.adapt import view_features

    names = classifier.class_names
    truth = np.array([names.index(label) for label in cells.labels])
    pixels, features = view_features(classifier, cells.images)
    logits = features @ classifier_weight(classifier).T + classifier_bias(classifier)  # (8 views, N, C)
    probs, probs_tta = classifier.probabilities(logits[:1]), classifier.probabilities(logits)
    held_mask = np.array([i in held for i in cells.ids])
    notes = Counter(("referred: unfamiliar lab" if r.startswith(UNFAMILIAR) else "referred: not a cell") if r
                    else ("unfamiliar lab" if n else "familiar")
                    for r, n in (classifier.guard.assess(pixels, features[0]) if classifier.guard else []))
    return {"held_out": {"n": int(held_mask.sum()), "accuracy": float((probs[held_mask].argmax(1) == truth[held_mask]).mean()),
                         "accuracy_tta": float((probs_tta[held_mask].argmax(1) == truth[held_mask]).mean()),
                         "coverage": coverage_table(probs[held_mask], truth[held_mask])},
            "all_typed": {"n": len(truth), "accuracy": float((probs.argmax(1) == truth).mean())},
            "predicted_as": {t: dict(Counter(names[p] for p, tt in zip(probs.argmax(1), truth) if names[tt] == t))
                             for t in sorted(set(cells.labels))},
            "guard": dict(notes)}, features, truth


def classifier_weight(classifier) -> np.ndarray:
    from bloodcell.models.heads import classifier_layer

    layer = classifier_layer(classifier.model)
    return layer.weight.detach().numpy().reshape(layer.weight.shape[0], -1)


def classifier_bias(classifier) -> np.ndarray:
    from bloodcell.models.heads import classifier_layer

    return classifier_layer(classifier.model).bias.detach().numpy()


def adapted(classifier, features: np.ndarray, truth: np.ndarray, sizes: list[int], draws: int) -> dict:
    from bloodcell.metrics.calibration import apply_temperature
    from bloodcell.train.head import adapt_head

    names = classifier.class_names
    w0, b0 = classifier_weight(classifier), classifier_bias(classifier)
    result = {}
    for n in sizes:
        runs = []
        types = [c for c in np.unique(truth) if (truth == c).sum() > n]
        called: dict[str, Counter] = {}
        for draw in range(draws):
            rng = np.random.default_rng(draw)
            chosen = np.concatenate([rng.choice(np.flatnonzero(truth == c), n, replace=False) for c in types])
            rest = np.setdiff1d(np.arange(len(truth)), chosen)
            of_types = np.isin(truth[rest], types)
            fit = adapt_head(features[:, chosen], truth[chosen], w0, b0, seed=draw)
            logits = features[:, rest] @ fit.weight.T + fit.bias  # (8 views, cells, classes)
            predicted = logits[0].argmax(1)
            for t, p in zip(truth[rest], predicted):
                called.setdefault(names[t], Counter())[names[p]] += 1
            accuracy = float((predicted == truth[rest]).mean())
            accuracy_types = float((predicted[of_types] == truth[rest][of_types]).mean())
            views = apply_temperature(logits, fit.temperature).mean(0)
            accuracy_tta = float((views.argmax(1) == truth[rest]).mean())
            runs.append({"draw": draw, "accuracy_on_the_rest": accuracy, "accuracy_on_the_rest_tta": accuracy_tta,
                         "n_rest": len(rest), "accuracy_on_adapted_types": accuracy_types,
                         "n_adapted_types": int(of_types.sum()),
                         "cv_accuracy": fit.cv_accuracy, "strength": fit.strength,
                         "before_on_the_rest": float(((features[0, rest] @ w0.T + b0).argmax(1) == truth[rest]).mean())})
        accuracies = [r["accuracy_on_the_rest"] for r in runs]
        result[f"{n}_per_class"] = {"types": [names[c] for c in types],
                                    "predicted_as": {t: dict(c) for t, c in sorted(called.items())},
                                    "mean": float(np.mean(accuracies)), "std": float(np.std(accuracies)),
                                    "mean_on_adapted_types": float(np.mean([r["accuracy_on_adapted_types"] for r in runs])),
                                    "mean_tta": float(np.mean([r["accuracy_on_the_rest_tta"] for r in runs])),
                                    "min": float(np.min(accuracies)), "max": float(np.max(accuracies)), "draws": runs}
    return result


def pbc_reference(data_root, per_class: int = 4) -> np.ndarray:
    """A mosaic of ``per_class`` PBC training images of each class (the normalisation target)."""
    from bloodcell.data.images import read_image
    from bloodcell.data.locate import manifest_images_root
    from bloodcell.data.manifest import read_manifest

    root = manifest_images_root("pbc-seed0", "pbc", data_root)
    rows = read_manifest("pbc-seed0").rows_for("train")
    picked = [row for label in sorted({r.label for r in rows}) for row in [r for r in rows if r.label == label][:per_class]]
    tiles = [np.asarray(read_image(root / row.path).convert("RGB").resize((128, 128))) for row in picked]
    return np.concatenate([np.concatenate(tiles[i:i + per_class], axis=1) for i in range(0, len(tiles), per_class)])


def stain_normalised(images: list, method: str, reference: np.ndarray) -> tuple[list, int]:
    """``images`` mapped to the reference's colours with torchstain; crops it cannot map are kept as they are."""
    import torchstain
    from PIL import Image

    normaliser = {"reinhard": torchstain.normalizers.ReinhardNormalizer,
                  "macenko": torchstain.normalizers.MacenkoNormalizer}[method](backend="numpy")
    normaliser.fit(reference)
    out, failed = [], 0
    for image in images:
        try:
            result = normaliser.normalize(np.asarray(image.convert("RGB")))
            array = result[0] if isinstance(result, tuple) else result
            out.append(Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)))
        except Exception:  # noqa: BLE001 - torchstain raises bare errors on crops without enough stain
            out.append(image)
            failed += 1
    return out, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pbc8", help="bundled name or .safetensors")
    parser.add_argument("--cells", default="5,10,20", help="cells per class for adaptation")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stain-normalise", choices=("none", "reinhard", "macenko"), default="none")
    parser.add_argument("--review", default=None, help="a review of the labels (benchmarks/audits/bccd_wbc_types.csv): "
                        "only the cells whose label it confirms are used")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import torch

    from bloodcell.checkpoint import read_checkpoint_meta
    from bloodcell.data.bccd import held_out_ids, typed_smears
    from bloodcell.errors import BloodcellError
    from bloodcell.inference.predictor import load
    from bloodcell.provenance import file_sha256, git_commit, machine, now
    from bloodcell.weights import resolve
    from bloodcell.workflows.cells import bccd_cells

    torch.set_num_threads(args.threads)
    try:
        classifier = load(args.model)
        cells = bccd_cells(args.data_root, "all")
        held = held_out_ids(typed_smears(args.data_root)[0])
        said = None
        if args.review:
            cells, said = confirmed_cells(cells, args.review)
        sizes = adaptation_sizes(args.cells, cells.labels)
    except BloodcellError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    unmapped = 0
    if args.stain_normalise != "none":
        cells.images, unmapped = stain_normalised(cells.images, args.stain_normalise, pbc_reference(args.data_root))
    plain, features, truth = unadapted(classifier, cells, held)
    result = {"command": shlex.join(["python", "benchmarks/bccd_other_lab.py", *(argv or sys.argv[1:])]),
              "commit": git_commit(), "date": now(), "machine": machine(), "model": Path(str(args.model)).name,
              "model_sha256": file_sha256(resolve(args.model)),
              "extra_training_sets": read_checkpoint_meta(args.model).get("train_config", {}).get("extra_train") or [],
              "review": None if said is None else {"file": Path(args.review).name,
                                                   "sha256": file_sha256(args.review), "said": said},
              "cells": dict(Counter(cells.labels)), "unadapted": plain,
              "stain_normalise": args.stain_normalise, "crops_not_normalised": unmapped,
              "adapted": adapted(classifier, features, truth, sizes, args.draws)}
    suffix = ("" if args.stain_normalise == "none" else f"-{args.stain_normalise}") + ("-reviewed" if args.review else "")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"bccd_other_lab-{Path(str(args.model)).stem}{suffix}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"unadapted_held_out": plain["held_out"]["accuracy"],
                      **{k: v["mean"] for k, v in result["adapted"].items()}}, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

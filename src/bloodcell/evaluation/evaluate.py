"""Score a checkpoint on a manifest's test split (or an external folder) and write the report.

Split policy: the train split is refused outright (accuracy on training images says nothing
about new ones). The validation split needs ``allow_non_test=True`` and every output is then
labelled "VALIDATION — not a test result". A ``folder`` dataset has no splits: all of its
images are test images. The checkpoint's temperature is applied to the probabilities used
for calibration, selective prediction and confidences; the argmax (and so accuracy) is the
same at any temperature. With TTA, probabilities are averaged over the 8 dihedral views.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bloodcell import __version__
from bloodcell.checkpoint import file_sha256
from bloodcell.data.images import read_image
from bloodcell.errors import ConfigError, DataError, ImageError
from bloodcell.evaluation.items import EvalItems, folder_items, manifest_items
from bloodcell.evaluation.label_map import read_label_map, resolve_label_map
from bloodcell.evaluation.models import ScoringModel, load_scoring_model
from bloodcell.metrics.calibration import expected_calibration_error
from bloodcell.metrics.classification import classification_report

TEST_LABEL = "TEST RESULT"
VALIDATION_LABEL = "VALIDATION — not a test result"
THUMBNAIL_SIZE = 160


@dataclass
class Evaluation:
    """The JSON-ready result, per-image predictions and the misclassified thumbnails."""

    result: dict[str, Any]
    predictions: list[dict[str, Any]] = field(default_factory=list)
    gallery: list[dict[str, Any]] = field(default_factory=list)


def split_label(split: str, allow_non_test: bool) -> str:
    """The label every output carries; refuses the train split, and val unless allowed."""
    if split == "test":
        return TEST_LABEL
    if split == "train":
        raise ConfigError(
            "the train split is never evaluated: accuracy on training images says nothing about new images; "
            "use --split test (or --split val --allow-non-test for a validation check)"
        )
    if split == "val":
        if not allow_non_test:
            raise ConfigError("--split val is not a test result; add --allow-non-test to evaluate it anyway "
                              "(the report is then labelled VALIDATION)")
        return VALIDATION_LABEL
    raise ConfigError(f"unknown split {split!r}; choose test (or val with --allow-non-test)")


def git_commit() -> str | None:
    """The source tree's commit (with ``+dirty`` when tracked files changed), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit or None


def _default_taxonomy(model: ScoringModel) -> str:
    return str(model.meta.get("taxonomy") or model.meta.get("train_config", {}).get("taxonomy") or "pbc8")


def _collect(model: ScoringModel, dataset: str, manifest, split: str, taxonomy: str | None,
             data_root, limit: int | None) -> EvalItems:
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    if manifest is not None:
        return manifest_items(manifest, split, taxonomy or _default_taxonomy(model), data_root,
                              dataset=None if dataset == "folder" else dataset, limit=limit)
    if dataset != "folder":
        raise ConfigError(f"--dataset {dataset} needs --manifest FILE (see 'bloodcell data split'); "
                          "use --dataset folder --data-root DIR for a plain root/<class>/<image> folder")
    if split != "test":
        raise ConfigError("a folder dataset has no splits: all of its images are test images (drop --split)")
    return folder_items(data_root, limit=limit)


def _thumbnail(path: Path) -> bytes | None:
    try:
        image = read_image(path)
    except ImageError:
        return None
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _display_path(path: Path, root: Path | None) -> str:
    try:
        return str(path.relative_to(root)) if root is not None else str(path)
    except ValueError:
        return str(path)


def evaluate(
    checkpoint: str | Path,
    *,
    dataset: str = "pbc",
    manifest: str | Path | None = None,
    split: str = "test",
    taxonomy: str | None = None,
    data_root: str | Path | None = None,
    label_map: str | Path | None = None,
    tta: bool = False,
    limit: int | None = None,
    allow_non_test: bool = False,
    batch_size: int = 32,
    n_boot: int = 1000,
    seed: int = 0,
    gallery_size: int = 24,
    model: ScoringModel | None = None,
) -> Evaluation:
    """Score ``checkpoint`` on the chosen images and gather metrics, provenance and errors.

    ``model`` may pass an already loaded checkpoint (it must be the one at ``checkpoint``).
    """
    label = split_label(split, allow_non_test)
    model = model or load_scoring_model(checkpoint)
    items = _collect(model, dataset, manifest, split, taxonomy, data_root, limit)
    if dataset == "folder" and manifest is None:
        label = f"{TEST_LABEL} (external dataset)"
    mapping, map_notes = resolve_label_map(items.class_names, model.class_names,
                                           read_label_map(label_map) if label_map else None)
    notes = list(items.notes) + map_notes
    if limit is not None:
        notes.append(f"only a stratified subset of at most {limit} images was scored (--limit): a quick look, "
                     "not the full result")
    if tta and model.kind != "torch":
        notes.append("test-time augmentation applies to torch models only; ignored for this classical pipeline")
        tta = False
    trained_on = model.meta.get("manifest_sha256")
    if items.manifest_sha256 and trained_on and trained_on != items.manifest_sha256:
        notes.append(f"WARNING: the checkpoint was trained with another manifest (sha256 {trained_on[:12]}…); "
                     "its training images may be in this split")

    scores = model.score(items.paths, tta=tta, batch_size=batch_size,
                         description=f"evaluating {len(items.paths)} images")
    skipped = [{"path": _display_path(Path(p), items.root), "reason": r} for p, r in items.skipped + scores.skipped]
    probs = scores.probabilities(model.temperature)
    raw = scores.probabilities(1.0)
    pred = probs.argmax(axis=1)
    model_index = {name: i for i, name in enumerate(model.class_names)}

    scored, y_true, predictions = [], [], []
    unmapped: dict[str, Counter] = {}
    for row, index in enumerate(scores.indices):
        dataset_label = items.labels[index]
        target = mapping[dataset_label]
        predicted = model.class_names[pred[row]]
        predictions.append({
            "path": _display_path(items.paths[index], items.root), "dataset_label": dataset_label,
            "true": target, "predicted": predicted, "confidence": float(probs[row, pred[row]]),
            "correct": None if target is None else target == predicted,
        })
        if target is None:
            unmapped.setdefault(dataset_label, Counter())[predicted] += 1
            continue
        scored.append(row)
        y_true.append(model_index[target])
    if not scored:
        raise DataError(f"no image could be scored ({len(skipped)} unreadable, "
                        f"{sum(sum(c.values()) for c in unmapped.values())} of classes unknown to the model)")
    y = np.asarray(y_true, dtype=np.int64)
    metrics = classification_report(y, probs[scored], model.class_names, n_boot=n_boot, seed=seed)

    errors = sorted((r for r in predictions if r["correct"] is False), key=lambda r: -r["confidence"])
    result = {
        "title": f"{model.model_name} on {items.dataset} / {items.split}",
        "label": label,
        "is_test_result": label.startswith(TEST_LABEL),
        "dataset": items.dataset,
        "split": items.split,
        "taxonomy": items.taxonomy,
        "provenance": {
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": file_sha256(checkpoint),
            "model_name": model.model_name,
            "model_kind": model.kind,
            "n_parameters": model.n_parameters,
            "manifest": str(items.manifest) if items.manifest else None,
            "manifest_sha256": items.manifest_sha256,
            "data_root": str(items.root) if items.root else None,
            "label_map": str(label_map) if label_map else None,
            "temperature": model.temperature,
            "tta": tta,
            "limit": limit,
            "git_commit": git_commit(),
            "bloodcell_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "counts": {
            "images": len(items.paths) + len(items.skipped),
            "scored": len(scored),
            "skipped": len(skipped),
            "unmapped": len(predictions) - len(scored),
        },
        "class_mapping": mapping,
        "unmapped": {k: {"count": sum(c.values()), "predicted": dict(c)} for k, c in unmapped.items()},
        "metrics": metrics,
        "uncalibrated": {
            "ece": expected_calibration_error(y, raw[scored]),
            "nll": float(-np.log(np.clip(raw[scored][np.arange(len(y)), y], 1e-12, None)).mean()),
        },
        "speed": {"seconds": scores.seconds, "images_per_second": scores.images_per_second},
        "misclassified": errors,
        "skipped": skipped,
        "notes": notes,
    }
    gallery = []
    for record, path in ((r, items.root / r["path"] if items.root else Path(r["path"])) for r in errors[:gallery_size]):
        thumb = _thumbnail(path)
        if thumb is not None:
            gallery.append({**record, "thumbnail": thumb})
    return Evaluation(result, predictions, gallery)


def write_report(evaluation: Evaluation, out: str | Path) -> dict[str, Path]:
    """Write metrics.json, report.md, report.html, predictions.csv and figures/*.png into ``out``."""
    from bloodcell.report import evaluation_figures, render_html, render_markdown

    out = Path(out)
    figure_dir = out / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    result = evaluation.result
    figures = evaluation_figures(result["metrics"])
    files: dict[str, Path] = {}
    figure_files = {}
    for key, (title, png) in figures.items():
        (figure_dir / f"{key}.png").write_bytes(png)
        figure_files[key] = (title, f"figures/{key}.png")
    files["metrics"] = out / "metrics.json"
    files["metrics"].write_text(json.dumps(result, indent=2, allow_nan=False, ensure_ascii=False) + "\n", encoding="utf-8")
    files["markdown"] = out / "report.md"
    files["markdown"].write_text(render_markdown(result, figure_files), encoding="utf-8")
    files["html"] = out / "report.html"
    files["html"].write_text(render_html(result, figures, evaluation.gallery), encoding="utf-8")
    files["predictions"] = out / "predictions.csv"
    with files["predictions"].open("w", newline="", encoding="utf-8") as handle:
        fields = ["path", "dataset_label", "true", "predicted", "confidence", "correct"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(evaluation.predictions)
    return files

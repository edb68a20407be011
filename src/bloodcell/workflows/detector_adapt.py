"""``bloodcell detector adapt``: fine-tune a smear detector on a lab's reviewed photos, thresholds cross-validated.

The photos (:mod:`bloodcell.workflows.reviewed_photos`: a folder of labelled photos, a reviewed
sample folder or a lab's reviewed samples in the store) are read at the detector's red-cell size, as in
training: each photo's scale comes from its labelled red cells (white cells when it has none;
the detector's own scale estimate when it has neither). The photos are split into ``folds``
seeded folds; for each fold the detector is fine-tuned on the other folds
(:func:`bloodcell.train.detector_adapt.fine_tune`) and detects the fold's photos. The per-class
score thresholds are chosen on these out-of-fold detections (never on photos the detecting model
was tuned on), and the final detector is fine-tuned on every photo and given those thresholds.

The cross-validated figures: AP@0.5 of the out-of-fold detections, and count accuracy with each
fold counted at thresholds chosen on the other folds' detections alone, beside the original
detector's figures on the same photos. A class no photo labels, or whose cross-validated count
accuracy is below the original's on the same photos, keeps the original detector's network and
threshold (:mod:`bloodcell.models.centernet_kept`). The adapted checkpoint records
its lab, its photos (names, sha256), the original it was adapted from, the options and figures.
Adapted from the store, each sample used keeps an ``adapt_detector`` entry in its audit trail.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

from bloodcell.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from bloodcell.data.boxes import SMEAR_LABELS as LABELS
from bloodcell.data.boxes import Box
from bloodcell.data.images import read_image
from bloodcell.data.lab_photos import LabPhoto
from bloodcell.errors import CheckpointError, ConfigError, DataError, ImageError
from bloodcell.log import get_logger
from bloodcell.metrics.detection import coco_ap50, evaluate_counts
from bloodcell.models.centernet import MODEL_NAME as CENTERNET
from bloodcell.models.centernet import CenterNet, input_shape
from bloodcell.models.centernet_kept import MODEL_NAME as KEPT_MODEL
from bloodcell.models.centernet_kept import KeptClassesCenterNet
from bloodcell.outputs import refuse_to_replace
from bloodcell.provenance import file_sha256
from bloodcell.smear.lab_name import check_lab, look_up_lab
from bloodcell.smear.learned_detector import LearnedDetector, read_detector
from bloodcell.train.detector import CANDIDATE_THRESHOLDS, Sample, select_thresholds
from bloodcell.train.detector_adapt import AdaptOptions, fine_tune
from bloodcell.workflows.detector import red_cell_size
from bloodcell.workflows.reviewed_photos import ReviewedPhotos, from_folder, from_store, record_use

if TYPE_CHECKING:
    from bloodcell.store.database import Store

ADAPTED_FORMAT = "bloodcell-adapted-detector/1"
LOW = [min(CANDIDATE_THRESHOLDS)] * len(LABELS)
logger = get_logger(__name__)


@dataclass
class LabSample:
    """A lab photo resized for the network, with how its scale was found."""

    photo: LabPhoto
    sample: Sample
    scale_from: str  # "labels" | "estimate" | "longer side"


def fold_of(n: int, folds: int, seed: int) -> list[int]:
    """Each of ``n`` photos' fold (0..folds-1): a seeded shuffle dealt round-robin, so fold sizes differ by at most one."""
    if not 2 <= folds <= n:
        raise ConfigError(f"cross-validation needs 2 to {n} folds (one photo at least in each), got {folds}")
    assignment = [0] * n
    for position, index in enumerate(np.random.default_rng(seed).permutation(n)):
        assignment[int(index)] = position % folds
    return assignment


def _lab_sample(photo: LabPhoto, base: LearnedDetector) -> LabSample:
    image = read_image(photo.path)
    known = [b for b in photo.annotation.boxes if b.label in LABELS]
    boxes = np.array([b.xyxy for b in known], np.float32).reshape(-1, 4)
    labels = np.array([LABELS.index(b.label) for b in known], np.int64)
    cell_size_px = base.settings.cell_size_px
    if cell_size_px is None:
        scale, how = input_shape(image.width, image.height, base.settings.input_size)[0], "longer side"
    else:
        size = red_cell_size(boxes, labels, image.width, image.height)
        how = "labels" if size is not None else "estimate"
        scale = cell_size_px / (size if size is not None else base.estimate_cell_size(image).pixels)
    width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    array = np.asarray(image.resize((width, height), Image.BILINEAR))
    return LabSample(photo, Sample(photo.name, array, boxes * scale, labels), how)


def _detect_all(detector: LearnedDetector, samples: Sequence[Sample]) -> list[list[Box]]:
    """Each sample's detections at the lowest candidate threshold (tiled as in counting)."""
    return [detector.detect_resized(Image.fromarray(s.image), LOW) for s in samples]


def _entries(detections: Sequence[list[Box]], thresholds: Sequence[dict[str, float]]) -> list[dict[str, Any]]:
    """counts.json-like entries of each photo's detections at its own thresholds."""
    entries = []
    for boxes, chosen in zip(detections, thresholds):
        kept = [b for b in boxes if b.score >= chosen[b.label]]
        entries.append({"boxes": [{"label": b.label, "score": b.score, "x1": b.x1, "y1": b.y1, "x2": b.x2, "y2": b.y2}
                                  for b in kept],
                        "counts": {label: sum(b.label == label for b in kept) for label in LABELS}})
    return entries


def photo_figures(detections: Sequence[list[Box]], samples: Sequence[Sample],
                  thresholds: Sequence[dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per class: count accuracy at each photo's ``thresholds``, AP@0.5 of all detections, labelled and counted cells."""
    truths = [[(LABELS[int(c)], *map(float, b)) for b, c in zip(s.boxes, s.labels)] for s in samples]
    counts = evaluate_counts(_entries(detections, thresholds), truths, LABELS)
    ap = coco_ap50(_entries(detections, [dict.fromkeys(LABELS, 0.0)] * len(samples)), truths, LABELS)
    return {label: {"count_accuracy": counts[label]["count_accuracy"], "ap50": ap[label],
                    "labelled": counts[label]["annotated"], "counted": counts[label]["counted"]} for label in LABELS}


def _chosen(detections: Sequence[list[Box]], samples: Sequence[Sample], kept: Sequence[str],
            original: dict[str, float]) -> dict[str, float]:
    """Per class, the threshold of lowest mean per-photo count error on these detections; among equally good
    ones (a few photos often leave a wide range) the middle one. The kept classes keep the original's."""
    rows = {t: select_thresholds(detections, samples, "count", [t]) for t in CANDIDATE_THRESHOLDS}
    chosen = {}
    for label in LABELS:
        best = min(row[label]["mae"] for row in rows.values())
        tied = [t for t, row in rows.items() if row[label]["mae"] <= best + 1e-12]
        chosen[label] = original[label] if label in kept else tied[len(tied) // 2]
    return chosen


def cross_validate(base: LearnedDetector, samples: Sequence[Sample], folds: Sequence[int], kept: Sequence[str],
                   options: AdaptOptions) -> dict[str, Any]:
    """Out-of-fold detections of models fine-tuned without each fold; thresholds and figures from them."""
    original = dict(zip(LABELS, base.thresholds))
    detections: list[list[Box]] = [[] for _ in samples]
    for fold in sorted(set(folds)):
        train = [s for s, f in zip(samples, folds) if f != fold]
        held = [i for i, f in enumerate(folds) if f == fold]
        tuned = LearnedDetector(fine_tune(base.model, train, options), base.settings, base.mean, base.std)
        for i, boxes in zip(held, _detect_all(tuned, [samples[i] for i in held])):
            detections[i] = boxes
        logger.info("fold %d of %d: tuned on %d photos, detected %d", fold + 1, len(set(folds)), len(train), len(held))
    nested = {}
    for fold in set(folds):
        others = [i for i, f in enumerate(folds) if f != fold]
        nested[fold] = _chosen([detections[i] for i in others], [samples[i] for i in others], kept, original)
    figures = photo_figures(detections, samples, [nested[f] for f in folds])
    return {"thresholds": _chosen(detections, samples, kept, original), "figures": figures,
            "original": photo_figures(_detect_all(base, samples), samples, [original] * len(samples))}


def worse_than_original(validated: dict[str, Any], kept: Sequence[str]) -> dict[str, str]:
    """The labelled classes whose cross-validated count accuracy is not above the original detector's on the same
    photos (at its own thresholds), with the reason: adapting would not help them, so the original keeps them."""
    worse = {}
    for label in LABELS:
        adapted, original = validated["figures"][label]["count_accuracy"], validated["original"][label]["count_accuracy"]
        if label not in kept and adapted is not None and original is not None and adapted <= original:
            worse[label] = (f"cross-validated count accuracy {100 * adapted:.1f} %, not above the original's "
                            f"{100 * original:.1f} % on the same photos")
    return worse


def _final_model(base_model: CenterNet, tuned: CenterNet, kept: Sequence[str], shared_head: bool):
    """(model to save, its registry name, model kwargs): the tuned network, beside the original when classes are kept."""
    kwargs = {"shared_head": True} if shared_head else {}
    if not kept:
        return tuned, CENTERNET, kwargs
    model = KeptClassesCenterNet(len(LABELS), [LABELS.index(k) for k in kept], shared_head=shared_head)
    model.adapted.load_state_dict(tuned.state_dict())
    model.original.load_state_dict(base_model.state_dict())
    return model, KEPT_MODEL, {**kwargs, "kept": ",".join(kept)}


def _check_output(output: Path, overwrite: bool) -> None:
    if output.suffix != ".safetensors":
        raise ConfigError(f"--output must name a .safetensors file, got {output}")
    refuse_to_replace(output, overwrite)


def _base(detector: str | Path) -> tuple[Path, dict[str, Any], LearnedDetector]:
    path, meta, settings = read_detector(detector)
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint.model, CenterNet):
        raise CheckpointError(f"{path}: only a plain CenterNet detector can be adapted (this is {meta['model_name']}); "
                              "adapt the detector it came from with all of the lab's photos")
    config = checkpoint.data_config
    return path, meta, LearnedDetector(checkpoint.model, settings, config.mean, config.std, str(path))


def _lab_name(lab: str, stored: bool = False) -> str:
    """``lab`` by the one rule for a new lab's name or, ``stored``, as the store may hold it (a name kept before the
    rule is still looked up), and not empty: an adapted detector names its lab."""
    lab = look_up_lab(lab) if stored else check_lab(lab)
    if not lab:
        raise ConfigError("--lab must name the lab whose photos these are")
    return lab


def adapt_from_store(store: Store, output: str | Path, *, lab: str, actor: str, overwrite: bool = False,
                     **options: Any) -> dict[str, Any]:
    """:func:`adapt_detector` on the reviewed and signed samples of ``lab`` in ``store`` (any name the store may
    hold, one kept before the lab-name rule too); each sample used keeps an ``adapt_detector`` entry (by ``actor``)
    in its audit trail."""
    lab = _lab_name(lab, stored=True)
    _check_output(Path(output), overwrite)
    reviewed = from_store(store, lab)
    result = _adapt(reviewed, Path(output), lab, **options)
    used = {p["name"] for p in result["photos"]}
    reviewed.samples = {sample: kept for sample, names in reviewed.samples.items()
                        if (kept := [n for n in names if f"{sample}/{n}" in used])}
    try:
        record_use(store, reviewed, actor, {"name": Path(output).name, "sha256": file_sha256(output), "lab": lab,
                                            "kept_classes": result["kept_classes"]})
    except BaseException:
        Path(output).unlink(missing_ok=True)  # a detector whose use the audit trail does not hold is not kept
        Path(output).with_suffix(".json").unlink(missing_ok=True)
        raise
    return result


def adapt_detector(photos: str | Path | ReviewedPhotos, output: str | Path, *, lab: str,
                   detector: str | Path = "smear-detector", folds: int = 3, options: AdaptOptions = AdaptOptions(),
                   keep_if_worse: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Fine-tune ``detector`` on the reviewed photos ``photos`` (a folder of labelled photos, a reviewed sample
    folder, or photos read from the store) and write the adapted checkpoint to ``output``;
    ``keep_if_worse``: a class that adapting did not improve in cross-validation keeps the original's network."""
    output = Path(output)
    _check_output(output, overwrite)
    return _adapt(photos, output, _lab_name(lab), detector=detector, folds=folds, options=options,
                  keep_if_worse=keep_if_worse)


def _adapt(photos: str | Path | ReviewedPhotos, output: Path, lab: str, *, detector: str | Path = "smear-detector",
           folds: int = 3, options: AdaptOptions = AdaptOptions(), keep_if_worse: bool = True) -> dict[str, Any]:
    """:func:`adapt_detector` once ``output`` and the lab's name ``lab`` are checked."""
    started = time.monotonic()
    reviewed = photos if isinstance(photos, ReviewedPhotos) else from_folder(photos)
    found, skipped, where = reviewed.photos, list(reviewed.skipped), reviewed.where
    base_path, base_meta, base = _base(detector)
    samples: list[LabSample] = []
    for photo in found:
        try:
            samples.append(_lab_sample(photo, base))
        except (ImageError, DataError) as exc:
            skipped.append((photo.name, str(exc)))
    if len(samples) < 2:
        raise DataError(f"{where}: {len(samples)} usable labelled photo(s); adapting needs at least 2 "
                        f"(reviewed photos: VOC .xml or YOLO .txt labels beside them, or a reviewed sample)")
    present = {LABELS[int(c)] for s in samples for c in s.sample.labels}
    kept = [label for label in LABELS if label not in present]
    if len(kept) == len(LABELS):
        raise DataError(f"{where}: the photos' labels hold no boxes; adapting needs reviewed cells")
    options = replace(options, crop=options.crop or base.settings.input_size)
    assignment = fold_of(len(samples), min(folds, len(samples)), options.seed)
    plain = [s.sample for s in samples]
    validated = cross_validate(base, plain, assignment, kept, options)
    reasons = {label: "no labelled example among the photos" for label in kept}
    if keep_if_worse:
        reasons.update(worse_than_original(validated, kept))
    kept = [label for label in LABELS if label in reasons]
    if len(kept) == len(LABELS):
        raise DataError(f"{where}: adapting did not beat the original detector on any class in cross-validation "
                        f"({'; '.join(f'{k}: {v}' for k, v in reasons.items())}); keep using the original")
    thresholds = {label: base.settings.thresholds[label] if label in kept else validated["thresholds"][label]
                  for label in LABELS}
    tuned = fine_tune(base.model, plain, options)
    shared_head = bool(base_meta.get("model_kwargs", {}).get("shared_head"))
    model, model_name, kwargs = _final_model(base.model, tuned, kept, shared_head)
    seconds = time.monotonic() - started
    adapted = {
        "format": ADAPTED_FORMAT, "lab": lab,
        "from": {"detector": base_path.name, "sha256": file_sha256(base_path),
                 "thresholds": dict(zip(LABELS, base.thresholds))},
        "photos": [{"name": s.photo.name, "sha256": s.photo.sha256, "scale_from": s.scale_from,
                    "fold": f} for s, f in zip(samples, assignment)],
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
        "kept_classes": kept, "kept_because": reasons, "folds": max(assignment) + 1, "options": options.to_dict(),
        "cross_validated": validated["figures"], "original_on_these_photos": validated["original"],
        "seconds": round(seconds, 1),
    }
    section = {**base.settings.model_dump(), "thresholds": thresholds,
               "thresholds_chosen_on": f"{adapted['folds']}-fold cross-validation on the lab's photos",
               "adapted": adapted}
    meta = CheckpointMeta(model_name=model_name, data_config=base.model.data_config, model_kwargs=kwargs,
                          train_config={"adapted_from": base_path.name, **options.to_dict()},
                          metrics={"n_photos": len(samples)}, extra={"detector": section})
    save_checkpoint(output, model, meta)
    return {"checkpoint": str(output), **adapted}

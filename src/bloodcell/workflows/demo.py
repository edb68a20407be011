"""The main job (``make demo``): check, split and summarise PBC, evaluate the bundled model on
the frozen test split, and classify a few untouched original images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bloodcell.data.check import check_dataset
from bloodcell.data.locate import dataset_root, find_dataset_root
from bloodcell.data.manifest import read_manifest
from bloodcell.data.split import make_split
from bloodcell.data.stats import class_counts, write_stats_png
from bloodcell.errors import BloodcellError, DataError
from bloodcell.data.inputs import collect_inputs
from bloodcell.inference.records import write_records
from bloodcell.inference.predictor import load
from bloodcell.resources import manifest_path
from bloodcell.workflows.evaluate import evaluate, write_report
from bloodcell.workflows.robustness import originals_of_split
from bloodcell.writing import write_json

#: The frozen split every committed figure uses (shipped with the package).
FROZEN_MANIFEST = manifest_path("pbc-seed0")


@dataclass
class DemoResult:
    """What the demo produced: named output files and one-line findings."""

    out: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)


def run_demo(out: str | Path, data_root: str | Path | None = None, manifest: str | Path | None = None,
             limit: int | None = None) -> DemoResult:
    """Run every step; a step that cannot run (e.g. no bundled model) is reported, not fatal."""
    out = Path(out)
    frozen = manifest_path(manifest or FROZEN_MANIFEST)
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out=out)
    root = dataset_root("pbc", data_root)

    report = check_dataset("pbc", data_root)
    result.outputs["integrity report"] = _write_json(out / "check.json", report)
    result.findings.append(
        f"integrity: {report['files']} files, {len(report['unreadable'])} unreadable, "
        f"{len(report['duplicate_groups'])} duplicate groups, {len(report['blurry'])} blurry"
    )

    split = make_split("pbc", out / "split.csv", ratios="0.7,0.15,0.15", seed=0, data_root=data_root)
    result.outputs["split manifest"] = out / "split.csv"
    same = split.manifest.sha256 == read_manifest(frozen).sha256
    result.findings.append(
        f"split: {'identical to' if same else 'DIFFERENT from'} the frozen manifest {frozen.name}"
        + ("" if same else " (this copy of PBC differs from the one the manifest was made on)")
    )

    _, counts, samples = class_counts("pbc", data_root, frozen)
    result.outputs["class balance and samples"] = write_stats_png(root, counts, samples, out / "stats.png", "PBC")

    try:
        result.outputs.update(_evaluate_bundled(out, frozen, data_root, limit, result.findings))
        result.outputs["predictions"] = _classify_originals(out, frozen, data_root, result.findings)
    except BloodcellError as exc:
        result.findings.append(f"model steps skipped: {exc}")
    return result


def _evaluate_bundled(out: Path, manifest: Path, data_root, limit: int | None, findings: list[str]) -> dict[str, Path]:
    evaluation = evaluate("pbc8", dataset="pbc", manifest=manifest, split="test", data_root=data_root, limit=limit)
    files = write_report(evaluation, out / "evaluation")
    metrics = evaluation.result["metrics"]
    findings.append(
        f"bundled model on the PBC test split: accuracy {metrics['accuracy']:.4f}, "
        f"macro-F1 {metrics['macro']['f1']:.4f}, ECE {metrics['calibration']['ece']:.4f}"
    )
    return {"evaluation report": files["html"]}


def _classify_originals(out: Path, manifest: Path, data_root, findings: list[str]) -> Path:
    """Classify the untouched originals of test-split images (the others were seen in training)."""
    originals = find_dataset_root("pbc-originals-sample", data_root)
    if originals is None:
        raise DataError("the untouched PBC originals sample is not available; nothing to classify")
    paths = collect_inputs([originals]).paths
    keep, _ = originals_of_split(paths, originals, read_manifest(manifest), "test")
    paths = [paths[i] for i in keep]
    if not paths:
        raise DataError(f"no image of {originals} is an original of a test image of {manifest}; nothing to classify")
    predictions = load().predict(paths, refer_below=0.8)
    records = [p.to_record() for p in predictions]
    right = sum(Path(p.path).parent.name == p.label for p in predictions if p.label)
    findings.append(f"classified the {len(paths)} untouched originals of test images: {right} match their folder label")
    return write_records(records, out / "predictions.csv")


def _write_json(path: Path, data) -> Path:
    return write_json(path, data, default=str)

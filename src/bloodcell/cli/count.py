"""``bloodcell count``: smear photos -> counts.json, annotated PNGs and a differential report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from bloodcell.errors import ConfigError, DataError


def load_classifier_or_reason(name: str | None):
    """(classifier, None) or (None, reason) when the model is not installed/loadable."""
    from bloodcell.errors import CheckpointError, WeightsUnavailableError
    from bloodcell.inference.predictor import load

    try:
        return load(name, num_threads=1), None
    except (WeightsUnavailableError, CheckpointError) as exc:
        return None, str(exc)


def count(
    paths: list[str] = typer.Argument(..., help="Smear photos: files, folders (recursive) or glob patterns."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for counts.json, annotated/*.png and report.md."),
    sample_id: str = typer.Option("sample", "--sample-id", help="Sample name used in the report."),
    classifier: Optional[str] = typer.Option(None, "--classifier", help="Bundled model name or checkpoint for the white-cell types; default: the bundled model."),
    detector: str = typer.Option("centernet", "--detector", help="Cell detector: centernet (the bundled learned detector), classical, a detector checkpoint PATH.safetensors, or hybrid:PATH.safetensors (learned RBC/platelets + classical WBC)."),
    typing_head: Optional[Path] = typer.Option(None, "--typing-head", help="A white-cell typing head fitted on your smears for this classifier (python -m bloodcell.smear.wbc_typing CHECKPOINT --save-head FILE)."),
    evaluate: bool = typer.Option(False, "--evaluate", help="Compare with VOC annotations and write evaluation.json."),
    annotations: Optional[Path] = typer.Option(None, "--annotations", help="Folder of <image stem>.xml VOC files (default: ../Annotations next to the images)."),
) -> None:
    """Count RBC, WBC and platelets on smear photos and report the white-cell differential."""
    from bloodcell.inference.files import collect_image_paths
    from bloodcell.smear.counting import count_smears
    from bloodcell.smear.detectors import resolve_detector
    from bloodcell.smear.io import write_outputs
    from bloodcell.smear.typing_head import adapt

    if output.suffix.lower() in (".json", ".md", ".png", ".csv") or output.is_file():
        raise ConfigError(f"{output}: --output is a folder (counts.json, report.md and annotated/ are written inside it)")
    resolve_detector(detector)
    files = collect_image_paths(paths)
    model, reason = load_classifier_or_reason(classifier)
    if typing_head is not None and model is not None:
        model = adapt(model, typing_head)
    doc = count_smears([str(p) for p in files], classifier=model, detector=detector, typing_unavailable=reason,
                       progress=True)
    counts_path = write_outputs(doc, output, sample_id)
    s = doc["sample"]["counts"]
    typer.echo(f"{len(doc['images'])} images counted ({len(doc['errors'])} skipped): RBC {s['RBC']}, "
               f"WBC {s['WBC']}, Platelets {s['Platelets']} -> {counts_path}")
    if reason:
        typer.echo(f"white-cell types unavailable: {reason}")
    if not doc["images"]:
        typer.echo("no image could be counted; the skipped files and reasons are in the report", err=True)
        raise typer.Exit(1)
    if evaluate:
        _evaluate(doc, annotations, output)


def _evaluate(doc: dict, annotations: Path | None, output: Path) -> None:
    from bloodcell.smear.evaluation import evaluate_counts
    from bloodcell.smear.io import voc_boxes

    entries, truths = [], []
    for entry in doc["images"]:
        image = Path(entry["path"])
        folder = annotations or image.parent.parent / "Annotations"
        xml = folder / f"{image.stem}.xml"
        if not xml.is_file():
            raise DataError(f"{xml}: no annotation for {image.name} (pass --annotations DIR)")
        entries.append(entry)
        truths.append(voc_boxes(xml))
    result = evaluate_counts(entries, truths)
    (output / "evaluation.json").write_text(json.dumps(result, indent=2))
    for label in ("RBC", "WBC", "Platelets"):
        r = {k: "n/a" if v is None else f"{v:.3f}" for k, v in result[label].items()}
        typer.echo(f"{label}: AP50 {r['ap50']}, count accuracy {r['count_accuracy']}, "
                   f"MAE {r['mae']}, exact {r['exact_fraction']}")

"""``bloodcell evaluate``: score a checkpoint on a manifest split or an external folder, write the report.

A ``folder`` dataset has no splits: all of its images are test images. The report folder holds
``metrics.json``, ``report.md``, ``report.html`` (self-contained), ``predictions.csv`` and
``figures/*.png``; it is checked before any image is scored, and the predictions are written
before the figures, so an output problem never costs the scoring.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from bloodcell.data.items import EvalItems, folder_items, manifest_items
from bloodcell.errors import ConfigError, OutputError
from bloodcell.evaluation.evaluate import (
    TEST_LABEL,
    Evaluation,
    build_evaluation,
    split_label,
)
from bloodcell.evaluation.label_map import read_label_map, resolve_label_map
from bloodcell.evaluation.scoring import ScoringModel, load_scoring_model, score_paths
from bloodcell.outputs import check_output_folder
from bloodcell.report import evaluation_figures, render_html, render_markdown
from bloodcell.writing import atomic_file, name_text, write_text


def _default_taxonomy(model: ScoringModel) -> str:
    train_config = model.meta.get("train_config")
    named = model.meta.get("taxonomy") or (train_config.get("taxonomy") if isinstance(train_config, dict) else None)
    return named if isinstance(named, str) else "pbc8"


def collect_items(model: ScoringModel, dataset: str, manifest, split: str, taxonomy: str | None, data_root,
                  limit: int | None, check_files: bool = True) -> EvalItems:
    """The labelled images to score: a manifest split, or a whole ``root/<class>/<image>`` folder."""
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    if manifest is not None:
        return manifest_items(manifest, split, taxonomy or _default_taxonomy(model), data_root,
                              dataset=None if dataset == "folder" else dataset, limit=limit, check_files=check_files)
    if dataset != "folder":
        raise ConfigError(f"--dataset {dataset} needs --manifest FILE (see 'bloodcell data split'); "
                          "use --dataset folder --data-root DIR for a plain root/<class>/<image> folder")
    if split != "test":
        raise ConfigError("a folder dataset has no splits: all of its images are test images (drop --split)")
    return folder_items(data_root, limit=limit)


def evaluate(checkpoint: str | Path, *, dataset: str = "pbc", manifest: str | Path | None = None, split: str = "test",
             taxonomy: str | None = None, data_root: str | Path | None = None, label_map: str | Path | None = None,
             tta: bool = False, limit: int | None = None, allow_non_test: bool = False, batch_size: int = 32,
             n_boot: int = 1000, seed: int = 0, model: ScoringModel | None = None,
             check_files: bool = True, engine: str = "torch", threads: int | None = None) -> Evaluation:
    """Score ``checkpoint`` (a bundled name or a file; ``model`` may pass it already loaded) on the chosen images,
    a torch checkpoint through ``engine`` (``threads``: onnx batches at once, see :func:`~bloodcell.inference.predictor.load`)."""
    label = split_label(split, allow_non_test)
    model = model or load_scoring_model(checkpoint, engine=engine, num_threads=threads)
    items = collect_items(model, dataset, manifest, split, taxonomy, data_root, limit, check_files)
    if dataset == "folder" and manifest is None:
        label = f"{TEST_LABEL} (external dataset)"
    mapping, map_notes = resolve_label_map(items.class_names, model.class_names,
                                           read_label_map(label_map) if label_map else None)
    notes = list(items.notes) + map_notes
    if limit is not None:
        label = f"{label}, SUBSET (--limit {limit}: a quick look)"
        notes.append(f"only a stratified subset of at most {limit} images was scored (--limit): a quick look, "
                     "not the full result")
    if tta and model.kind != "torch":
        notes.append("test-time augmentation applies to torch models only; ignored for this classical pipeline")
        tta = False
    if engine != "torch" and model.kind != "torch":
        notes.append(f"the {engine} engine applies to torch checkpoints only; ignored for this classical pipeline")
    trained_on = model.meta.get("manifest_sha256")
    if items.manifest_sha256 and isinstance(trained_on, str) and trained_on != items.manifest_sha256:
        notes.append(f"WARNING: the checkpoint was trained with another manifest (sha256 {trained_on[:12]}…); "
                     "its training images may be in this split")
    scores = score_paths(model, items.paths, tta=tta, batch_size=batch_size,
                         description=f"evaluating {len(items.paths)} images")
    provenance = {"checkpoint": Path(str(checkpoint)).name, "manifest": Path(items.manifest).name if items.manifest else None,
                  "data_root": items.root.name if items.root else None,
                  "label_map": Path(label_map).name if label_map else None, "tta": tta, "limit": limit,
                  "engine": model.model.engine if model.kind == "torch" else None}
    return build_evaluation(model, items, scores, mapping, label=label, notes=notes, provenance=provenance,
                            n_boot=n_boot, seed=seed)


def write_report(evaluation: Evaluation, out: str | Path) -> dict[str, Path]:
    """Write predictions.csv, metrics.json, report.md, report.html and figures/*.png into ``out``."""
    out = check_output_folder(out)
    files = {"predictions": out / "predictions.csv", "metrics": out / "metrics.json",
             "markdown": out / "report.md", "html": out / "report.html"}
    written: list[str] = []
    try:
        with atomic_file(files["predictions"]) as handle:  # each file whole or not at all
            fields = ["path", "dataset_label", "true", "predicted", "confidence", "correct"]
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows({**row, "path": name_text(str(row["path"]))} for row in evaluation.predictions)
        written.append(files["predictions"].name)
        result = evaluation.result
        write_text(files["metrics"], json.dumps(result, indent=2, allow_nan=False, ensure_ascii=False) + "\n")
        written.append(files["metrics"].name)
        figure_dir = out / "figures"
        figure_dir.mkdir(exist_ok=True)
        figures = evaluation_figures(result["metrics"])
        figure_files = {}
        for key, (title, png) in figures.items():
            with atomic_file(figure_dir / f"{key}.png", "wb") as handle:
                handle.write(png)
            figure_files[key] = (title, f"figures/{key}.png")
        written.append("figures/")
        write_text(files["markdown"], render_markdown(result, figure_files))
        written.append(files["markdown"].name)
        write_text(files["html"], render_html(result, figures, evaluation.gallery))
    except OutputError as exc:
        kept = f"{out} holds {', '.join(written)} whole" if written else f"nothing of the report is in {out}"
        raise OutputError(f"{exc}; {kept}, not the rest of the report: make room and run evaluate again") from None
    return files

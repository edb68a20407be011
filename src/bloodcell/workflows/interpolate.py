"""``bloodcell interpolate``: write the weight-space mix of two stages of one model (WiSE-FT).

The mix gets its own temperature, fitted on the validation split of the manifest the stages
were trained with; an out-of-distribution guard is not carried over (its features changed):
run ``bloodcell calibrate-ood`` on the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bloodcell.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from bloodcell.data.items import manifest_items
from bloodcell.data.manifest import read_manifest
from bloodcell.errors import ConfigError, DataError
from bloodcell.evaluation.scoring import ScoringModel, score_paths
from bloodcell.inference.predictor import Classifier
from bloodcell.metrics.calibration import fit_temperature, nll
from bloodcell.provenance import file_sha256
from bloodcell.train.interpolate import mix_state_dicts

#: Metadata keys of the tuned stage that describe the mix as well (the guard is left behind).
_KEPT_KEYS = ("manifest_sha256", "dataset", "taxonomy", "extra_train_sha256", "init_from_sha256")


def _validation_logits(checkpoint, manifest, data_root, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw logits and true class indices of the manifest's validation split under ``checkpoint``'s model."""
    taxonomy = checkpoint.meta.get("taxonomy") or "pbc8"
    items = manifest_items(manifest, "val", taxonomy, data_root)
    classifier = Classifier.from_checkpoint(checkpoint, use_ood=False)
    model = ScoringModel("torch", classifier, checkpoint.meta["model_name"], checkpoint.class_names, 1.0,
                         checkpoint.meta, checkpoint.data_config.input_size)
    scores = score_paths(model, items.paths, batch_size=batch_size,
                         description=f"validating the mix on {len(items.paths)} images")
    index = {name: i for i, name in enumerate(checkpoint.class_names)}
    unknown = sorted(set(items.labels) - set(index))
    if unknown:
        raise DataError(f"{manifest}: validation labels {', '.join(unknown)} are not classes of the model")
    return scores.logits[0], np.asarray([index[items.labels[i]] for i in scores.indices], dtype=np.int64)


def interpolate_checkpoints(base: str | Path, tuned: str | Path, alpha: float, out: str | Path, *,
                            manifest: str | Path, data_root: str | Path | None = None,
                            batch_size: int = 64) -> tuple[Path, dict[str, Any]]:
    """Write the ``alpha`` mix of ``base`` and ``tuned`` (checkpoint paths or bundled names) to ``out`` with
    a validation-fitted temperature; returns the path and the validation metrics."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be between 0 (base) and 1 (tuned), got {alpha}")
    first, second = load_checkpoint(base), load_checkpoint(tuned)
    for field in ("model_name", "class_names", "data_config", "model_kwargs"):
        if first.meta.get(field) != second.meta.get(field):
            raise ConfigError(f"{base} and {tuned} differ in {field}; only two stages of one model can be mixed")
    if second.meta.get("manifest_sha256") != read_manifest(manifest).sha256:
        raise ConfigError(f"{tuned} was trained with another manifest; pass that one, so the temperature is "
                          "fitted on its validation split")
    second.model.load_state_dict(mix_state_dicts(first.model.state_dict(), second.model.state_dict(), alpha))
    logits, labels = _validation_logits(second, manifest, data_root, batch_size)
    temperature = fit_temperature(logits, labels)
    metrics = {"val_acc": float((logits.argmax(axis=1) == labels).mean()),
               "val_nll_calibrated": nll(logits, labels, temperature), "n_val": int(len(labels))}
    extra = {key: second.meta[key] for key in _KEPT_KEYS if key in second.meta}
    extra["interpolation"] = {"base": Path(str(base)).name, "base_sha256": file_sha256(first.path),
                              "tuned": Path(str(tuned)).name, "tuned_sha256": file_sha256(second.path), "alpha": alpha}
    meta = CheckpointMeta(model_name=second.meta["model_name"], data_config=second.data_config,
                          model_kwargs=second.meta.get("model_kwargs", {}),
                          train_config=second.meta.get("train_config", {}), metrics=metrics,
                          temperature=temperature, extra=extra)
    return save_checkpoint(out, second.model, meta), metrics

"""Weight-space interpolation between two stages of one model (WiSE-FT, Wortsman et al. 2022).

A short fine-tuning stage on the home distribution (``tuned``) usually gains accuracy there
and loses some robustness the earlier, more heavily augmented stage (``base``) had. Both start
from the same weights, so their straight-line mix ``(1 - alpha) * base + alpha * tuned`` stays a
good model and often keeps most of both. The mix gets its own temperature, fitted on the
validation split of the manifest the stages were trained with; an out-of-distribution guard is
not carried over (its features changed): run ``bloodcell calibrate-ood`` on the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bloodcell.checkpoint import CheckpointMeta, file_sha256, load_checkpoint, save_checkpoint
from bloodcell.errors import ConfigError, DataError

#: Metadata keys of the tuned stage that describe the mix as well (the guard is left behind).
_KEPT_KEYS = ("manifest_sha256", "dataset", "taxonomy", "extra_train_sha256", "init_from_sha256")


def mix_state_dicts(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                    alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * base + alpha * tuned`` for floating tensors; counters are taken from ``tuned``."""
    if base.keys() != tuned.keys():
        raise ConfigError("the two checkpoints have different layers")
    mixed = {}
    for key, value in tuned.items():
        if value.shape != base[key].shape:
            raise ConfigError(f"layer {key} has shape {tuple(base[key].shape)} in one checkpoint "
                              f"and {tuple(value.shape)} in the other")
        mixed[key] = torch.lerp(base[key], value, alpha) if value.is_floating_point() else value.clone()
    return mixed


def interpolate_checkpoints(base: str | Path, tuned: str | Path, alpha: float, out: str | Path, *,
                            manifest: str | Path, data_root: str | Path | None = None,
                            batch_size: int = 64) -> tuple[Path, dict[str, Any]]:
    """Write the ``alpha`` mix of ``base`` and ``tuned`` to ``out`` with a validation-fitted temperature.

    ``base`` and ``tuned`` are checkpoint paths or bundled model names. Returns the path and the
    validation metrics (accuracy, calibrated NLL, image count).
    """
    from bloodcell.data.manifest import read_manifest
    from bloodcell.evaluation.inference import score_torch
    from bloodcell.evaluation.items import manifest_items
    from bloodcell.inference.predictor import resolve_model
    from bloodcell.metrics.calibration import fit_temperature, nll

    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be between 0 (base) and 1 (tuned), got {alpha}")
    base, tuned = resolve_model(base), resolve_model(tuned)
    if base.suffix != ".safetensors" or tuned.suffix != ".safetensors":
        raise ConfigError("interpolation needs two .safetensors checkpoints")
    first, second = load_checkpoint(base), load_checkpoint(tuned)
    for field in ("model_name", "class_names", "data_config", "model_kwargs"):
        if first.meta.get(field) != second.meta.get(field):
            raise ConfigError(f"{base} and {tuned} differ in {field}; only two stages of one model can be mixed")
    trained_on = second.meta.get("manifest_sha256")
    if trained_on != read_manifest(manifest).sha256:
        raise ConfigError(f"{tuned} was trained with another manifest; pass that one, so the temperature is "
                          "fitted on its validation split")
    model = second.model
    model.load_state_dict(mix_state_dicts(first.model.state_dict(), model.state_dict(), alpha))

    taxonomy = second.meta.get("taxonomy") or "pbc8"
    items = manifest_items(manifest, "val", taxonomy, data_root)
    scores = score_torch(model, second.data_config, items.paths, batch_size=batch_size,
                         description=f"validating the mix on {len(items.paths)} images")
    index = {name: i for i, name in enumerate(second.class_names)}
    unknown = sorted(set(items.labels) - set(index))
    if unknown:
        raise DataError(f"{manifest}: validation labels {', '.join(unknown)} are not classes of {tuned}")
    labels = np.asarray([index[items.labels[i]] for i in scores.indices], dtype=np.int64)
    logits = scores.logits[0]
    temperature = fit_temperature(logits, labels)
    metrics = {"val_acc": float((logits.argmax(axis=1) == labels).mean()),
               "val_nll_calibrated": nll(logits, labels, temperature), "n_val": int(len(labels))}
    extra = {key: second.meta[key] for key in _KEPT_KEYS if key in second.meta}
    extra["interpolation"] = {"base": str(base), "base_sha256": file_sha256(base),
                              "tuned": str(tuned), "tuned_sha256": file_sha256(tuned), "alpha": alpha}
    meta = CheckpointMeta(model_name=second.meta["model_name"], data_config=second.data_config,
                          model_kwargs=second.meta.get("model_kwargs", {}),
                          train_config=second.meta.get("train_config", {}), metrics=metrics,
                          temperature=temperature, extra=extra)
    return save_checkpoint(out, model, meta), metrics

"""Weight-space interpolation between two stages of one model (WiSE-FT, Wortsman et al. 2022).

A short fine-tuning stage on the home distribution (``tuned``) usually gains accuracy there
and loses some robustness the earlier, more heavily augmented stage (``base``) had. Both start
from the same weights, so their straight-line mix ``(1 - alpha) * base + alpha * tuned`` stays a
good model and often keeps most of both (the job that fits its temperature and writes it is
:mod:`bloodcell.workflows.interpolate`).
"""

from __future__ import annotations

import torch

from bloodcell.errors import ConfigError


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

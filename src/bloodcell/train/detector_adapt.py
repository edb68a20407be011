"""Fine-tuning a trained CenterNet smear detector on a few of a lab's photos, cheaply.

``fine_tune(model, samples, options)`` returns a tuned copy of ``model``: the early backbone
(stem and the first ``freeze_blocks`` blocks) is frozen, batch-norm statistics stay those of the
original training (a few photos cannot estimate them), and AdamW runs ``epochs`` passes of
augmented views (:func:`bloodcell.train.detector.make_batch`) at a small, cosine-decaying learning rate.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch

from bloodcell.errors import ConfigError
from bloodcell.models.centernet import MULTIPLE, CenterNet
from bloodcell.train.detector import Sample, make_batch


@dataclass(frozen=True)
class AdaptOptions:
    """How the detector is fine-tuned on a lab's photos (recorded in the adapted checkpoint)."""

    epochs: int = 20
    lr: float = 5e-4
    weight_decay: float = 1e-4
    batch_size: int = 8
    crop: int | None = None  # None: the detector's own training crop (its input size)
    freeze_blocks: int = 3
    scale_range: tuple[float, float] = (0.85, 1.15)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.lr <= 0.1:
            raise ConfigError(f"the fine-tuning learning rate must be above 0 and at most 0.1, got {self.lr:g}")
        if self.crop is not None and (self.crop < 2 * MULTIPLE or self.crop % MULTIPLE):
            raise ConfigError(f"the crop must be a multiple of {MULTIPLE} of at least {2 * MULTIPLE}, got {self.crop}")
        if not 0 <= self.freeze_blocks <= 7:
            raise ConfigError(f"freeze_blocks counts EfficientNet-Lite0's 7 blocks (0-7), got {self.freeze_blocks}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _freeze_early_backbone(model: CenterNet, blocks: int) -> None:
    frozen = [model.backbone.conv_stem, model.backbone.bn1, *list(model.backbone.blocks)[:blocks]]
    for module in frozen:
        for parameter in module.parameters():
            parameter.requires_grad_(False)


def _train_mode_with_fixed_statistics(model: torch.nn.Module) -> None:
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def fine_tune(model: CenterNet, samples: Sequence[Sample], options: AdaptOptions) -> CenterNet:
    """A copy of ``model`` fine-tuned on ``samples`` (already resized to the detector's scale); ``model`` is untouched."""
    if not isinstance(model, CenterNet):
        raise ConfigError(f"only a CenterNet detector can be adapted, not {type(model).__name__}")
    if not samples:
        raise ConfigError("no photos to fine-tune on")
    crop = options.crop or model.data_config.input_size
    tuned = copy.deepcopy(model).to(memory_format=torch.channels_last)
    _freeze_early_backbone(tuned, options.freeze_blocks)
    parameters = [p for p in tuned.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=options.lr, weight_decay=options.weight_decay)
    steps_per_epoch = math.ceil(len(samples) / options.batch_size)
    total = options.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    mean, std = model.data_config.mean, model.data_config.std
    _train_mode_with_fixed_statistics(tuned)
    torch.manual_seed(options.seed)
    for epoch in range(options.epochs):
        rng = np.random.default_rng([options.seed, epoch])
        order = rng.permutation(len(samples))
        for start in range(0, len(order), options.batch_size):
            batch = [samples[i] for i in order[start:start + options.batch_size]]
            images, boxes, labels = make_batch(batch, crop, rng, mean, std, options.scale_range)
            loss = tuned.loss(images.contiguous(memory_format=torch.channels_last), boxes, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    for parameter in tuned.parameters():
        parameter.requires_grad_(True)
    tuned.data_config = model.data_config
    return tuned.eval()

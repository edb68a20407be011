"""timm backbones: the eight compared in the PBC literature, small modern ones, and any timm name.

Each entry builds ``timm.create_model(timm_name, num_classes=num_classes)`` (through
:func:`bloodcell.models.pretrained.create_timm_model`) and takes its mean, std and
interpolation from timm's ``pretrained_cfg``. The literature backbones keep the input sizes
used in the papers (224, and 299 for Inception-v3); the small modern ones default to 128,
the size that suits 360x363 PBC crops on a CPU. ``create_model(..., input_size=N)``
overrides the size: these CNNs end in global pooling and accept any size (within the
architecture's minimum).
"""

from __future__ import annotations

from functools import partial

import timm
from timm.models import get_pretrained_cfg

from bloodcell.models.pretrained import create_timm_model
from bloodcell.models.registry import ModelEntry, register_model
from bloodcell.transforms import DataConfig

# registry name -> (timm name, default input size)
LITERATURE_BACKBONES = {
    "vgg16": ("vgg16", 224),
    "vgg19": ("vgg19", 224),
    "resnet50": ("resnet50", 224),
    "resnet101": ("resnet101", 224),
    "resnet152": ("resnet152", 224),
    "inception_v3": ("inception_v3", 299),
    "mobilenetv2_100": ("mobilenetv2_100", 224),
    "densenet201": ("densenet201", 224),
}
SMALL_BACKBONES = {
    "efficientnet_lite0": ("efficientnet_lite0", 128),
    "efficientnet_lite1": ("efficientnet_lite1", 128),
    "efficientnet_lite2": ("efficientnet_lite2", 128),
    "mobilenetv3": ("mobilenetv3_large_100", 128),
    "convnext": ("convnext_atto", 128),
    "resnet18": ("resnet18", 128),
}


def _build(timm_name: str, num_classes: int, pretrained=False, input_size: int | None = None, **kwargs):
    cfg = get_pretrained_cfg(timm_name)
    if cfg is not None and cfg.fixed_input_size and input_size is not None:
        kwargs.setdefault("img_size", input_size)
    return create_timm_model(timm_name, num_classes=num_classes, pretrained=pretrained, **kwargs)


def normalisation(timm_name: str) -> dict:
    cfg = get_pretrained_cfg(timm_name)
    if cfg is None:
        return {}
    interpolation = cfg.interpolation if cfg.interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
    return {"mean": tuple(cfg.mean), "std": tuple(cfg.std), "interpolation": interpolation}


def _register(table: dict, tag: str) -> None:
    for name, (timm_name, size) in table.items():
        alias = f" (timm {timm_name})" if timm_name != name else ""
        register_model(
            name,
            input_size=size,
            description=f"timm {tag} backbone{alias}",
            tags=("timm", tag),
            **normalisation(timm_name),
        )(partial(_build, timm_name))


_register(LITERATURE_BACKBONES, "literature")
_register(SMALL_BACKBONES, "small")


def timm_entry(name: str) -> ModelEntry | None:
    """A registry entry for any timm model name (not registered), or None if timm does not know it."""
    if not timm.is_model(name):
        return None
    cfg = get_pretrained_cfg(name)
    size = int(cfg.input_size[-1]) if cfg is not None else 224
    return ModelEntry(
        name=name,
        builder=partial(_build, name),
        data_config=DataConfig(input_size=size, **normalisation(name)),
        description=f"timm model {name}",
        tags=("timm",),
    )

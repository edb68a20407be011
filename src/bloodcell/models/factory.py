"""Building models by name: ``create_model(name, num_classes, pretrained=...)`` builds every model.

Importing this module registers every entry (backbones, paper reproductions, the CenterNet
detector, classical pipelines); any other name is looked up in timm. Every torch model returned
carries a ``data_config`` attribute (a :class:`~bloodcell.transforms.DataConfig`) and ``model_name``.
"""

from __future__ import annotations

from dataclasses import replace

from bloodcell.errors import ConfigError
from bloodcell.models import backbones, centernet, centernet_kept, classical, fcos, papers  # noqa: F401  (they register their entries)
from bloodcell.models.backbones import timm_entry
from bloodcell.models.heads import GATE_FLOORS, GATE_OPTIONS, gate_classifier
from bloodcell.models.registry import ModelEntry, registered, registered_entries


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; timm names get a generic entry on the fly."""
    entry = registered(name) or timm_entry(name)
    if entry is None:
        raise ConfigError(
            f"unknown model {name!r}; run 'bloodcell models list' to see the registered names "
            "(any timm model name is accepted too)"
        )
    return entry


def list_models() -> list[ModelEntry]:
    """All registered entries, sorted by name."""
    return registered_entries()


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool | str = False,
    class_names=None,
    input_size: int | None = None,
    **kwargs,
):
    """Build model ``name`` with ``num_classes`` outputs.

    ``pretrained`` is ``False``, ``True`` (offline weights from an installed package where one
    exists, else timm's download), or a path to a local weights file. ``input_size`` overrides the entry's default.
    A torch classifier also takes the options of :data:`~bloodcell.models.heads.GATE_OPTIONS` and, with them,
    :data:`~bloodcell.models.heads.GATE_FLOORS` (an adapted model's gated last layer,
    :func:`~bloodcell.models.heads.gate_classifier`).
    """
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
    if class_names is not None and len(class_names) != num_classes:
        raise ConfigError(f"{len(class_names)} class names given for {num_classes} classes")
    entry = get_model_entry(name)
    data_config = entry.data_config
    if input_size is not None:
        data_config = replace(data_config, input_size=int(input_size))
    if class_names is not None:
        data_config = data_config.with_classes(class_names)
    gate = {key: kwargs.pop(key) for key in (*GATE_OPTIONS, GATE_FLOORS) if key in kwargs}
    if gate and (entry.kind != "torch" or not set(GATE_OPTIONS) <= set(gate)):
        raise ConfigError(f"{' and '.join(GATE_OPTIONS)} go together (with {GATE_FLOORS} or without), and only with "
                          "a cell classifier")
    model = entry.builder(num_classes=num_classes, pretrained=pretrained, input_size=data_config.input_size, **kwargs)
    if gate:
        gate_classifier(model, num_classes, **gate)
    model.data_config = data_config
    model.model_name = name
    return model

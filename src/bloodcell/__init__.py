"""bloodcell: blood-smear image analysis.

The public API is imported lazily so that ``import bloodcell`` stays cheap (no torch)::

    import bloodcell
    clf = bloodcell.load()                      # the bundled 8-class PBC model
    results = clf.predict(["cell.jpg"], top_k=3, refer_below=0.6)
    counter = bloodcell.load_counter()          # the bundled smear detector and cell classifier
    sample = counter.count(["smear1.jpg", "smear2.jpg"], sample_id="S-17")
    sample.report                               # one differential over the sample's photos
    bloodcell.adapt("pbc8", "my_lab_cells/", "my_lab.safetensors")  # a few labelled cells per class
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bloodcell._version import __version__

__all__ = ["Classifier", "Prediction", "__version__", "adapt", "create_model", "list_models", "load", "load_counter"]

_LAZY = {
    "load": ("bloodcell.inference.predictor", "load"),
    "Classifier": ("bloodcell.inference.predictor", "Classifier"),
    "Prediction": ("bloodcell.inference.predictor", "Prediction"),
    "create_model": ("bloodcell.models.factory", "create_model"),
    "list_models": ("bloodcell.models.factory", "list_models"),
    "load_counter": ("bloodcell.smear.sample_counter", "load_counter"),
    "adapt": ("bloodcell.workflows.adapt", "adapt"),
}

if TYPE_CHECKING:  # pragma: no cover
    from bloodcell.inference.predictor import Classifier, Prediction, load
    from bloodcell.models import create_model, list_models
    from bloodcell.smear.sample_counter import load_counter
    from bloodcell.workflows.adapt import adapt


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bloodcell' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""Bundled model files shipped inside the package (``bloodcell/weights/<name>.safetensors``).

Only the location lives here; the files themselves are trained and added by the maintainers.
"""

from __future__ import annotations

from pathlib import Path

from bloodcell.errors import WeightsUnavailableError

#: Bundled model names and what they classify.
BUNDLED_MODELS = {
    "pbc8": "8 PBC peripheral blood cell classes",
    "pbc11": "11 PBC classes: band/segmented neutrophils and promyelocyte/myelocyte/metamyelocyte",
}
DEFAULT_MODEL = "pbc8"

WEIGHTS_DIR = Path(__file__).resolve().parent


def bundled_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of the bundled checkpoint ``name``; raises WeightsUnavailableError when it is absent."""
    if name not in BUNDLED_MODELS:
        known = ", ".join(sorted(BUNDLED_MODELS))
        raise WeightsUnavailableError(f"no bundled model named {name!r} (bundled models: {known}); pass a checkpoint path instead")
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise WeightsUnavailableError(
            f"the bundled model {name!r} is not installed ({path} is missing): install a bloodcell release "
            "that ships it, or train a checkpoint with 'bloodcell train' and pass its path "
            "(bloodcell.load('model.safetensors') or 'bloodcell predict --model model.safetensors')"
        )
    return path

"""Classical baselines: scikit-learn pipelines (cell features -> scaler -> classifier) registered as ``sk/...``.

``sk/svm``, ``sk/rf``, ``sk/knn``, ``sk/mlp`` take uint8 (N, 128, 128, 3) images; they are
trained by :func:`bloodcell.train.classical.train_classical` and stored as one ``.skops`` file by
:func:`save_classical`. The cell and nucleus masks come from :mod:`bloodcell.segmentation`.
"""

from bloodcell.models.classical import pipelines  # noqa: F401  (registers the sk/... entries)
from bloodcell.models.classical.features import (
    FEATURE_NAMES,
    CellFeatureExtractor,
    image_features,
)
from bloodcell.models.classical.persistence import load_classical, save_classical

__all__ = ["FEATURE_NAMES", "CellFeatureExtractor", "image_features", "load_classical", "save_classical"]

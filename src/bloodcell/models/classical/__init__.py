"""Classical baselines: scikit-learn pipelines (cell features -> scaler -> classifier) registered as ``sk/...``.

``sk/svm``, ``sk/rf``, ``sk/knn``, ``sk/mlp`` take uint8 (N, 128, 128, 3) images; they are
trained with :func:`train_classical` and stored as one ``.skops`` file by :func:`save_classical`.
"""

from bloodcell.models.classical import pipelines  # noqa: F401  (registers the sk/... entries)
from bloodcell.models.classical.features import FEATURE_NAMES, CellFeatureExtractor, image_features
from bloodcell.models.classical.persistence import load_classical, save_classical
from bloodcell.models.classical.segmentation import Segmentation, lobe_count, preprocess, segment
from bloodcell.models.classical.training import train_classical

__all__ = ["FEATURE_NAMES", "CellFeatureExtractor", "Segmentation", "image_features", "load_classical",
           "lobe_count", "preprocess", "save_classical", "segment", "train_classical"]

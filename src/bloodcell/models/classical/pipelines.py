"""The ``sk/...`` registry entries: feature extractor -> StandardScaler -> classifier pipelines."""

from __future__ import annotations

from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from bloodcell.errors import ConfigError
from bloodcell.models.classical.features import CellFeatureExtractor
from bloodcell.models.registry import register_model

INPUT_SIZE = 128
#: Small grids scored on the validation split by ``train_classical`` (classifier parameters).
PARAM_GRIDS: dict[str, list[dict]] = {
    "sk/svm": [{"C": 1.0}, {"C": 10.0}],
    "sk/rf": [{"max_features": "sqrt"}, {"max_features": 0.3}],
    "sk/knn": [{"n_neighbors": 5}, {"n_neighbors": 15}],
    "sk/mlp": [{"alpha": 1e-4}, {"alpha": 1e-2}],
}


def make_pipeline(classifier, n_jobs: int = 1) -> Pipeline:
    """``CellFeatureExtractor -> StandardScaler -> classifier``."""
    return Pipeline([("features", CellFeatureExtractor(n_jobs=n_jobs)), ("scale", StandardScaler()),
                     ("classifier", classifier)])


def _check_pretrained(pretrained) -> None:
    if pretrained:
        raise ConfigError("classical sk/... pipelines have no pretrained weights; train one with "
                          "'bloodcell train --model sk/...' and load its .skops file")


@register_model("sk/svm", input_size=INPUT_SIZE, kind="sklearn", tags=("classical",))
def svm(num_classes: int, pretrained=False, input_size: int = INPUT_SIZE, n_jobs: int = 1, **params):
    """Cell features -> RBF support vector machine (probabilities by Platt scaling, 3-fold)."""
    _check_pretrained(pretrained)
    classifier = SVC(kernel="rbf", class_weight="balanced", random_state=0, **params)
    return make_pipeline(CalibratedClassifierCV(classifier, method="sigmoid", cv=3, ensemble=False), n_jobs)


@register_model("sk/rf", input_size=INPUT_SIZE, kind="sklearn", tags=("classical",))
def random_forest(num_classes: int, pretrained=False, input_size: int = INPUT_SIZE, n_jobs: int = 1, **params):
    """Cell features -> random forest of 300 trees."""
    _check_pretrained(pretrained)
    return make_pipeline(RandomForestClassifier(n_estimators=300, class_weight="balanced", random_state=0,
                                                n_jobs=n_jobs, **params), n_jobs)


@register_model("sk/knn", input_size=INPUT_SIZE, kind="sklearn", tags=("classical",))
def knn(num_classes: int, pretrained=False, input_size: int = INPUT_SIZE, n_jobs: int = 1, **params):
    """Cell features -> k nearest neighbours (distance-weighted)."""
    _check_pretrained(pretrained)
    return make_pipeline(KNeighborsClassifier(weights="distance", **params), n_jobs)


@register_model("sk/mlp", input_size=INPUT_SIZE, kind="sklearn", tags=("classical",))
def mlp(num_classes: int, pretrained=False, input_size: int = INPUT_SIZE, n_jobs: int = 1, **params):
    """Cell features -> multilayer perceptron (one hidden layer of 128 units, Adam)."""
    _check_pretrained(pretrained)
    return make_pipeline(MLPClassifier(hidden_layer_sizes=(128,), max_iter=400,
                                       random_state=0, **params), n_jobs)

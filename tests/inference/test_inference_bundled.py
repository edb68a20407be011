"""The bundled classifiers on real PBC test images: load by name, classes, accuracy, guard."""

from __future__ import annotations

import pytest

from bloodcell.data.manifest import read_manifest
from bloodcell.data.taxonomy import get_taxonomy
from bloodcell.inference.predictor import load
from bloodcell.resources import manifest_path
from bloodcell.weights import WEIGHTS_DIR

MANIFEST = manifest_path("pbc-seed0")


@pytest.mark.parametrize("name, floor", [("pbc8", 0.9), ("pbc11", 0.75)])
def test_bundled_classifier_on_real_test_images(real_data_root, name, floor):
    if not (WEIGHTS_DIR / f"{name}.safetensors").is_file():
        pytest.skip(f"bundled model {name} not trained yet")
    taxonomy = get_taxonomy(name)
    rows = [row for row in read_manifest(MANIFEST).rows_for("test") if taxonomy.index_of(row) is not None]
    picks = {}
    for row in rows:  # the first 4 test images of each class
        picks.setdefault(taxonomy.class_names[taxonomy.index_of(row)], []).append(row)
    sample = [row for chosen in picks.values() for row in chosen[:4]]
    classifier = load(name, engine="onnx")
    assert classifier.class_names == list(taxonomy.class_names) and classifier.guard is not None
    results = classifier.predict([str(real_data_root / "pbc" / row.path) for row in sample])
    truth = [taxonomy.class_names[taxonomy.index_of(row)] for row in sample]
    assert len(sample) == 4 * len(taxonomy.class_names) and all(r.error is None for r in results)
    assert sum(r.label == t for r, t in zip(results, truth)) >= floor * len(sample)
    assert sum(bool(r.referred) for r in results) <= 0.1 * len(sample)  # real cells pass the guard

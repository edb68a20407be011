"""LayerCAM explanations: overlay PNG at model size, non-constant heatmap on the cell."""

from __future__ import annotations

import numpy as np
from inference_synthetic import SIZE, synthetic_cells
from PIL import Image

from bloodcell.inference.explain import gradcam


def test_gradcam_overlay_png_has_model_size_and_varies(classifier, tmp_path):
    image = synthetic_cells(1, seed=21)[0][0]
    big = Image.fromarray(image).resize((150, 150))
    out = classifier.explain(big, tmp_path / "cam" / "cell.png")
    overlay = Image.open(out)
    assert overlay.format == "PNG" and overlay.size == (SIZE, SIZE) and overlay.mode == "RGB"
    heatmap, index = gradcam(classifier.model, classifier.preprocess([big]))
    assert heatmap.shape == (SIZE, SIZE) and heatmap.max() == 1.0 and heatmap.std() > 0.05
    assert index == classifier.class_names.index(classifier.predict(big).label)
    assert not np.array_equal(np.asarray(overlay), np.asarray(big.resize((SIZE, SIZE))))

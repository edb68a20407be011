"""LayerCAM explanations: the picture at the crop's own resolution (the crop, then the crop with the heat in colour,
and a colour key), non-constant heatmap on the cell."""

from __future__ import annotations

import numpy as np
from inference_synthetic import SIZE, synthetic_cells
from PIL import Image

from bloodcell.inference.explain import GAP, KEY_HEIGHT, gradcam


def test_gradcam_picture_has_the_crops_own_size_and_varies(classifier, tmp_path):
    image = synthetic_cells(1, seed=21)[0][0]
    big = Image.fromarray(image).resize((150, 150))
    out = classifier.explain(big, tmp_path / "cam" / "cell.png")
    picture = Image.open(out)
    assert picture.format == "PNG" and picture.mode == "RGB"
    assert picture.size == (2 * 150 + GAP, 150 + GAP + KEY_HEIGHT)  # not the model's SIZE: the crop's 150 px
    assert np.array_equal(np.asarray(picture)[:150, :150], np.asarray(big))  # the crop itself, untouched
    overlay = picture.crop((150 + GAP, 0, 300 + GAP, 150))
    heatmap, index = gradcam(classifier.model, classifier.preprocess([big]))
    assert heatmap.shape == (SIZE, SIZE) and heatmap.max() == 1.0 and heatmap.std() > 0.05
    assert index == classifier.class_names.index(classifier.predict(big).label)
    assert not np.array_equal(np.asarray(overlay), np.asarray(big))  # the heat in colour


def test_the_heat_is_a_transparent_colour_overlay_at_the_crops_resolution(classifier, tmp_path):
    from bloodcell.inference.explain import OVERLAY_ALPHA, explanation

    cell = Image.fromarray(synthetic_cells(1, seed=3)[0][0]).resize((360, 363))
    heat = np.zeros((SIZE, SIZE), np.float32)
    heat[SIZE // 4:SIZE // 2, SIZE // 4:SIZE // 2] = 1.0
    picture = np.asarray(explanation(heat, cell, classifier.data_config)).astype(int)
    assert picture.shape[:2] == (360 + GAP + KEY_HEIGHT, 2 * 360 + GAP)  # the centre 360x360 square, as the model saw
    crop = np.asarray(cell)[1:361].astype(int)  # (363 - 360) // 2 = 1 row cut at the top
    shown, blended = picture[:360, :360], picture[:360, 360 + GAP:]
    assert np.array_equal(shown, crop)
    assert np.array_equal(blended[300:, 300:], crop[300:, 300:])  # cold: the crop itself
    hot = blended[120:160, 120:160] - crop[120:160, 120:160]
    assert np.abs(hot).mean() > 20  # hot: coloured, at the crop's resolution (the model's map is SIZE px)
    # transparent, not painted over: the crop shows through with weight 1 - OVERLAY_ALPHA under the hottest colour
    import cv2

    red = cv2.applyColorMap(np.full((1, 1), 255, np.uint8), cv2.COLORMAP_TURBO)[0, 0, ::-1].astype(int)
    expected = (1 - OVERLAY_ALPHA) * crop[130:150, 130:150] + OVERLAY_ALPHA * red
    assert np.abs(blended[130:150, 130:150] - expected).max() <= 2

"""Class activation maps of single-cell crops (LayerCAM at a stride-4 stage), and the overlay PNG.

Method: LayerCAM (Jiang et al., 2021; ``pytorch_grad_cam.LayerCAM``), a Grad-CAM variant that
weights each activation by its own positive gradient of the class score instead of by the
channel's mean gradient, which (unlike Grad-CAM) still localises on early, high-resolution layers.

Target layer: the last *stage* module (a child of an ``nn.Sequential``/``nn.ModuleList`` or of
the model itself, so never a layer inside a block) whose output is a 4D map at least 1/4 of
the input on its shorter side, found by one forward pass. That is ``blocks.1`` (32x32 at 128 px)
for the timm EfficientNets, ``layer1`` for ResNets, the last 32x32 map of VGG block 3 for
khalil2022; it works for any timm CNN and the paper models. Why stride 4, measured on 40 PBC
cells (5 per class, seed 0) with the bundled pbc8 model (EfficientNet-Lite0, 128 px), as the
share of the heat inside the cell's segmentation mask (the mask covers 9% of the image; a
uniform map scores 0.09) and how often the hottest pixel lies on the cell:

* Grad-CAM at the last map (``bn2``, 4x4; the previous code): 0.05, 3%. Every 4x4 position
  sees the whole 128 px image, so position says little about where the evidence is, and the
  bottom-right position was the maximum for all 40 cells, whatever the class.
* Grad-CAM at an 8x8 (``blocks.4``) or 16x16 (``blocks.2``) stage: 0.11 / 0.13, 12% / 15%:
  no longer a fixed corner, but the heat is on the background about as much as a uniform map.
* LayerCAM at ``blocks.1`` (32x32, stride 4), smoothed: 0.34, 90%. Fusing deeper layers
  (``blocks.1+2``: 0.28, 62%) only dilutes it. Of the heat the overlay colours (above
  :data:`OVERLAY_FLOOR`; the faint rest spreads over the whole image), 0.66 lies in the mask,
  more than half for 32 of the 40 cells (the misses: all five platelets, two lymphocytes and
  a neutrophil).

The map is smoothed with a Gaussian of one feature-map cell (4 px at stride 4) so that it
reads as regions rather than speckle, and normalised to [0, 1]. The picture people see
(:func:`explanation`) is drawn at the crop's own resolution, not the model's 128 px: the map is
resized (bicubic) onto the part of the original image the model saw (its framing, then the
centre square or the whole image squashed, as the model's data config says), and shown beside
that image untouched, with a colour key. The overlay keeps the cell's own colours: the colour map
(``turbo``: blue, green, yellow, red) is blended in with an opacity that grows with the heat, so
cold areas are the untouched image and the hottest are red; no contour lines.

Limits: heat on the cell is necessary, not sufficient (a model-free blue-minus-green stain map
puts 0.80 of its weight in the mask). The map says which parts of the cell the class score is
most sensitive to; blanking its hottest 30% of the cell lowers the class probability more than
blanking the coldest 30% (by 0.32 against 0.19 on the same cells), but maps for the top two
classes are much alike (correlation 0.72), so it is a pointer, not the reason for the class.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from bloodcell.transforms import DataConfig, denormalize
from bloodcell.writing import save_image

#: The target layer is the deepest stage whose map is at least input side / TARGET_STRIDE.
TARGET_STRIDE = 4
#: Opacity of the colour map where the heat is 1 (it falls to 0 with the heat).
OVERLAY_ALPHA = 0.55
#: Heat below this fraction of the maximum is not coloured at all.
OVERLAY_FLOOR = 0.15
#: The colour map of the heat (OpenCV's turbo: blue, green, yellow, red).
COLOUR_MAP = cv2.COLORMAP_TURBO
#: Height of the colour key under the pictures, and the gap between them, in pixels at 256 px width.
KEY_HEIGHT, GAP = 14, 6

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _stage_modules(model: nn.Module) -> set[int]:
    """Ids of the model's direct children and of the children of its containers (the stages and blocks)."""
    stages = {id(child) for child in model.children()}
    for module in model.modules():
        if isinstance(module, _CONTAINERS):
            stages.update(id(child) for child in module.children())
    return stages


def _target(model: nn.Module, batch: torch.Tensor, stride: int) -> tuple[nn.Module, tuple[int, int]]:
    """The target layer and the (H, W) of its map; see :func:`find_target_layer`."""
    maps: list[tuple[nn.Module, tuple[int, int]]] = []

    def record(module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] * output.shape[-2] > 1:
            maps.append((module, (int(output.shape[-2]), int(output.shape[-1]))))

    handles = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    try:
        with torch.inference_mode():
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    if not maps:
        raise TypeError(f"{type(model).__name__} has no convolutional feature map for LayerCAM")
    min_side = max(2, math.ceil(min(batch.shape[-2:]) / stride))
    stages = _stage_modules(model)
    for module, size in reversed(maps):
        if id(module) in stages and min(size) >= min_side:
            return module, size
    return maps[-1]  # an input too small for any stage to reach min_side: the last spatial map


def find_target_layer(model: nn.Module, batch: torch.Tensor, stride: int = TARGET_STRIDE) -> nn.Module:
    """The last stage module (in execution order) whose 4D output is at least ``input side / stride``.

    A stage module is a direct child of the model or of an ``nn.Sequential``/``ModuleList``/
    ``ModuleDict`` (for timm CNNs the stages and their blocks, never a convolution inside a
    block). When no stage is that large, the last module with a map larger than 1x1.
    """
    return _target(model, batch, stride)[0]


def gradcam(model: nn.Module, batch: np.ndarray, class_index: int | None = None) -> tuple[np.ndarray, int]:
    """Class activation map (LayerCAM at :func:`find_target_layer`) in [0, 1] at input size (H, W)
    for the first image of a preprocessed batch, and the class used (the top class by default)."""
    from pytorch_grad_cam import (
        LayerCAM,  # imported here: the package pulls in scikit-learn and matplotlib
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(batch[:1], dtype=np.float32))
    layer, (height, width) = _target(model, x, TARGET_STRIDE)
    x.requires_grad_(True)  # gradients reach the layer even when the weights are frozen
    targets = None if class_index is None else [ClassifierOutputTarget(int(class_index))]
    cam = LayerCAM(model=model, target_layers=[layer])
    try:  # not ``with``: BaseCAM.__exit__ swallows IndexError
        with torch.enable_grad():
            raw = cam(x, targets=targets)[0]
        index = int(cam.outputs[0].argmax()) if class_index is None else int(class_index)
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
    heat = np.asarray(raw, dtype=np.float32)
    sigma = max(heat.shape[0] / height, heat.shape[1] / width)  # one feature-map cell, in input pixels
    heat = cv2.GaussianBlur(heat, (0, 0), sigmaX=sigma)
    heat = heat - heat.min()
    peak = float(heat.max())
    return (heat / peak if peak > 0 else heat), index


def _colours(heat: np.ndarray) -> np.ndarray:
    return cv2.applyColorMap(np.uint8(np.round(heat * 255)), COLOUR_MAP)[..., ::-1]


def overlay(heatmap: np.ndarray, image: np.ndarray, alpha: float = OVERLAY_ALPHA,
            floor: float = OVERLAY_FLOOR) -> Image.Image:
    """Blend the :data:`COLOUR_MAP` colours of ``heatmap`` (H, W in [0, 1]) onto an RGB uint8 ``image`` (H, W, 3).

    The colour's opacity rises from 0 at ``floor`` to ``alpha`` at the maximum, so the cell stays
    visible in its own colours where the map is cold.
    """
    heat = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    weight = alpha * np.clip((heat - floor) / (1.0 - floor), 0.0, 1.0)[..., None]
    blended = (1 - weight) * image.astype(np.float32) + weight * _colours(heat).astype(np.float32)
    return Image.fromarray(np.ascontiguousarray(np.clip(blended, 0, 255).round().astype(np.uint8)))


def seen_region(image: Image.Image, data_config: DataConfig) -> Image.Image:
    """The part of ``image`` the model saw, at the image's own resolution: framed as the model frames, then the
    centre square (``resize`` "crop") or all of it (squashed by the model), and at least the model's input size."""
    framed = data_config.prepare(image.convert("RGB"))
    if data_config.resize == "crop":
        side = min(framed.size)
        left, top = (framed.width - side) // 2, (framed.height - side) // 2
        framed = framed.crop((left, top, left + side, top + side))
    scale = data_config.input_size / min(framed.size)
    if scale > 1:  # never smaller than what the model saw
        framed = framed.resize((round(framed.width * scale), round(framed.height * scale)), Image.Resampling.BICUBIC)
    return framed


def explanation(heatmap: np.ndarray, image: Image.Image, data_config: DataConfig) -> Image.Image:
    """The picture of a heat map for people: the region the model saw as it is, beside it the same with the heat
    blended in (:func:`overlay`), at the image's own resolution, and a colour key underneath (cold to hot)."""
    seen = seen_region(image, data_config)
    heat = cv2.resize(np.asarray(heatmap, np.float32), seen.size, interpolation=cv2.INTER_CUBIC)
    blended = overlay(np.clip(heat, 0.0, 1.0), np.asarray(seen))
    unit = max(1, round(seen.width / 256))
    gap, key = GAP * unit, KEY_HEIGHT * unit
    canvas = Image.new("RGB", (2 * seen.width + gap, seen.height + gap + key), (255, 255, 255))
    canvas.paste(seen, (0, 0))
    canvas.paste(blended, (seen.width + gap, 0))
    ramp = np.linspace(OVERLAY_FLOOR, 1.0, seen.width, dtype=np.float32)[None, :].repeat(key, axis=0)
    canvas.paste(Image.fromarray(np.ascontiguousarray(_colours(ramp))), (seen.width + gap, seen.height + gap))
    ImageDraw.Draw(canvas).text((4 * unit, seen.height + gap), "heat: less  ->  more sensitive", fill=(0, 0, 0),
                                font=ImageFont.load_default(size=10 * unit))
    return canvas


def save_gradcam_overlay(model: nn.Module, batch: np.ndarray, data_config: DataConfig, out_path: str | Path,
                         class_index: int | None = None, image: Image.Image | None = None) -> Path:
    """Compute the class activation map of the first image of a preprocessed batch and save its picture
    (:func:`explanation`) as PNG: of ``image`` (the decoded image the batch was made from) at its own resolution,
    or of the batch's pixels when it is not given."""
    heatmap, _ = gradcam(model, batch, class_index)
    if image is None:
        seen = denormalize(torch.from_numpy(batch[0]), data_config).permute(1, 2, 0).numpy()
        image = Image.fromarray(np.uint8(np.round(seen * 255)))
        data_config = replace(data_config, framing="none")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return save_image(explanation(heatmap, image, data_config), out_path)

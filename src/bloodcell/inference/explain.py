"""Grad-CAM (Selvaraju et al., 2017) with forward/backward hooks, and its overlay PNG.

The target layer is found generically: the last module, in execution order, whose output
is a 4D feature map with more than one pixel (for timm CNNs the end of ``forward_features``).
The heatmap is ReLU(sum_c w_c * A_c) with w_c the spatial mean of the class score's
gradient, upsampled to the model's input size; the overlay blends a jet colour map onto the
preprocessed input (the image as the model saw it).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from bloodcell.models.registry import DataConfig
from bloodcell.transforms import denormalize

OVERLAY_ALPHA = 0.45


def find_target_layer(model: nn.Module, batch: torch.Tensor) -> nn.Module:
    """The last module (in execution order) that outputs a 4D map larger than 1x1."""
    order: list[nn.Module] = []

    def record(module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] * output.shape[-2] > 1:
            order.append(module)

    handles = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    try:
        with torch.inference_mode():
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    if not order:
        raise TypeError(f"{type(model).__name__} has no convolutional feature map for Grad-CAM")
    return order[-1]


def gradcam(model: nn.Module, batch: np.ndarray, class_index: int | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM heatmap in [0, 1] at input size (H, W) for the first image, and the class used."""
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(batch[:1], dtype=np.float32))
    layer = find_target_layer(model, x)
    store: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        store["activation"] = output
        output.register_hook(lambda grad: store.__setitem__("gradient", grad))

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(x)
            index = int(logits[0].argmax()) if class_index is None else int(class_index)
            model.zero_grad(set_to_none=True)
            logits[0, index].backward()
    finally:
        handle.remove()
    activation, gradient = store["activation"].detach()[0], store["gradient"].detach()[0]
    weights = gradient.mean(dim=(1, 2))
    cam = torch.relu((weights[:, None, None] * activation).sum(dim=0))
    cam = torch.nn.functional.interpolate(cam[None, None], size=batch.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).numpy(), index


def overlay(heatmap: np.ndarray, image: np.ndarray, alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """Blend a jet-coloured ``heatmap`` (H, W in [0, 1]) onto an RGB uint8 ``image`` (H, W, 3)."""
    colours = cv2.applyColorMap(np.uint8(np.round(heatmap * 255)), cv2.COLORMAP_JET)[..., ::-1]
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return Image.fromarray(np.clip(blended, 0, 255).round().astype(np.uint8))


def save_gradcam_overlay(model: nn.Module, batch: np.ndarray, data_config: DataConfig, out_path: str | Path,
                         class_index: int | None = None) -> Path:
    """Compute Grad-CAM for the first image of a preprocessed batch and save the overlay PNG."""
    heatmap, _ = gradcam(model, batch, class_index)
    seen = denormalize(torch.from_numpy(batch[0]), data_config).permute(1, 2, 0).numpy()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    overlay(heatmap, np.uint8(np.round(seen * 255))).save(out_path, format="PNG")
    return out_path

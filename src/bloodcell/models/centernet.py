"""CenterNet-style smear cell detector: centre heatmaps on EfficientNet-Lite0 features.

Model: EfficientNet-Lite0 (ImageNet weights from the offline package when ``pretrained``)
gives features at strides 4/8/16/32; an FPN-like decoder (1x1 laterals, nearest upsampling,
sums, 3x3 smoothing) fuses them top-down into one stride-4 map. Three heads predict the
centre heatmap of each class (RBC, WBC, Platelets), the box width/height (in stride-4
cells, L1 at centres) and the sub-cell centre offset.

Input: the photo resized to the detector's scale (a fixed red-cell diameter, or for older
checkpoints a longer side of ``input_size``), then padded to a multiple of 32.

Decoding: a 3x3 max-pool keeps local maxima of each class heatmap; a peak above its class
threshold (chosen on the validation split, stored in the checkpoint) becomes a box.

Registered as ``centernet-lite0`` so :func:`bloodcell.checkpoint.load_checkpoint` rebuilds it.
The detector that runs a trained checkpoint on photos (thresholds, scale, tiling) is
:mod:`bloodcell.smear.learned_detector`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from bloodcell.data.boxes import SMEAR_LABELS as LABELS
from bloodcell.data.boxes import Box
from bloodcell.models.backbones import normalisation
from bloodcell.models.pretrained import create_timm_model
from bloodcell.models.registry import register_model

MODEL_NAME = "centernet-lite0"
BACKBONE = "efficientnet_lite0"
STRIDE = 4
MULTIPLE = 32
DEFAULT_INPUT_SIZE = 384
DECODER_CHANNELS = 64
HEATMAP_PRIOR = 0.1
MIN_OVERLAP = 0.7
TOP_K = 256


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _head(channels: int, outputs: int, bias: float = 0.0) -> nn.Sequential:
    head = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, outputs, 1))
    nn.init.constant_(head[-1].bias, bias)
    return head


def _output(channels: int, outputs: int, bias: float = 0.0) -> nn.Conv2d:
    conv = nn.Conv2d(channels, outputs, 1)
    nn.init.constant_(conv.bias, bias)
    return conv


def lite0_features(pretrained: bool | str | Path = False, out_indices: tuple[int, ...] = (1, 2, 3, 4)) -> nn.Module:
    """EfficientNet-Lite0 feature extractor (strides 4, 8, 16, 32).

    timm's ``features_only`` model lacks the classifier head, which the offline weight
    converter matches by position, so the full pretrained model is built and its tensors
    are copied into the feature extractor (same names, strictly).
    """
    features = timm.create_model(BACKBONE, pretrained=False, features_only=True, out_indices=out_indices)
    if pretrained:
        full = create_timm_model(BACKBONE, num_classes=1000, pretrained=pretrained).state_dict()
        features.load_state_dict({k: full[k] for k in features.state_dict()})
    return features


class CenterNet(nn.Module):
    """EfficientNet-Lite0 + FPN-like decoder to stride 4 + heatmap/size/offset heads."""

    def __init__(self, num_classes: int = len(LABELS), pretrained: bool | str | Path = False,
                 channels: int = DECODER_CHANNELS, shared_head: bool = False) -> None:
        super().__init__()
        self.backbone = lite0_features(pretrained)
        self.laterals = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in self.backbone.feature_info.channels())
        self.smooth = nn.ModuleList(_conv_bn_relu(channels, channels) for _ in self.laterals[:-1])
        # shared: one 3x3 convolution feeds the three 1x1 outputs (a third of the heads' cost)
        self.trunk = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)) if shared_head else None
        head = _output if shared_head else _head
        self.heatmap = head(channels, num_classes, bias=-math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))
        self.size = head(channels, 2)
        self.offset = head(channels, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.backbone(x)
        top = self.laterals[-1](feats[-1])
        for level in range(len(feats) - 2, -1, -1):
            top = F.interpolate(top, size=feats[level].shape[-2:], mode="nearest") + self.laterals[level](feats[level])
            top = self.smooth[level](top)
        if self.trunk is not None:
            top = self.trunk(top)
        return {"heatmap": self.heatmap(top), "size": self.size(top), "offset": self.offset(top)}

    def loss(self, images: torch.Tensor, boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> torch.Tensor:
        """Loss of a batch of normalised images with their boxes (N, 4, input pixels) and class indices."""
        size = tuple(images.shape[-2:])
        targets = [encode_targets(b, l, size) for b, l in zip(boxes, labels)]
        stacked = {k: torch.stack([t[k] for t in targets]) for k in targets[0]}
        return centernet_loss(self(images), stacked)[0]

    @torch.no_grad()
    def detect(self, image: torch.Tensor, thresholds: Sequence[float], image_size: tuple[int, int]) -> list[Box]:
        """Boxes of one normalised (3, H, W) image (padded to 32) above their class thresholds, within ``image_size``."""
        out = self(image[None].contiguous(memory_format=torch.channels_last))
        return decode(torch.sigmoid(out["heatmap"][0]), out["size"][0], out["offset"][0], thresholds,
                      image_size=image_size)


@register_model(MODEL_NAME, input_size=DEFAULT_INPUT_SIZE, kind="detector", tags=("detector", "smear"),
                **normalisation(BACKBONE))
def centernet_lite0(num_classes: int, pretrained: bool | str | Path = False, input_size: int | None = None,
                    shared_head: bool = False) -> CenterNet:
    """CenterNet-style smear cell detector (EfficientNet-Lite0, output stride 4)"""
    return CenterNet(num_classes, pretrained, shared_head=shared_head)


# ---- targets ---------------------------------------------------------------------------

def gaussian_radius(width: float, height: float, min_overlap: float = MIN_OVERLAP) -> float:
    """Largest centre shift r (along both axes) keeping IoU >= ``min_overlap`` with the true box.

    A same-size box shifted by (r, r) has IoU (w-r)(h-r) / (2wh - (w-r)(h-r)); solving
    IoU = t for r gives the smaller root of r^2 - (w+h) r + wh (1-t)/(1+t) = 0.
    """
    b = width + height
    c = width * height * (1 - min_overlap) / (1 + min_overlap)
    return (b - math.sqrt(max(0.0, b * b - 4 * c))) / 2


def draw_gaussian(heatmap: np.ndarray, cx: int, cy: int, radius: int) -> None:
    """Splat a Gaussian (peak 1 at (cx, cy), sigma = (2r+1)/6, cut at r) into ``heatmap`` by maximum."""
    sigma = (2 * radius + 1) / 6
    height, width = heatmap.shape
    x0, x1 = max(0, cx - radius), min(width, cx + radius + 1)
    y0, y1 = max(0, cy - radius), min(height, cy + radius + 1)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.ogrid[y0 - cy:y1 - cy, x0 - cx:x1 - cx]
    blob = np.exp(-(xx * xx + yy * yy) / (2 * sigma * sigma))
    np.maximum(heatmap[y0:y1, x0:x1], blob, out=heatmap[y0:y1, x0:x1])


def encode_targets(boxes: np.ndarray, labels: np.ndarray, input_hw: tuple[int, int],
                   num_classes: int = len(LABELS)) -> dict[str, torch.Tensor]:
    """Training targets at stride 4 for boxes (N, 4) in input pixels and class indices (N,).

    ``heatmap`` (C, H, W); ``size`` and ``offset`` (2, H, W) in output cells, valid where ``mask`` (H, W) is 1.
    """
    out_h, out_w = input_hw[0] // STRIDE, input_hw[1] // STRIDE
    heatmap = np.zeros((num_classes, out_h, out_w), np.float32)
    size = np.zeros((2, out_h, out_w), np.float32)
    offset = np.zeros((2, out_h, out_w), np.float32)
    mask = np.zeros((out_h, out_w), np.float32)
    for (x1, y1, x2, y2), label in zip(np.asarray(boxes, np.float32).reshape(-1, 4), labels):
        w, h = (x2 - x1) / STRIDE, (y2 - y1) / STRIDE
        cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
        ix, iy = min(int(cx), out_w - 1), min(int(cy), out_h - 1)
        draw_gaussian(heatmap[int(label)], ix, iy, max(0, int(gaussian_radius(w, h))))
        size[:, iy, ix] = (w, h)
        offset[:, iy, ix] = (cx - ix, cy - iy)
        mask[iy, ix] = 1.0
    return {k: torch.from_numpy(v) for k, v in
            {"heatmap": heatmap, "size": size, "offset": offset, "mask": mask}.items()}


def centernet_loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                   size_weight: float = 0.1, offset_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Penalty-reduced focal loss on the heatmaps plus L1 size/offset at the centres (per centre)."""
    pred = torch.sigmoid(outputs["heatmap"]).clamp(1e-4, 1 - 1e-4)
    gt = targets["heatmap"]
    positive = gt.eq(1).float()
    pos_loss = torch.log(pred) * (1 - pred) ** 2 * positive
    neg_loss = torch.log(1 - pred) * pred ** 2 * (1 - gt) ** 4 * (1 - positive)
    n_pos = positive.sum().clamp(min=1.0)
    focal = -(pos_loss.sum() + neg_loss.sum()) / n_pos
    mask = targets["mask"].unsqueeze(1)
    n_centres = mask.sum().clamp(min=1.0)
    size = (F.l1_loss(outputs["size"], targets["size"], reduction="none") * mask).sum() / n_centres
    offset = (F.l1_loss(outputs["offset"], targets["offset"], reduction="none") * mask).sum() / n_centres
    total = focal + size_weight * size + offset_weight * offset
    return total, {"focal": focal.item(), "size": size.item(), "offset": offset.item()}


# ---- decoding and inference ------------------------------------------------------------

def decode(heatmap: torch.Tensor, size: torch.Tensor, offset: torch.Tensor, thresholds: Sequence[float],
           scale: float = 1.0, image_size: tuple[int, int] | None = None, top_k: int = TOP_K) -> list[Box]:
    """Detections from one image's outputs: heatmap probabilities (C, H, W), size and offset (2, H, W).

    Local maxima (3x3) scoring at least ``thresholds[class]`` become boxes of the predicted
    size; coordinates are divided by ``scale`` (input/photo) and clipped to ``image_size`` (w, h),
    where peaks centred outside the photo (in the padding) are dropped.
    """
    if len(thresholds) != heatmap.shape[0]:
        raise ValueError(f"{len(thresholds)} thresholds for {heatmap.shape[0]} heatmap classes")
    peaks = heatmap * (F.max_pool2d(heatmap[None], 3, stride=1, padding=1)[0] == heatmap)
    scores, index = peaks.flatten().topk(min(top_k, peaks.numel()))
    n_classes, out_h, out_w = heatmap.shape
    limit = torch.tensor(thresholds, dtype=heatmap.dtype)
    cls, rest = index // (out_h * out_w), index % (out_h * out_w)
    keep = scores >= limit[cls].clamp(min=1e-6)
    scores, cls, rest = scores[keep], cls[keep], rest[keep]
    ys, xs = rest // out_w, rest % out_w
    w, h = size[0, ys, xs].clamp(min=0), size[1, ys, xs].clamp(min=0)
    cx, cy = xs + offset[0, ys, xs], ys + offset[1, ys, xs]
    factor = STRIDE / scale
    max_w, max_h = image_size if image_size is not None else (math.inf, math.inf)
    detections = []
    for k in range(len(scores)):
        if not (0 <= float(cx[k]) * factor < max_w and 0 <= float(cy[k]) * factor < max_h):
            continue  # a centre in the padding
        x1, x2 = max(0.0, float(cx[k] - w[k] / 2) * factor), min(max_w, float(cx[k] + w[k] / 2) * factor)
        y1, y2 = max(0.0, float(cy[k] - h[k] / 2) * factor), min(max_h, float(cy[k] + h[k] / 2) * factor)
        detections.append(Box(LABELS[int(cls[k])], x1, y1, x2, y2, float(scores[k])))
    return detections


def input_shape(width: int, height: int, input_size: int) -> tuple[float, int, int]:
    """(scale, resized width, resized height): the longer side becomes ``input_size``."""
    scale = input_size / max(width, height)
    return scale, max(1, round(width * scale)), max(1, round(height * scale))


def to_input(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 HxWx3 array -> normalised float 3xHxW tensor, zero-padded to multiples of 32."""
    tensor = torch.tensor(image).permute(2, 0, 1).float() / 255.0
    tensor = (tensor - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    height, width = tensor.shape[-2:]
    return F.pad(tensor, (0, -width % MULTIPLE, 0, -height % MULTIPLE))

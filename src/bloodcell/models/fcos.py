"""FCOS (Tian et al. 2019, torchvision's implementation) on EfficientNet-Lite0 features: the anchor-free
detector the CenterNet smear detector is compared with.

EfficientNet-Lite0 (ImageNet weights from the offline package when ``pretrained``) gives strides
8/16/32; torchvision's feature pyramid adds P6/P7; torchvision's FCOS head predicts classes,
boxes and centre-ness at every level. The input is already resized and normalised by the caller
(as for the CenterNet), so torchvision's own resize and normalisation are switched off.

Like :class:`bloodcell.models.centernet.CenterNet` it offers ``loss(images, boxes, labels)`` for
training and ``detect(image, thresholds, image_size)`` for inference, so one trainer and one
smear detector serve both.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

from bloodcell.data.boxes import SMEAR_LABELS as LABELS
from bloodcell.data.boxes import Box
from bloodcell.models.backbones import normalisation
from bloodcell.models.centernet import BACKBONE, DEFAULT_INPUT_SIZE, lite0_features
from bloodcell.models.registry import register_model

MODEL_NAME = "fcos-lite0"
FPN_CHANNELS = 64
#: Candidate boxes kept before the per-class thresholds (a smear field holds up to a few hundred cells).
MAX_DETECTIONS = 1000


class _Body(nn.Module):
    """EfficientNet-Lite0 at strides 8, 16, 32 with the feature pyramid on top (what FCOS calls the backbone)."""

    def __init__(self, pretrained: bool | str | Path):
        super().__init__()
        self.features = lite0_features(pretrained, out_indices=(2, 3, 4))
        self.fpn = FeaturePyramidNetwork(self.features.feature_info.channels(), FPN_CHANNELS,
                                         extra_blocks=LastLevelP6P7(FPN_CHANNELS, FPN_CHANNELS))
        self.out_channels = FPN_CHANNELS

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.features(x))))


class _AsGiven(GeneralizedRCNNTransform):
    """torchvision's detection transform without its resize and normalisation (the caller did both)."""

    def resize(self, image, target=None):
        return image, target

    def normalize(self, image):
        return image


class FCOSLite0(nn.Module):
    """FCOS with an EfficientNet-Lite0 feature pyramid; class 0 of torchvision's labels is unused."""

    def __init__(self, num_classes: int = len(LABELS), pretrained: bool | str | Path = False):
        super().__init__()
        anchors = AnchorGenerator(sizes=((8,), (16,), (32,), (64,), (128,)), aspect_ratios=((1.0,),) * 5)
        self.net = FCOS(_Body(pretrained), num_classes=num_classes + 1, anchor_generator=anchors,
                        score_thresh=0.05, nms_thresh=0.5, detections_per_img=MAX_DETECTIONS,
                        topk_candidates=MAX_DETECTIONS)
        self.net.transform = _AsGiven(min_size=1, max_size=1 << 14, image_mean=[0.0] * 3, image_std=[1.0] * 3)

    def loss(self, images: torch.Tensor, boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> torch.Tensor:
        """Training loss of a batch (the module must be in training mode)."""
        targets = [{"boxes": torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4),
                    "labels": torch.as_tensor(np.asarray(l) + 1, dtype=torch.int64)} for b, l in zip(boxes, labels)]
        return sum(self.net(list(images), targets).values())

    @torch.no_grad()
    def detect(self, image: torch.Tensor, thresholds: Sequence[float], image_size: tuple[int, int]) -> list[Box]:
        """Boxes of one normalised (3, H, W) image above their class thresholds, clipped to ``image_size`` (w, h)."""
        out = self.net([image])[0]
        width, height = image_size
        found = []
        for (x1, y1, x2, y2), score, label in zip(out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist()):
            index = int(label) - 1
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            if 0 <= index < len(LABELS) and score >= thresholds[index] and cx < width and cy < height:
                found.append(Box(LABELS[index], max(0.0, x1), max(0.0, y1), min(float(width), x2),
                                 min(float(height), y2), float(score)))
        return found


@register_model(MODEL_NAME, input_size=DEFAULT_INPUT_SIZE, kind="detector", tags=("detector", "smear"),
                **normalisation(BACKBONE))
def fcos_lite0(num_classes: int, pretrained: bool | str | Path = False, input_size: int | None = None) -> FCOSLite0:
    """FCOS smear cell detector (torchvision) on an EfficientNet-Lite0 feature pyramid"""
    return FCOSLite0(num_classes, pretrained)

"""The published PBC classifiers, rebuilt as registry entries.

Each builder's docstring states what its paper specified and what was chosen where the
paper is silent. All models output logits: the papers' final softmax is applied by the
loss (cross-entropy) and by the predictor, never inside the model. Freezing happens in the
builder, so a checkpoint rebuilt by ``load_checkpoint`` is frozen the same way.

The from-scratch CNNs were trained on pixels scaled by 1/255, so their data config uses
mean (0, 0, 0) and std (1, 1, 1); ImageNet-pretrained models keep ImageNet statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from timm.utils.model import freeze
from torch import nn

from bloodcell.errors import ConfigError
from bloodcell.models.pretrained import create_timm_model, load_weights_file
from bloodcell.models.registry import register_model

UNIT_SCALE = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
VGG16_BLOCK4_END = 24  # timm/torchvision vgg16.features[:24]: blocks 1-4 including pool 4


def _scratch_weights(build: Callable[[], nn.Module], pretrained, name: str) -> nn.Module:
    """Scratch models accept only their own weights file; ImageNet weights do not exist for them."""
    if pretrained is True:
        raise ConfigError(f"{name} is trained from scratch and has no ImageNet weights; use pretrained=False")
    model = build()
    if pretrained:
        load_weights_file(model, pretrained)
    return model


def _conv_relu(in_channels: int, out_channels: int, kernel: int, padding: int | str) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel, padding=padding), nn.ReLU(inplace=True)]


class Khalil2022(nn.Module):
    """VGG16 blocks 1-4 followed by a conv 256 + batch-norm + ReLU head and a dense layer."""

    def __init__(self, features: nn.Sequential, num_classes: int, input_size: int):
        super().__init__()
        self.features = features
        self.head = nn.Sequential(
            nn.Conv2d(512, 256, kernel_size=3, padding=1),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        side = input_size // 16
        if side < 1:
            raise ConfigError(f"khalil2022 needs an input of at least 16 pixels, got {input_size}")
        self.classifier = nn.Linear(256 * side * side, num_classes)

    def forward(self, x):
        return self.classifier(self.head(self.features(x)))


def _khalil(num_classes: int, pretrained, input_size: int, frozen: bool) -> Khalil2022:
    vgg = create_timm_model("vgg16", num_classes=num_classes, pretrained=pretrained)
    model = Khalil2022(vgg.features[:VGG16_BLOCK4_END], num_classes, input_size)
    if frozen:
        freeze(model, ["features"])
    return model


@register_model("khalil2022-vgg16", input_size=128, interpolation="bilinear", tags=("paper",))
def khalil2022_vgg16(num_classes: int, pretrained=False, input_size: int = 128):
    """Khalil et al. 2022: ImageNet VGG16 with blocks 1-4 frozen, block 5 replaced by a small head.

    Paper: 128x128 input; VGG16 convolutional blocks 1-4 with ImageNet weights, frozen; block 5
    removed; new head conv 256 (3x3) + batch norm + ReLU + flatten + dense softmax.
    Chosen where silent: "same" padding for the head conv (8x8x256 map at 128 input, 16384
    features), no dropout, ImageNet mean/std (the pretrained features expect them), bilinear
    resize. Softmax is left to the loss/predictor. ``pretrained=True`` loads timm's ``vgg16``
    ImageNet weights; with ``pretrained=False`` blocks 1-4 stay frozen at random values, as the
    architecture prescribes (use ``khalil2022-scratch`` to train everything).
    """
    return _khalil(num_classes, pretrained, input_size, frozen=True)


@register_model("khalil2022-scratch", input_size=128, interpolation="bilinear", tags=("paper",), **UNIT_SCALE)
def khalil2022_scratch(num_classes: int, pretrained=False, input_size: int = 128):
    """Khalil et al. 2022 baseline: the khalil2022-vgg16 architecture trained from scratch (82 %).

    Same layers as ``khalil2022-vgg16`` with nothing frozen and random initialisation.
    Chosen where silent: 1/255 pixel scaling (mean 0, std 1) like the other scratch CNNs.
    """
    return _scratch_weights(lambda: _khalil(num_classes, False, input_size, frozen=False), pretrained, "khalil2022-scratch")


class Asghar2023(nn.Module):
    """Seven conv 3x3 + max-pool + dropout blocks, then dense 128 and the class layer."""

    FILTERS = (32, 64, 64, 64, 128, 256, 256)

    def __init__(self, num_classes: int, input_size: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels, side = 3, input_size
        for filters in self.FILTERS:
            layers += _conv_relu(channels, filters, 3, "same")
            layers += [nn.MaxPool2d(2, ceil_mode=True), nn.Dropout(0.25)]
            channels, side = filters, math.ceil(side / 2)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * side * side, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("asghar2023-cnn", input_size=100, interpolation="bilinear", tags=("paper",), **UNIT_SCALE)
def asghar2023_cnn(num_classes: int, pretrained=False, input_size: int = 100):
    """Asghar et al. 2023: a seven-block CNN trained from scratch on 100x100 cells.

    Paper: 100x100 input; seven blocks of 3x3 convolution (32, 64, 64, 64, 128, 256, 256
    filters, ReLU, same padding), each followed by 2x2 max pooling and dropout 0.25; dense 128
    with ReLU; dense softmax. Seven 2x2 poolings do not fit 100 pixels with floor rounding
    (100, 50, 25, 12, 6, 3, 1, 0), so pooling rounds up (``ceil_mode``, what Keras'
    ``padding="same"`` pooling does): 100, 50, 25, 13, 7, 4, 2, 1, leaving 256 features.
    Chosen where silent: no dropout after the dense layer, 1/255 scaling, bilinear resize.
    """
    return _scratch_weights(lambda: Asghar2023(num_classes, input_size), pretrained, "asghar2023-cnn")


class Risodkar2024(nn.Module):
    """Conv 5x5 64, conv 3x3 256, conv 3x3 128 (each with max pooling), dense 256, class layer."""

    def __init__(self, num_classes: int, input_size: int):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_relu(3, 64, 5, 0), nn.MaxPool2d(2),
            *_conv_relu(64, 256, 3, 0), nn.MaxPool2d(2),
            *_conv_relu(256, 128, 3, 0), nn.MaxPool2d(2),
        )
        side = input_size
        for kernel in (5, 3, 3):
            side = (side - kernel + 1) // 2
        if side < 1:
            raise ConfigError(f"risodkar2024-cnn needs an input of at least 22 pixels, got {input_size}")
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * side * side, 256), nn.ReLU(inplace=True), nn.Linear(256, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("risodkar2024-cnn", input_size=100, interpolation="bilinear", tags=("paper",), **UNIT_SCALE)
def risodkar2024_cnn(num_classes: int, pretrained=False, input_size: int = 100):
    """Risodkar et al. 2024: a three-convolution CNN trained from scratch on 100x100 cells.

    Paper: 100x100 input; conv 5x5 64, max pool, conv 3x3 256, max pool, conv 3x3 128, max
    pool, flatten, dense 256, softmax. Chosen where silent: ReLU activations, "valid" padding
    (the Keras default: 100, 96, 48, 46, 23, 21, 10, so 12800 features), 2x2 pools, ReLU on
    the dense layer, no dropout, 1/255 scaling, bilinear resize.
    """
    return _scratch_weights(lambda: Risodkar2024(num_classes, input_size), pretrained, "risodkar2024-cnn")


VEENA_FROZEN = ("conv1", "bn1", "layer1", "layer2")


@register_model("veena-resnet50", input_size=224, interpolation="bilinear", tags=("paper",))
def veena_resnet50(num_classes: int, pretrained=False, input_size: int = 224, drop_rate: float = 0.5):
    """Veena et al.: ImageNet ResNet50 fine-tuned with its early stages frozen and a new head.

    Paper: ResNet50 pretrained on ImageNet, 224x224 input, early layers frozen, new
    classification head, fine-tuned. Chosen where silent: frozen = stem + layer1 + layer2
    (their batch norms become ``FrozenBatchNorm2d`` so running statistics stay ImageNet's),
    head = global average pool + dropout 0.5 + linear (timm's ``drop_rate``), ImageNet
    mean/std, bilinear resize.
    """
    model = create_timm_model("resnet50", num_classes=num_classes, pretrained=pretrained, drop_rate=drop_rate)
    freeze(model, list(VEENA_FROZEN))
    return model

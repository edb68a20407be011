"""The published PBC classifiers, rebuilt as registry entries, as their papers print them.

Where a paper prints a model summary, the summary is the reference: its output shapes and
parameter counts are reproduced exactly (``tests/models/test_paper_models.py`` checks them),
even where the prose says otherwise. Each builder's docstring states what its paper
specified and what was chosen where the paper is silent or contradicts itself; the same
facts are kept as a :class:`~bloodcell.models.registry.PaperInfo` on the registry entry and
printed by ``bloodcell models info NAME``. The papers' training recipes are shipped in
``bloodcell/resources/configs/papers/`` (with its ``README.md`` for what ``TrainConfig`` cannot express).

All models output logits: the papers' final softmax is applied by the loss (cross-entropy)
and by the predictor, never inside the model. Freezing happens in the builder, so a
checkpoint rebuilt by ``load_checkpoint`` is frozen the same way.

The from-scratch CNNs take pixels scaled by 1/255 (data config mean (0, 0, 0), std
(1, 1, 1)), the usual Keras rescaling, chosen where the papers are silent; ImageNet-pretrained
models keep ImageNet statistics.
"""

from __future__ import annotations

from collections.abc import Callable

from timm.utils.model import freeze
from torch import nn

from bloodcell.errors import ConfigError
from bloodcell.models.pretrained import create_timm_model, load_weights_file
from bloodcell.models.registry import PaperInfo, register_model

UNIT_SCALE = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
VGG16_BLOCK4_END = 24  # timm/torchvision vgg16.features[:24]: blocks 1-4 including pool 4
VGG16_FEATURES_END = 31  # vgg16.features[:31]: blocks 1-5 including pool 5 (block5_pool)
# Keras BatchNormalization defaults: epsilon 1e-3, momentum 0.99 (PyTorch's momentum is 1 - Keras').
KERAS_BN = {"eps": 1e-3, "momentum": 0.01}


def keras_param_counts(model: nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` parameters as Keras' ``model.summary()`` counts them.

    Keras counts a BatchNormalization layer's moving mean and moving variance as
    non-trainable parameters; PyTorch keeps them as buffers (``running_mean``/``running_var``).
    So the Keras total is PyTorch's parameters plus those buffers; the trainable counts agree
    (gamma and beta are parameters in both). Works on meta-device models.
    """
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stats = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    )
    return params + stats, trainable


def _scratch_weights(build: Callable[[], nn.Module], pretrained, name: str) -> nn.Module:
    """Scratch models accept only their own weights file; ImageNet weights do not exist for them."""
    if pretrained is True:
        raise ConfigError(f"{name} is trained from scratch and has no ImageNet weights; use pretrained=False")
    model = build()
    if pretrained:
        load_weights_file(model, pretrained)
    return model


def _out_side(side: int, kernel: int, stride: int = 1) -> int:
    """Output side of a 'valid' (unpadded) convolution or pooling; 0 when the input is too small."""
    return (side - kernel) // stride + 1 if side >= kernel else 0


def _recipe(name: str) -> str:
    return f"bloodcell/resources/configs/papers/{name}.json"


# --------------------------------------------------------------------------------------
# Khalil et al. 2022
# --------------------------------------------------------------------------------------


class Khalil2022(nn.Module):
    """VGG16 blocks 1-5, a 2x2/2 conv 256 + batch-norm + ReLU head, flatten and a dense layer."""

    def __init__(self, features: nn.Sequential, num_classes: int, input_size: int):
        super().__init__()
        self.features = features
        self.head = nn.Sequential(
            nn.Conv2d(512, 256, kernel_size=2, stride=2),
            nn.BatchNorm2d(256, **KERAS_BN),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        side = _out_side(input_size // 32, 2, 2)  # five VGG poolings, then the 2x2/2 head conv
        if side < 1:
            raise ConfigError(f"khalil2022 needs an input of at least 64 pixels, got {input_size}")
        self.classifier = nn.Linear(256 * side * side, num_classes)

    def forward(self, x):
        return self.classifier(self.head(self.features(x)))


def _khalil(num_classes: int, pretrained, input_size: int, frozen: bool) -> Khalil2022:
    vgg = create_timm_model("vgg16", num_classes=num_classes, pretrained=pretrained)
    model = Khalil2022(vgg.features[:VGG16_FEATURES_END], num_classes, input_size)
    if frozen:  # blocks 1-4 only: block 5 is trainable in the printed summary
        for param in model.features[:VGG16_BLOCK4_END].parameters():
            param.requires_grad_(False)
    return model


KHALIL_SUMMARY_CHOICES = (
    "Follows the printed model summary (section 4.5), not the prose: the prose says VGG16 block 5 was "
    "removed, but the summary keeps block5_conv1-3 and block5_pool (4x4x512 at 128 px) and counts them as "
    "trainable; the summary is the network that was run.",
    "Head convolution: 2x2 kernel (the printed 524,544 parameters = 2*2*512*256 + 256), stride 2 (derived: "
    "the summary goes from 4x4x512 to 2x2x256), 'valid' padding (the Keras default; 'same' gives the same "
    "shapes here).",
    "The summary's Activation layer after batch norm does not name its function: ReLU.",
    "Batch norm with the Keras defaults (epsilon 1e-3, momentum 0.99, i.e. PyTorch momentum 0.01).",
    "No dropout (none is printed). Softmax is left to the loss and the predictor: the model outputs logits.",
    "Parameter counts: Keras counts batch norm's moving mean and variance (2*256 = 512 values) as "
    "non-trainable parameters, PyTorch keeps them as buffers; the printed total is matched with them added.",
    "Resize: squashed to 128x128 (aspect ratio not kept), as the paper does (recipe `resize: squash`). "
    "Bilinear interpolation.",
)


@register_model(
    "khalil2022-vgg16",
    input_size=128,
    interpolation="bilinear",
    tags=("paper",),
    paper=PaperInfo(
        citation="Khalil et al., 2022: VGG16 transfer learning for blood-cell classification (model summary in "
        "section 4.5)",
        claims={
            "accuracy of the VGG16 transfer model": "not recorded here yet (see the paper)",
            "accuracy of the same network trained from scratch (baseline)": "82 %",
        },
        printed_params=15_244_356,
        printed_trainable_params=7_608_580,
        printed_num_classes=4,
        input_note="128x128: stated in the text and consistent with the summary's 4x4x512 block-5 output.",
        choices=KHALIL_SUMMARY_CHOICES
        + (
            "Initial weights: timm's ImageNet vgg16 with pretrained=True. With pretrained=False blocks 1-4 stay "
            "frozen at random values, as the architecture prescribes (khalil2022-scratch trains everything).",
            "Normalisation: ImageNet mean/std (what the pretrained features expect); the paper's own pixel "
            "scaling for the pretrained input is not recorded here.",
        ),
        recipe=_recipe("khalil2022-vgg16"),
    ),
)
def khalil2022_vgg16(num_classes: int, pretrained=False, input_size: int = 128):
    """Khalil et al. 2022: ImageNet VGG16, blocks 1-4 frozen, block 5 trained, a 2x2 conv head.

    Follows the paper's printed Keras model summary (section 4.5), which is the network they
    ran; the prose says block 5 was removed, but the summary keeps block5_conv1-3 and
    block5_pool (4x4x512 at 128 px) and counts them as trainable. Paper (summary): 128x128
    input; VGG16 blocks 1-4 with ImageNet weights, frozen; block 5 trainable; head conv 256
    with a 2x2 kernel (524,544 parameters) giving 2x2x256, batch norm, activation, flatten
    (1,024), dense softmax; 15,244,356 parameters for 4 classes, 7,608,580 trainable.

    Derived or chosen: stride 2 and 'valid' padding for the head conv (from 4x4 -> 2x2), ReLU
    for the unnamed activation, Keras' batch-norm defaults (eps 1e-3, momentum 0.99), no
    dropout, ImageNet mean/std, bilinear resize. PyTorch keeps batch norm's running mean and
    variance as buffers, so PyTorch's parameter total is 512 below the printed one (Keras
    counts them as non-trainable parameters); :func:`keras_param_counts` adds them back.
    Softmax is left to the loss/predictor. ``pretrained=True`` loads timm's ``vgg16``
    ImageNet weights; with ``pretrained=False`` blocks 1-4 stay frozen at random values, as
    the architecture prescribes (use ``khalil2022-scratch`` to train everything).
    """
    return _khalil(num_classes, pretrained, input_size, frozen=True)


@register_model(
    "khalil2022-scratch",
    input_size=128,
    interpolation="bilinear",
    tags=("paper",),
    paper=PaperInfo(
        citation="Khalil et al., 2022: from-scratch baseline of the VGG16 transfer model (summary in section 4.5)",
        claims={"accuracy (from scratch)": "82 %"},
        printed_params=15_244_356,
        printed_trainable_params=None,
        printed_num_classes=4,
        input_note="128x128, as for khalil2022-vgg16.",
        choices=KHALIL_SUMMARY_CHOICES
        + (
            "The paper prints one summary, the transfer model's; the baseline is taken to be the same network, so "
            "the printed total applies and nothing is frozen (its trainable count is not printed).",
            "Initialisation: PyTorch's defaults (Keras uses Glorot uniform).",
            "Normalisation: 1/255 scaling (mean 0, std 1), like the other scratch CNNs.",
        ),
        recipe=_recipe("khalil2022-scratch"),
    ),
    **UNIT_SCALE,
)
def khalil2022_scratch(num_classes: int, pretrained=False, input_size: int = 128):
    """Khalil et al. 2022 baseline: the khalil2022-vgg16 architecture trained from scratch (82 %).

    Same layers as ``khalil2022-vgg16`` (the printed summary's network: VGG16 blocks 1-5, 2x2/2
    conv 256 head, batch norm, ReLU, dense) with nothing frozen and random initialisation.
    Chosen where silent: 1/255 pixel scaling (mean 0, std 1) like the other scratch CNNs,
    PyTorch's default initialisation.
    """
    return _scratch_weights(lambda: _khalil(num_classes, False, input_size, frozen=False), pretrained, "khalil2022-scratch")


# --------------------------------------------------------------------------------------
# Asghar et al. 2023
# --------------------------------------------------------------------------------------


class Asghar2023(nn.Module):
    """Seven conv 3x3 (same) + max-pool 2x2/1 + dropout blocks, dense 128 layer(s), class layer."""

    FILTERS = (32, 64, 64, 64, 128, 256, 256)

    def __init__(self, num_classes: int, input_size: int, hidden_layers: int = 1):
        super().__init__()
        if hidden_layers < 1:
            raise ConfigError(f"asghar2023-cnn needs at least one hidden dense layer, got {hidden_layers}")
        layers: list[nn.Module] = []
        channels, side = 3, input_size
        for filters in self.FILTERS:
            layers += [nn.Conv2d(channels, filters, 3, padding="same"), nn.ReLU(inplace=True)]
            layers += [nn.MaxPool2d(2, stride=1), nn.Dropout(0.25)]
            channels, side = filters, _out_side(side, 2, 1)
        if side < 1:
            raise ConfigError(f"asghar2023-cnn needs an input of at least 8 pixels, got {input_size}")
        self.features = nn.Sequential(*layers)
        dense: list[nn.Module] = [nn.Flatten()]
        width = channels * side * side
        for _ in range(hidden_layers):
            dense += [nn.Linear(width, 128), nn.ReLU(inplace=True)]
            width = 128
        self.classifier = nn.Sequential(*dense, nn.Linear(width, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model(
    "asghar2023-cnn",
    input_size=100,
    interpolation="bilinear",
    tags=("paper",),
    paper=PaperInfo(
        citation="Asghar, Kumar, Hynds and Mahfooz, 2023: 'Classification of All Blood Cell Images using ML and "
        "DL Models', arXiv:2308.06300",
        claims={
            "accuracy of the proposed CNN on PBC": "99.91 % (abstract)",
            "accuracy of the ImageNet backbones (VGG16 ... DenseNet) on PBC": "91.375-94.72 % (abstract)",
        },
        printed_params=None,
        printed_num_classes=None,
        input_note="100x100, as stated in the text.",
        choices=(
            "Pooling: 2x2 max pooling with stride 1, as the text states. Its padding is not stated: "
            "'valid' (the Keras default), so each pooling trims one pixel: 100 -> 93 after seven blocks.",
            "Consequence of stride-1 pooling: flatten 256x93x93 = 2,214,144 features and a first dense layer of "
            "283,410,560 parameters (about 1.1 GB of float32 weights); 284,463,428 parameters in all for 4 classes.",
            "Dense layers (contradiction): the text speaks of five hidden dense layers but lists one, of 128 "
            "nodes; we build the listed one (hidden_layers=1). hidden_layers=5 builds five of 128 nodes, the "
            "other reading.",
            "Dropout 0.25 after each of the seven conv + pooling blocks; no dropout after the dense layer (not "
            "stated).",
            "Initialisation: PyTorch's defaults. Normalisation: 1/255 scaling (mean 0, std 1). Bilinear resize.",
            "No parameter count is printed in the paper as we read it, so none is checked against it.",
        ),
        recipe=_recipe("asghar2023-cnn"),
    ),
    **UNIT_SCALE,
)
def asghar2023_cnn(num_classes: int, pretrained=False, input_size: int = 100, hidden_layers: int = 1):
    """Asghar et al. 2023: a seven-block CNN with stride-1 pooling, trained from scratch on 100x100 cells.

    Paper: 100x100 input; seven blocks of 3x3 convolution (32, 64, 64, 64, 128, 256, 256
    filters, ReLU, 'same' padding), each followed by 2x2 max pooling with stride 1 and dropout
    0.25; dense 128 with ReLU; dense softmax.

    Contradictions and choices:

    - Hidden dense layers: the text says five hidden dense layers but lists only one, of 128
      nodes. We build the listed one (``hidden_layers=1``, the default); ``hidden_layers=5``
      builds five dense layers of 128 nodes, the other reading.
    - Pooling padding is not stated: 'valid' (the Keras default), so each stride-1 pooling
      trims one pixel, 100 -> 93 after seven blocks. With stride 1 the maps barely shrink,
      so the flatten holds 256x93x93 = 2,214,144 features and the first dense layer has
      283,410,560 parameters (about 1.1 GB in float32): that is what the text describes, and
      it is built as described.
    - No dropout after the dense layer, PyTorch's default initialisation, 1/255 scaling,
      bilinear resize (all not stated).
    """
    return _scratch_weights(lambda: Asghar2023(num_classes, input_size, hidden_layers), pretrained, "asghar2023-cnn")


# --------------------------------------------------------------------------------------
# Risodkar et al. 2024
# --------------------------------------------------------------------------------------

# (kernel, stride) of each 'valid' stage; strides and pool sizes are derived from the printed shapes.
RISODKAR_STAGES = ((5, 1), (2, 2), (3, 2), (3, 2), (3, 2), (2, 1))


def risodkar_sides(input_size: int) -> list[int]:
    """Map sides after conv1, pool1, conv2, pool2, conv3, pool3 (98, 49, 24, 11, 5, 4 at 102)."""
    sides, side = [], input_size
    for kernel, stride in RISODKAR_STAGES:
        side = _out_side(side, kernel, stride)
        if side < 1:
            raise ConfigError(f"risodkar2024-cnn needs an input of at least 50 pixels, got {input_size}")
        sides.append(side)
    return sides


class Risodkar2024(nn.Module):
    """Conv 5x5 64, pool 2/2, conv 3x3/2 256, pool 3/2, conv 3x3/2 128, pool 2/1, dense 256, class layer."""

    def __init__(self, num_classes: int, input_size: int):
        super().__init__()
        side = risodkar_sides(input_size)[-1]
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2, stride=2),
            nn.Conv2d(64, 256, 3, stride=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2),
            nn.Conv2d(256, 128, 3, stride=2), nn.ReLU(inplace=True), nn.MaxPool2d(2, stride=1),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * side * side, 256), nn.ReLU(inplace=True), nn.Linear(256, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


RISODKAR_INPUT_NOTE = (
    "102x102, chosen: the text resizes to 128x128, but the printed summary's first output (98x98 after a 5x5 "
    "convolution) and its 2,048-feature flatten (which the printed 973,188 parameters require) imply a "
    "102x102 input with 'valid' padding, the Keras default (98 with 'same' padding would give the same "
    "shapes). At 128 the flatten would hold 3,200 features and the count could not match."
)


@register_model(
    "risodkar2024-cnn",
    input_size=102,
    interpolation="bilinear",
    tags=("paper",),
    paper=PaperInfo(
        citation="Risodkar et al., 2024: a three-convolution CNN for blood-cell classification (model.summary "
        "printed in the paper)",
        claims={"accuracy": "not recorded here yet (see the paper)"},
        printed_params=973_188,
        printed_trainable_params=None,
        printed_num_classes=4,
        input_note=RISODKAR_INPUT_NOTE,
        choices=(
            "Input 102x102 instead of the text's 128x128, so that the printed shapes come out (see input).",
            "Strides and pool sizes derived from the printed shapes ('valid' padding throughout): conv 5x5 "
            "(102 -> 98), pool 2x2/2 (-> 49), conv 3x3 stride 2 (-> 24), pool 3x3/2 (-> 11; 4x4/2 would also "
            "fit), conv 3x3 stride 2 (-> 5), pool 2x2 stride 1 (-> 4); flatten 4x4x128 = 2,048.",
            "Activations are not shown in a Keras summary: ReLU after each convolution and after dense 256.",
            "No dropout (none printed). Initialisation: PyTorch's defaults. Normalisation: 1/255 scaling (mean 0, "
            "std 1). Bilinear resize.",
        ),
        recipe=_recipe("risodkar2024-cnn"),
    ),
    **UNIT_SCALE,
)
def risodkar2024_cnn(num_classes: int, pretrained=False, input_size: int = 102):
    """Risodkar et al. 2024: a three-convolution CNN trained from scratch, as its model.summary prints it.

    Paper (printed summary, 4 classes): conv 5x5 64 (98x98), max pool (49x49), conv 3x3 256
    (24x24), max pool (11x11), conv 3x3 128 (5x5), max pool (4x4), flatten (2,048), dense
    256, dense 4 (softmax): 973,188 parameters.

    Input size: the text resizes images to 128x128, but the printed shapes imply a smaller
    input: a 5x5 'valid' convolution (the Keras default) giving 98x98 needs 102x102, which is
    our default (98 with 'same' padding would give the same shapes). At 128 the flatten would
    hold 3,200 features, not the 2,048 the printed parameter count requires.

    Derived from the shapes ('valid' padding): pool 2x2/2 (98 -> 49), conv stride 2
    (49 -> 24), pool 3x3/2 (24 -> 11; 4x4/2 would also fit), conv stride 2 (11 -> 5), pool
    2x2/1 (5 -> 4). Chosen where silent: ReLU after each convolution and the dense layer, no
    dropout, 1/255 scaling, bilinear resize. Inputs below 50 pixels are refused.
    """
    return _scratch_weights(lambda: Risodkar2024(num_classes, input_size), pretrained, "risodkar2024-cnn")


# --------------------------------------------------------------------------------------
# Veena et al.
# --------------------------------------------------------------------------------------

VEENA_FROZEN = ("conv1", "bn1", "layer1", "layer2")


@register_model(
    "veena-resnet50",
    input_size=224,
    interpolation="bilinear",
    tags=("paper",),
    paper=PaperInfo(
        citation="Veena et al.: ImageNet ResNet50 fine-tuned for blood-cell classification",
        claims={"accuracy": "not recorded here yet (see the paper)"},
        printed_params=None,
        printed_num_classes=None,
        input_note="Not stated in the paper: 224x224 is our choice (ResNet50's ImageNet training resolution).",
        choices=(
            "Input 224x224 (the paper does not state its input size).",
            "Frozen 'early layers' = stem + layer1 + layer2; their batch norms become FrozenBatchNorm2d so the "
            "running statistics stay ImageNet's.",
            "New head = global average pool + dropout 0.5 + linear (timm's drop_rate).",
            "ImageNet mean/std, bilinear resize.",
        ),
        recipe=_recipe("veena-resnet50"),
    ),
)
def veena_resnet50(num_classes: int, pretrained=False, input_size: int = 224, drop_rate: float = 0.5):
    """Veena et al.: ImageNet ResNet50 fine-tuned with its early stages frozen and a new head.

    Paper: ResNet50 pretrained on ImageNet, early layers frozen, new classification head,
    fine-tuned. The paper does not state its input size: 224x224 is our choice (ResNet50's
    ImageNet training resolution). Chosen where silent: frozen = stem + layer1 + layer2 (their
    batch norms become ``FrozenBatchNorm2d`` so running statistics stay ImageNet's), head =
    global average pool + dropout 0.5 + linear (timm's ``drop_rate``), ImageNet mean/std,
    bilinear resize.
    """
    model = create_timm_model("resnet50", num_classes=num_classes, pretrained=pretrained, drop_rate=drop_rate)
    freeze(model, list(VEENA_FROZEN))
    return model

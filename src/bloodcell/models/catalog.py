"""What the registry holds, as plain data: ``bloodcell models list`` and the CLI's help read it without torch.

Each registered entry (see :mod:`bloodcell.models.registry`) is described here by its name, kind,
default input size, normalisation, parameter count with 8 classes, description and tags; the builders
stay in their modules and are imported only to build. ``tests/models/test_model_catalog.py`` checks
every line against the registry (and the parameter counts against models built on the meta device).
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET = "ImageNet"
UNIT = "1/255"
#: Classes of the parameter counts below.
CATALOG_CLASSES = 8


@dataclass(frozen=True)
class CatalogEntry:
    """One registered model as plain data; ``params`` counts a torch model's parameters with 8 classes."""

    name: str
    kind: str
    input_size: int
    normalisation: str
    params: int | None
    description: str
    tags: tuple[str, ...]


def normalisation_label(mean: tuple[float, ...], std: tuple[float, ...]) -> str:
    """``ImageNet``, ``1/255`` or the mean and std of a data config, for the listing."""
    if (tuple(mean), tuple(std)) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)):
        return IMAGENET
    if tuple(mean) == (0.0, 0.0, 0.0) and tuple(std) == (1.0, 1.0, 1.0):
        return UNIT
    return f"mean {mean[0]:g} std {std[0]:g}"


def _timm(name: str, size: int, params: int, tag: str, timm_name: str | None = None,
          normalisation: str = IMAGENET) -> CatalogEntry:
    alias = f" (timm {timm_name})" if timm_name else ""
    return CatalogEntry(name, "torch", size, normalisation, params, f"timm {tag} backbone{alias}", ("timm", tag))


def _classical(name: str, description: str) -> CatalogEntry:
    return CatalogEntry(name, "sklearn", 128, IMAGENET, None, description, ("classical",))


_DETECTOR_TAGS = ("detector", "smear")

CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry("asghar2023-cnn", "torch", 100, UNIT, 284_463_944,
                 "Asghar et al. 2023: a seven-block CNN with stride-1 pooling, trained from scratch on 100x100 cells.",
                 ("paper",)),
    CatalogEntry("centernet-lite0", "detector", 384, IMAGENET, None,
                 "CenterNet-style smear cell detector (EfficientNet-Lite0, output stride 4)", _DETECTOR_TAGS),
    _timm("convnext", 128, 3_377_088, "small", "convnext_atto"),
    _timm("densenet201", 224, 18_108_296, "literature"),
    _timm("efficientnet_lite0", 128, 3_381_256, "small"),
    _timm("efficientnet_lite1", 128, 4_145_928, "small"),
    _timm("efficientnet_lite2", 128, 4_821_320, "small"),
    CatalogEntry("fcos-lite0", "detector", 384, IMAGENET, None,
                 "FCOS smear cell detector (torchvision) on an EfficientNet-Lite0 feature pyramid", _DETECTOR_TAGS),
    _timm("inception_v3", 299, 21_801_960, "literature", normalisation="mean 0.5 std 0.5"),
    CatalogEntry("khalil2022-scratch", "torch", 128, UNIT, 15_247_944,
                 "Khalil et al. 2022 baseline: the khalil2022-vgg16 architecture trained from scratch (82 %).",
                 ("paper",)),
    CatalogEntry("khalil2022-vgg16", "torch", 128, IMAGENET, 15_247_944,
                 "Khalil et al. 2022: ImageNet VGG16, blocks 1-4 frozen, block 5 trained, a 2x2 conv head.",
                 ("paper",)),
    _timm("mobilenetv2_100", 224, 2_234_120, "literature"),
    _timm("mobilenetv3", 128, 4_212_280, "small", "mobilenetv3_large_100"),
    _timm("resnet101", 224, 42_516_552, "literature"),
    _timm("resnet152", 224, 58_160_200, "literature"),
    _timm("resnet18", 128, 11_180_616, "small"),
    _timm("resnet50", 224, 23_524_424, "literature"),
    CatalogEntry("risodkar2024-cnn", "torch", 102, UNIT, 974_216,
                 "Risodkar et al. 2024: a three-convolution CNN trained from scratch, as its model.summary prints it.",
                 ("paper",)),
    _classical("sk/knn", "Cell features -> k nearest neighbours (distance-weighted)."),
    _classical("sk/mlp", "Cell features -> multilayer perceptron (one hidden layer of 128 units, Adam)."),
    _classical("sk/rf", "Cell features -> random forest of 300 trees."),
    _classical("sk/svm", "Cell features -> RBF support vector machine (probabilities by Platt scaling, 3-fold)."),
    CatalogEntry("veena-resnet50", "torch", 224, IMAGENET, 23_514_312,
                 "Veena et al.: ImageNet ResNet50 fine-tuned with its early stages frozen and a new head.",
                 ("paper",)),
    _timm("vgg16", 224, 134_293_320, "literature"),
    _timm("vgg19", 224, 139_603_016, "literature"),
)

#: The papers' experiments ``bloodcell reproduce`` runs, in its order: the registered paper models and
#: Risodkar et al.'s classical pipelines (checked against ``workflows.reproduce.PROTOCOLS`` by a test).
PAPER_EXPERIMENTS = ("khalil2022-vgg16", "khalil2022-scratch", "asghar2023-cnn", "risodkar2024-cnn",
                     "risodkar2024-svm", "risodkar2024-rf", "veena-resnet50")

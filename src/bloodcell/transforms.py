"""Image transforms derived from a model's :class:`~bloodcell.models.DataConfig` (torchvision v2).

``create_transform(data_config, is_training, augment)`` accepts an RGB PIL image or a uint8
CHW tensor and returns a normalised float32 CHW tensor of ``input_size`` x ``input_size``.
For batched inference, ``create_pixel_transform`` stops at the uint8 pixels and
``normalize_batch`` normalises a whole batch at once.
Every pipeline first resizes the shorter side to ``input_size`` and centre-crops (a PIL
image is first staged at :func:`staging_size` with Pillow, as the training cache does); training
augmentations then run at that small size (cheap on CPU). All randomness comes from torch's
generator, so ``torch.manual_seed`` makes a pipeline reproducible.

Augmentations (``list_augmentations()``):

- ``none``: the evaluation pipeline.
- ``flips``: random horizontal/vertical flips and a random multiple of 90 degrees.
- ``literature``: the recipe of the published PBC papers: rotation of +-30 degrees, shifts
  of up to 20 % of the frame, horizontal and vertical flips. Uncovered corners are filled
  with the image's own background colour (median of its border pixels) instead of black,
  so no artificial dark wedges appear that a model could learn.
- ``strong``: ``literature`` plus rot90, a scale jitter of 0.7x to 2.5x (PBC's white cells
  fill about 40 % of the frame's width, so the cell ends up filling from about a third of the
  frame to all of it, as in other labs' crops; the shift shrinks when zooming in so the cell
  stays in frame), brightness/contrast/saturation jitter, haematoxylin/eosin stain jitter in HED
  space (which also shifts hue, the way stains vary; torchvision's hue jitter is left out
  because it costs more than all the other steps together), and light JPEG or blur
  degradation. Meant for robustness across labs, scanners and stains.
- ``balanced``: ``strong`` with its geometry (rotation, shift, zoom) applied to a random half of
  the images and only ``flips`` to the other half, so native framing is seen as often as zoomed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from skimage.color.colorconv import hed_from_rgb, rgb_from_hed
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from bloodcell.data.dataset import resize_center_crop
from bloodcell.errors import ConfigError, ImageError
from bloodcell.models.registry import DataConfig

AUGMENTATIONS = ("none", "flips", "literature", "strong", "balanced")
#: The augmentations with colour, stain and degradation jitter.
_COLOUR_JITTERED = ("strong", "balanced")
#: Images are staged (and cached for training) a little larger than the input, so random crops keep detail.
STAGING_MARGIN = 1.15

_INTERPOLATIONS = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}


def list_augmentations() -> tuple[str, ...]:
    """The accepted ``augment`` names."""
    return AUGMENTATIONS


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(1).uniform_(low, high))


def staging_size(input_size: int) -> int:
    """Side of the uint8 image staged before the final resize (the training cache's image size)."""
    return round(input_size * STAGING_MARGIN)


class _AsUint8Image(torch.nn.Module):
    """Check the input and turn a PIL image or uint8 CHW tensor into an RGB uint8 image tensor.

    A PIL image is first resized and centre-cropped to :func:`staging_size` with Pillow
    (:func:`~bloodcell.data.dataset.resize_center_crop`), exactly as the training cache stores
    images, so training, validation, evaluation and prediction see identical pixels (and
    Pillow's resize of a large photo is fast).
    """

    def __init__(self, input_size: int):
        super().__init__()
        self.size = staging_size(input_size)

    def forward(self, image):
        if isinstance(image, Image.Image):
            image = image.convert("RGB") if image.mode != "RGB" else image
            return F.to_image(resize_center_crop(image, self.size))
        if not isinstance(image, torch.Tensor):
            raise ImageError(f"expected a PIL image or a uint8 CHW tensor, got {type(image).__name__}")
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ImageError(
                f"expected a uint8 tensor of shape (3, H, W), got {image.dtype} of shape {tuple(image.shape)}"
            )
        image = image.expand(3, -1, -1) if image.shape[0] == 1 else image
        return tv_tensors.Image(image)


class _Rot90(torch.nn.Module):
    """Rotate by a random multiple of 90 degrees (lossless)."""

    def forward(self, image):
        k = int(torch.randint(0, 4, ()))
        return tv_tensors.wrap(torch.rot90(image, k, dims=(-2, -1)), like=image) if k else image


class _BackgroundAffine(torch.nn.Module):
    """Random rotation, shift and scale; uncovered areas take the image's border colour.

    ``scale`` is a (min, max) zoom range sampled log-uniformly. When zooming in, the maximum
    shift is divided by the zoom so that the centred cell is not pushed out of the frame.
    """

    def __init__(self, degrees: float, translate: float, scale: tuple[float, float] = (1.0, 1.0)):
        super().__init__()
        self.degrees, self.translate, self.scale = degrees, translate, scale

    def forward(self, image):
        height, width = image.shape[-2:]
        zoom = math.exp(_uniform(math.log(self.scale[0]), math.log(self.scale[1])))
        reach = self.translate / max(zoom, 1.0)
        shift = [round(_uniform(-reach, reach) * width), round(_uniform(-reach, reach) * height)]
        angle = _uniform(-self.degrees, self.degrees)
        border = torch.cat([image[:, 0, :], image[:, -1, :], image[:, :, 0], image[:, :, -1]], dim=1)
        fill = [float(v) for v in border.median(dim=1).values]
        return F.affine(
            image, angle=angle, translate=shift, scale=zoom, shear=[0.0, 0.0],
            interpolation=InterpolationMode.BILINEAR, fill=fill,
        )


class _StainJitter(torch.nn.Module):
    """Haematoxylin/eosin/DAB stain jitter: scale and shift each HED optical density channel.

    Works on float images in [0, 1]; follows the colour deconvolution of scikit-image
    (``skimage.color.rgb2hed``) but in torch so it stays fast per sample.
    """

    def __init__(self, sigma: float = 0.05, bias: float = 0.02):
        super().__init__()
        self.sigma, self.bias = sigma, bias
        self.to_hed = torch.as_tensor(hed_from_rgb, dtype=torch.float32)
        self.to_rgb = torch.as_tensor(rgb_from_hed, dtype=torch.float32)

    def forward(self, image):
        channels, height, width = image.shape
        pixels = image.reshape(3, -1).T.clamp_min(1e-6)
        log_adjust = math.log(1e-6)
        hed = (torch.log(pixels) / log_adjust) @ self.to_hed
        alpha = 1.0 + torch.empty(3).uniform_(-self.sigma, self.sigma)
        beta = torch.empty(3).uniform_(-self.bias, self.bias)
        hed = hed * alpha + beta
        rgb = torch.exp(-(hed * -log_adjust) @ self.to_rgb).clamp(0, 1)
        return tv_tensors.wrap(rgb.T.reshape(channels, height, width), like=image)


def _geometry(augment: str) -> list[torch.nn.Module]:
    if augment == "none":
        return []
    steps: list[torch.nn.Module] = [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if augment == "flips":
        return steps + [_Rot90()]
    if augment == "literature":
        return [_BackgroundAffine(degrees=30, translate=0.2)] + steps
    strong = [_Rot90(), _BackgroundAffine(degrees=30, translate=0.2, scale=(0.7, 2.5))] + steps
    if augment == "balanced":
        return [v2.RandomChoice([v2.Compose(strong), v2.Compose(_geometry("flips"))])]
    return strong


def _pixel_steps(data_config: DataConfig) -> list[torch.nn.Module]:
    if data_config.interpolation not in _INTERPOLATIONS:
        raise ConfigError(f"unknown interpolation {data_config.interpolation!r} in the model's data config")
    size = data_config.input_size
    return [
        _AsUint8Image(size),
        v2.Resize(size, interpolation=_INTERPOLATIONS[data_config.interpolation], antialias=True),
        v2.CenterCrop(size),
    ]


def create_transform(data_config: DataConfig, is_training: bool, augment: str = "none") -> v2.Compose:
    """The pipeline for ``data_config``; ``augment`` is used only when ``is_training``."""
    if augment not in AUGMENTATIONS:
        raise ConfigError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
    steps = _pixel_steps(data_config)
    augment = augment if is_training else "none"
    steps += _geometry(augment)
    if augment in _COLOUR_JITTERED:
        steps += [
            v2.RandomApply([v2.JPEG(quality=(40, 95))], p=0.25),
            v2.RandomApply([v2.GaussianBlur(kernel_size=3, sigma=(0.1, 1.0))], p=0.2),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        ]
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if augment in _COLOUR_JITTERED:
        steps.append(_StainJitter())
    steps += [v2.Normalize(mean=list(data_config.mean), std=list(data_config.std)), v2.ToPureTensor()]
    return v2.Compose(steps)


def create_pixel_transform(data_config: DataConfig) -> v2.Compose:
    """The evaluation pipeline up to the uint8 CHW input-size pixels; :func:`normalize_batch` finishes it."""
    return v2.Compose(_pixel_steps(data_config) + [v2.ToPureTensor()])


def normalize_batch(pixels: np.ndarray, data_config: DataConfig) -> np.ndarray:
    """uint8 NCHW pixels to the normalised float32 batch (as ``create_transform``'s last steps), vectorised."""
    mean = np.asarray(data_config.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(data_config.std, dtype=np.float32).reshape(1, 3, 1, 1)
    return (pixels.astype(np.float32) * np.float32(1.0 / 255.0) - mean) / std


def denormalize(tensor: torch.Tensor, data_config: DataConfig) -> torch.Tensor:
    """Undo the normalisation of a (..., 3, H, W) tensor; returns floats clipped to [0, 1]."""
    mean = torch.as_tensor(data_config.mean, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    std = torch.as_tensor(data_config.std, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    return (tensor * std + mean).clamp(0, 1)

"""Image transforms derived from a model's :class:`DataConfig` (defined here; torchvision v2).

``create_transform(data_config, is_training, augment)`` accepts an RGB PIL image or a uint8
CHW tensor and returns a normalised float32 CHW tensor of ``input_size`` x ``input_size``.
For batched inference, ``create_pixel_transform`` stops at the uint8 pixels and
``normalize_batch`` normalises a whole batch at once.
Every pipeline first makes the image a square of ``input_size``: by default it resizes the shorter
side and centre-crops (``DataConfig.resize == "crop"``); ``"squash"`` resizes both sides instead, the
aspect ratio not kept, as Keras' and OpenCV's plain resize do (a PIL image is first staged at
:func:`staging_size` with Pillow, as the training cache does); training
augmentations then run at that small size (cheap on CPU). All randomness comes from torch's
generator, so ``torch.manual_seed`` makes a pipeline reproducible.

Augmentations (:data:`AUGMENTATIONS`):

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
- ``multilab``: for canonically framed cells (little zoom left to learn: 0.8x-1.25x, rotation, rot90,
  flips) and other labs' stains and cameras: with a ``style_bank`` (colour statistics of other labs'
  cells, :func:`lab_style`), half of the images take a random lab's colour statistics (Reinhard's
  transfer in lαβ space); then stronger stain (HED) and white-balance jitter, and the low-resolution,
  blurred, heavily compressed images of phone and low-end cameras.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from skimage.color.colorconv import hed_from_rgb, rgb_from_hed
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from bloodcell.data.dataset import RESIZES, resize_square
from bloodcell.errors import ConfigError, ImageError
from bloodcell.framing import frame_cell

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


#: How a decoded image is framed before it is resized: as it is, or around its cell (:func:`bloodcell.framing.frame_cell`).
FRAMINGS = ("none", "cell")


@dataclass(frozen=True)
class DataConfig:
    """What a model expects as input: square size, normalisation, resize interpolation, classes, framing and
    how the image becomes a square (``resize``: "crop" or "squash", see :data:`RESIZES`)."""

    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    class_names: tuple[str, ...] = ()
    framing: str = "none"
    resize: str = "crop"

    def prepare(self, image: Image.Image) -> Image.Image:
        """The decoded RGB image framed as this model expects (canonical cell framing or unchanged)."""
        return frame_cell(image) if self.framing == "cell" else image

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DataConfig":
        return cls(
            input_size=int(data["input_size"]),
            mean=tuple(float(v) for v in data.get("mean", IMAGENET_MEAN)),
            std=tuple(float(v) for v in data.get("std", IMAGENET_STD)),
            interpolation=str(data.get("interpolation", "bilinear")),
            class_names=tuple(data.get("class_names", ())),
            framing=str(data.get("framing", "none")),
            resize=str(data.get("resize", "crop")),
        )

    def with_classes(self, class_names) -> "DataConfig":
        return replace(self, class_names=tuple(class_names))


AUGMENTATIONS = ("none", "flips", "literature", "strong", "balanced", "multilab")
#: The augmentations with colour, stain and degradation jitter.
_COLOUR_JITTERED = ("strong", "balanced")

# Reinhard et al. (2001): RGB -> LMS, then log LMS -> l alpha beta (decorrelated opponent channels).
_RGB_TO_LMS = torch.tensor([[0.3811, 0.5783, 0.0402], [0.1967, 0.7244, 0.0782], [0.0241, 0.1288, 0.8444]])
_LOG_LMS_TO_LAB = torch.diag(torch.tensor([1 / math.sqrt(3), 1 / math.sqrt(6), 1 / math.sqrt(2)])) @ torch.tensor(
    [[1.0, 1.0, 1.0], [1.0, 1.0, -2.0], [1.0, -1.0, 0.0]])
_LMS_TO_RGB, _LAB_TO_LOG_LMS = torch.linalg.inv(_RGB_TO_LMS), torch.linalg.inv(_LOG_LMS_TO_LAB)
#: Images are staged (and cached for training) a little larger than the input, so random crops keep detail.
STAGING_MARGIN = 1.15

_INTERPOLATIONS = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(1).uniform_(low, high))


def staging_size(input_size: int) -> int:
    """Side of the uint8 image staged before the final resize (the training cache's image size)."""
    return round(input_size * STAGING_MARGIN)


class _AsUint8Image(torch.nn.Module):
    """Check the input and turn a PIL image or uint8 CHW tensor into an RGB uint8 image tensor.

    A PIL image is first framed (``data_config.prepare``), then made a square of :func:`staging_size`
    with Pillow as ``data_config.resize`` says (:func:`~bloodcell.data.dataset.resize_square`), exactly
    as the training cache stores images, so training, validation, evaluation and prediction see
    identical pixels (and Pillow's resize of a large photo is fast). A tensor is taken as already
    prepared (the training cache).
    """

    def __init__(self, data_config: DataConfig):
        super().__init__()
        self.size = staging_size(data_config.input_size)
        self.prepare = data_config.prepare
        self.resize = data_config.resize

    def forward(self, image):
        if isinstance(image, Image.Image):
            image = image.convert("RGB") if image.mode != "RGB" else image
            return F.to_image(resize_square(self.prepare(image), self.size, self.resize))
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


def _to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(3, N) RGB floats in 0..1 -> (3, N) l alpha beta."""
    lms = (_RGB_TO_LMS @ rgb.clamp_min(1e-4)).clamp_min(1e-4)
    return _LOG_LMS_TO_LAB @ torch.log10(lms)


def _from_lab(lab: torch.Tensor) -> torch.Tensor:
    return (_LMS_TO_RGB @ torch.pow(10.0, _LAB_TO_LOG_LMS @ lab)).clamp(0, 1)


def lab_style(image: np.ndarray) -> list[float]:
    """Colour statistics of an RGB uint8 image: the mean and standard deviation of its l alpha beta channels."""
    lab = _to_lab(torch.as_tensor(np.asarray(image, dtype=np.float32).reshape(-1, 3).T / 255.0))
    return [float(v) for v in (*lab.mean(dim=1), *lab.std(dim=1).clamp_min(1e-3))]


class _StyleTransfer(torch.nn.Module):
    """With probability ``p``, give a float image in 0..1 the colour statistics of a random row of ``bank``
    ((K, 6): l alpha beta means, then standard deviations)."""

    def __init__(self, bank: np.ndarray, p: float = 0.5):
        super().__init__()
        self.bank = torch.as_tensor(np.asarray(bank, dtype=np.float32))
        if self.bank.ndim != 2 or self.bank.shape[1] != 6 or not len(self.bank):
            raise ConfigError("a style bank holds rows of 6 numbers (l alpha beta means and standard deviations)")
        self.p = p

    def forward(self, image):
        if float(torch.rand(())) >= self.p:
            return image
        channels, height, width = image.shape
        lab = _to_lab(image.reshape(3, -1))
        target = self.bank[int(torch.randint(len(self.bank), ()))]
        mean, std = lab.mean(dim=1, keepdim=True), lab.std(dim=1, keepdim=True).clamp_min(1e-3)
        lab = (lab - mean) / std * target[3:, None] + target[:3, None]
        return tv_tensors.wrap(_from_lab(lab).reshape(channels, height, width), like=image)


class _Downscale(torch.nn.Module):
    """Down-sample by a random factor in ``factors`` and back up (a lower-resolution camera)."""

    def __init__(self, factors: tuple[float, float] = (0.3, 1.0)):
        super().__init__()
        self.factors = factors

    def forward(self, image):
        height, width = image.shape[-2:]
        factor = _uniform(*self.factors)
        small = F.resize(image, [max(8, round(height * factor)), max(8, round(width * factor))], antialias=True)
        return F.resize(small, [height, width], antialias=True)


def _multilab(style_bank: np.ndarray | None) -> tuple[list[torch.nn.Module], list[torch.nn.Module]]:
    """The uint8 and the float steps of ``multilab`` (after its geometry)."""
    pixels = [
        v2.RandomApply([_Downscale()], p=0.3),
        v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.5))], p=0.3),
        v2.RandomApply([v2.JPEG(quality=(20, 95))], p=0.4),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.25),
    ]
    floats = ([_StyleTransfer(style_bank)] if style_bank is not None else []) + [_StainJitter(sigma=0.08, bias=0.03)]
    return pixels, floats


def _geometry(augment: str) -> list[torch.nn.Module]:
    if augment == "none":
        return []
    if augment == "multilab":
        return [_Rot90(), _BackgroundAffine(degrees=30, translate=0.08, scale=(0.8, 1.25)),
                v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
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
    if data_config.framing not in FRAMINGS:
        raise ConfigError(f"unknown framing {data_config.framing!r}; choose one of {', '.join(FRAMINGS)}")
    if data_config.resize not in RESIZES:
        raise ConfigError(f"unknown resize {data_config.resize!r}; choose one of {', '.join(RESIZES)}")
    size = data_config.input_size
    return [
        _AsUint8Image(data_config),
        # a staged PIL image is square already; a tensor given as it is follows the same resize rule
        v2.Resize([size, size] if data_config.resize == "squash" else size,
                  interpolation=_INTERPOLATIONS[data_config.interpolation], antialias=True),
        v2.CenterCrop(size),
    ]


def create_transform(data_config: DataConfig, is_training: bool, augment: str = "none",
                     style_bank: np.ndarray | None = None) -> v2.Compose:
    """The pipeline for ``data_config``; ``augment`` (and ``style_bank``, for ``multilab``) is used only when
    ``is_training``."""
    if augment not in AUGMENTATIONS:
        raise ConfigError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
    steps = _pixel_steps(data_config)
    augment = augment if is_training else "none"
    steps += _geometry(augment)
    if augment == "multilab":
        pixels, floats = _multilab(style_bank)
        return v2.Compose(steps + pixels + [v2.ToDtype(torch.float32, scale=True)] + floats +
                          [v2.Normalize(mean=list(data_config.mean), std=list(data_config.std)), v2.ToPureTensor()])
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


def stage_image(image: Image.Image, data_config: DataConfig) -> np.ndarray:
    """A decoded image as the uint8 HWC square of :func:`staging_size` that :func:`create_pixel_transform` resizes
    last (framed as ``data_config`` says); :func:`finish_pixels` makes a batch of them the model's input pixels."""
    image = image.convert("RGB") if image.mode != "RGB" else image
    return np.asarray(resize_square(data_config.prepare(image), staging_size(data_config.input_size), data_config.resize))


def finish_pixels(staged: np.ndarray, data_config: DataConfig) -> np.ndarray:
    """uint8 NHWC images from :func:`stage_image` to uint8 NCHW model-input pixels, the final resize and crop
    done once for the whole batch: the same pixels as :func:`create_pixel_transform` gives image by image."""
    steps = _pixel_steps(data_config)[1:]  # the resize and crop after staging
    batch = torch.from_numpy(np.ascontiguousarray(staged)).permute(0, 3, 1, 2)
    for step in steps:
        batch = step(batch)
    return batch.contiguous().numpy()


def normalize_batch(pixels: np.ndarray, data_config: DataConfig) -> np.ndarray:
    """uint8 NCHW pixels to the normalised float32 batch (as ``create_transform``'s last steps), vectorised
    (in place on one float copy: the same operations in the same order, without temporaries)."""
    mean = np.asarray(data_config.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(data_config.std, dtype=np.float32).reshape(1, 3, 1, 1)
    batch = pixels.astype(np.float32)
    batch *= np.float32(1.0 / 255.0)
    batch -= mean
    batch /= std
    return batch


def denormalize(tensor: torch.Tensor, data_config: DataConfig) -> torch.Tensor:
    """Undo the normalisation of a (..., 3, H, W) tensor; returns floats clipped to [0, 1]."""
    mean = torch.as_tensor(data_config.mean, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    std = torch.as_tensor(data_config.std, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    return (tensor * std + mean).clamp(0, 1)

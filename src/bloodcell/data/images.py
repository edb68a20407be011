"""Safe image decoding: every input becomes an 8-bit RGB ``PIL.Image`` or a clear ``ImageError``.

Handles the inputs users really send: grayscale, palette, RGBA (composited on white),
16-bit and float images (rescaled to 8 bit), CMYK, numpy arrays, bytes, truncated files,
non-image files and decompression bombs.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bloodcell.errors import DataError, ImageError

#: Default upper bound on decoded pixels (about 8k x 8k); larger inputs are refused.
MAX_PIXELS = 64_000_000
#: Largest image file read (bytes): an uncompressed 64-megapixel RGB image is about 200 MB.
MAX_FILE_BYTES = 512 * 1024 * 1024
#: Default upper bound on the memory of decoding one image (bytes, :func:`decoding_bytes`): an 8-bit RGB or
#: RGBA image of :data:`MAX_PIXELS` fits (192 or 960 MB); a 16-bit 40-megapixel one (about 1.2 GB) does not.
MAX_DECODING_BYTES = 1024 * 1024 * 1024

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

ImageSource = Union[str, Path, bytes, Image.Image, np.ndarray]


def too_many_pixels(name: str, limit: int, width: int | None = None, height: int | None = None) -> str:
    """The one sentence, in the CLI and the service, for an image over the pixel limit."""
    if width is None or height is None:
        return f"{name}: image has too many pixels (limit {limit})"
    return f"{name}: image is {width}x{height} pixels, more than the limit of {limit}"


def _name(source: ImageSource) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return f"<{type(source).__name__}>"


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB without silently clipping high bit depths (an RGB image itself, not a copy)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return array_to_rgb(np.asarray(image))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


#: Bytes per pixel :func:`to_rgb` holds at its peak, by Pillow mode: the decoded image and its working copies
#: (16- and 32-bit images go through float64 arrays; transparent ones through RGBA composites).
_DECODING_BYTES = {"1": 4, "L": 4, "P": 4, "RGB": 3, "YCbCr": 6, "LAB": 6, "HSV": 6, "CMYK": 7,
                   "LA": 17, "PA": 17, "RGBA": 15, "RGBX": 7, "RGBa": 15, "La": 17,
                   "I;16": 30, "I;16B": 30, "I;16L": 30, "I;16N": 30, "I": 32, "F": 32}


def decoding_bytes(mode: str, width: int, height: int) -> int:
    """Peak memory (bytes) of decoding a ``width`` x ``height`` image of Pillow ``mode`` into 8-bit RGB."""
    return width * height * _DECODING_BYTES.get(mode, 32)


def decoding_refusal(name: str, mode: str, width: int, height: int, max_bytes: int) -> str | None:
    """The one sentence refusing to decode ``name``, a ``width`` x ``height`` image of Pillow ``mode``, when it
    needs more than ``max_bytes`` (:func:`decoding_bytes`); None when it fits. The CLI and the service share it."""
    needed = decoding_bytes(mode, width, height)
    if needed <= max_bytes:
        return None
    return (f"{name}: a {width}x{height} {mode} image needs about {needed / 2**20:.0f} MB to decode, more than the "
            f"limit of {max_bytes / 2**20:.0f} MB (convert it to an 8-bit image or a smaller one)")


def array_to_rgb(array: np.ndarray) -> Image.Image:
    """Convert an HxW, HxWx1, HxWx3 or HxWx4 array of any numeric dtype to RGB.

    Integers wider than 8 bit are scaled by their dtype range (16-bit data that only uses
    the low 12 bits is stretched by its own maximum); floats are read as 0..1.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageError(f"array of shape {arr.shape} is not an image (expected HxW, HxWx3 or HxWx4)")
    if arr.size == 0:
        raise ImageError("array image is empty")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError("float image contains NaN or infinite values")
        scale = 255.0 if arr.max() <= 1.0 else 255.0 / max(float(arr.max()), 1.0)
        arr = np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.integer):
            raise ImageError(f"array dtype {arr.dtype} is not an image type")
        arr = arr.astype(np.float64)
        arr = np.clip(arr, 0, None)
        top = float(arr.max())
        limit = 65535.0 if top > 4095 else (4095.0 if top > 255 else 255.0)
        arr = (arr * (255.0 / limit)).round().astype(np.uint8)
    if arr.ndim == 2:
        return Image.fromarray(arr, mode="L").convert("RGB")
    if arr.shape[-1] == 4:
        return to_rgb(Image.fromarray(arr, mode="RGBA"))
    return Image.fromarray(arr, mode="RGB")


def read_image(source: ImageSource, max_pixels: int = MAX_PIXELS,
               max_decoding_bytes: int = MAX_DECODING_BYTES) -> Image.Image:
    """Decode ``source`` (path, bytes, PIL image or array) into a fully loaded RGB image.

    Raises ``ImageError`` with one sentence naming the input for anything unusable, or for encoded input whose
    header says it has more than ``max_pixels`` pixels or needs more than ``max_decoding_bytes`` to decode.
    """
    if isinstance(source, np.ndarray):
        if source.ndim >= 2 and source.shape[0] * source.shape[1] > max_pixels:
            raise ImageError(too_many_pixels(_name(source), max_pixels, source.shape[1], source.shape[0]))
        return array_to_rgb(source)
    if isinstance(source, Image.Image):
        if source.width * source.height > max_pixels:
            raise ImageError(too_many_pixels(_name(source), max_pixels, source.width, source.height))
        return to_rgb(source)
    name = _name(source)
    if isinstance(source, (str, Path)):
        data = _read_file(Path(source), name)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        raise ImageError(f"{name}: unsupported input type {type(source).__name__}")
    return decode_bytes(data, name=name, max_pixels=max_pixels, max_decoding_bytes=max_decoding_bytes)


def _read_file(path: Path, name: str) -> bytes:
    """The bytes of an image file; ImageError naming a missing file, a folder, a symlink loop or a read error."""
    try:
        info = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(f"{name}: is a symbolic link loop, not a file") from None
        if path.is_symlink():
            raise ImageError(f"{name}: is a broken symbolic link") from None
        raise ImageError(f"{name}: file not found") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"{name}: is a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):  # a pipe would block the read, a device (/dev/zero) never end it
        raise ImageError(f"{name}: is not a regular file (a pipe, socket or device)")
    if info.st_size > MAX_FILE_BYTES:
        raise ImageError(f"{name}: file too large for an image ({info.st_size / 2**20:.0f} MB, limit "
                         f"{MAX_FILE_BYTES // 2**20} MB)")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{name}: cannot be read ({exc.strerror or exc})") from exc


def decode_bytes(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS,
                 max_decoding_bytes: int = MAX_DECODING_BYTES) -> Image.Image:
    """Decode encoded image bytes strictly and upright (EXIF orientation applied), refusing before decoding an
    image over ``max_pixels`` or ``max_decoding_bytes`` (:func:`decoding_refusal`).

    Pillow's default refuses truncated files; bloodcell never changes that process-wide flag.
    """
    if not data:
        raise ImageError(f"{name}: file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels is the limit
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(too_many_pixels(name, max_pixels, width, height))
            if width == 0 or height == 0:
                raise ImageError(f"{name}: image has no pixels")
            refusal = decoding_refusal(name, image.mode, width, height, max_decoding_bytes)
            if refusal is not None:
                raise ImageError(refusal)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # the decoded image is ours: no copy of it
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(too_many_pixels(name, max_pixels)) from None
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not an image file (format not recognised)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        message = str(exc)
        if "truncated" in message.lower() or isinstance(exc, EOFError):
            raise ImageError(f"{name}: image file is truncated or corrupt ({message})") from exc
        raise ImageError(f"{name}: image cannot be decoded ({message})") from exc
    return to_rgb(image)



def oriented_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the image file as :func:`read_image` shows it (EXIF rotation applied), read from the
    header only; DataError when the file cannot be opened."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            rotated = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # orientations that swap the axes
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read the image size ({exc})") from None
    return (height, width) if rotated else (width, height)

def is_image_path(path: Path) -> bool:
    """True for visible files with a known image extension (macOS ``._``/``.DS`` files excluded)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def image_files(folder: str | Path) -> list[Path]:
    """The image files under ``folder`` (searched recursively, sorted); see :func:`is_image_path`."""
    return scan_folder(folder).images


def class_folders(root: str | Path) -> list[Path]:
    """The visible sub-folders of ``root``, sorted: the classes of a ``root/<class>/<image>`` folder."""
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


def class_folder_images(root: str | Path) -> list[tuple[Path, str]]:
    """Every image under ``root/<class>/`` (:func:`image_files`) with its class, the sub-folder's name, class by
    class; DataError when ``root`` is not a folder. The one reader of ``root/<class>/<image>`` folders."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (expected {root}/<class>/<image>)")
    return [(path, folder.name) for folder in class_folders(root) for path in image_files(folder)]


#: Extensions of image formats people send that bloodcell does not read (reported, never silently dropped).
UNSUPPORTED_IMAGE_EXTENSIONS = (".gif", ".heic", ".heif", ".avif", ".jp2", ".j2k", ".svg", ".dcm", ".dng", ".cr2",
                                ".nef", ".raw", ".psd", ".ico", ".jxl", ".czi", ".ndpi", ".svs", ".vsi")


@dataclass
class FolderScan:
    """What a recursive folder scan found: the images, and every entry it could not use with the reason."""

    images: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    other_files: int = 0


def scan_folder(folder: str | Path) -> FolderScan:
    """Image files under ``folder`` (sorted; symbolic links followed once, loops reported), and the entries
    it cannot use: unreadable sub-folders, link loops and image formats bloodcell does not read. Other
    files (annotations, hidden files) are only counted."""
    scan = FolderScan()
    seen: set[str] = set()

    def unreadable(exc: OSError) -> None:
        scan.problems.append((str(exc.filename), f"folder cannot be read ({exc.strerror or exc})"))

    for top, dirs, files in os.walk(folder, onerror=unreadable, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            scan.problems.append((top, "a symbolic link leads back into a folder already scanned (skipped)"))
            dirs[:] = []
            continue
        seen.add(real)
        for name in sorted(files):
            _classify_entry(Path(top) / name, scan)
    scan.images.sort()
    return scan


def _classify_entry(path: Path, scan: FolderScan) -> None:
    try:
        path.stat()
    except OSError as exc:
        reason = "a symbolic link loop" if exc.errno == errno.ELOOP else "a broken symbolic link"
        scan.problems.append((str(path), reason))
        return
    suffix = path.suffix.lower()
    if is_image_path(path):
        scan.images.append(path)
    elif suffix in UNSUPPORTED_IMAGE_EXTENSIONS and not path.name.startswith("."):
        scan.problems.append((str(path), f"{suffix} images are not supported; convert to PNG, JPEG or TIFF"))
    else:
        scan.other_files += 1

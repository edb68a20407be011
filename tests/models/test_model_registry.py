"""Every registered torch entry builds, runs forward and backward, and carries its data config."""

from __future__ import annotations

import pytest
import torch

from bloodcell.errors import ConfigError
from bloodcell.models import create_model, get_model_entry, list_models
from bloodcell.models import pretrained as pretrained_module
from bloodcell.models.backbones import LITERATURE_BACKBONES, SMALL_BACKBONES, timm_entry

# Big architectures are exercised at a smaller input (they end in global pooling) to stay fast.
TEST_SIZES = {"inception_v3": 96, "veena-resnet50": 96}
BIG = {"vgg16", "vgg19", "resnet101", "resnet152", "densenet201", "resnet50", "mobilenetv2_100"}
TORCH_ENTRIES = [e.name for e in list_models() if e.kind == "torch"]
TORCH_PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in TORCH_ENTRIES]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(pretrained_module, "_download", refuse)


def _test_size(name: str) -> int:
    if name in TEST_SIZES:
        return TEST_SIZES[name]
    return 32 if name in BIG else get_model_entry(name).data_config.input_size


def test_all_expected_names_are_registered():
    expected = set(LITERATURE_BACKBONES) | set(SMALL_BACKBONES) | {
        "khalil2022-vgg16", "khalil2022-scratch", "asghar2023-cnn", "risodkar2024-cnn", "veena-resnet50",
    }
    assert expected <= set(TORCH_ENTRIES)
    assert LITERATURE_BACKBONES["inception_v3"][1] == 299
    assert get_model_entry("inception_v3").data_config.input_size == 299


@pytest.mark.parametrize("name", TORCH_PARAMS)
def test_forward_backward_and_data_config(name):
    torch.manual_seed(0)
    size = _test_size(name)
    model = create_model(name, num_classes=5, input_size=size, class_names=list("abcde"))
    config = model.data_config
    assert model.model_name == name
    assert config.input_size == size and config.class_names == tuple("abcde")
    entry_config = get_model_entry(name).data_config
    assert (config.mean, config.std, config.interpolation) == (entry_config.mean, entry_config.std, entry_config.interpolation)
    assert len(config.mean) == 3 and all(s > 0 for s in config.std)
    assert config.interpolation in ("bilinear", "bicubic", "nearest")

    model.train()
    x = torch.rand(2, 3, size, size)
    logits = model(x)
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 4])).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    assert [n for n, p in trainable if p.grad is None] == []
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


@pytest.mark.parametrize("size", [128, 192])
def test_input_size_override(size):
    model = create_model("efficientnet_lite0", num_classes=8, input_size=size).eval()
    assert model.data_config.input_size == size
    with torch.no_grad():
        assert model(torch.rand(1, 3, size, size)).shape == (1, 8)


def test_aliases_build_the_named_timm_architectures():
    assert create_model("mobilenetv3", num_classes=3).pretrained_cfg["architecture"] == "mobilenetv3_large_100"
    assert create_model("convnext", num_classes=3).pretrained_cfg["architecture"] == "convnext_atto"


def test_any_timm_name_gets_an_entry_from_its_pretrained_cfg():
    entry = timm_entry("mobilevitv2_050")
    assert entry is not None and entry.data_config.input_size == 256
    assert get_model_entry("mobilevitv2_050").data_config == entry.data_config
    model = create_model("regnetx_002", num_classes=4)
    assert model.get_classifier().out_features == 4
    assert timm_entry("not_a_model") is None


def test_fixed_size_timm_model_follows_input_size():
    model = create_model("vit_tiny_patch16_224", num_classes=3, input_size=64).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3)


def test_unknown_name_is_one_clear_config_error():
    with pytest.raises(ConfigError) as info:
        create_model("resnet_9000", num_classes=8)
    message = str(info.value)
    assert "resnet_9000" in message and "bloodcell models list" in message and "\n" not in message

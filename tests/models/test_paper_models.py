"""The published architectures: layer sizes, freezing, outputs and checkpoint round trips."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d
from torch import nn

from bloodcell.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from bloodcell.errors import ConfigError
from bloodcell.models import create_model

PAPERS = {"khalil2022-vgg16": 128, "khalil2022-scratch": 128, "asghar2023-cnn": 100, "risodkar2024-cnn": 100, "veena-resnet50": 224}


@pytest.mark.parametrize(("name", "num_classes"), [(name, n) for name in sorted(PAPERS) for n in (5, 8)])
def test_output_shape_at_paper_input_size(name, num_classes):
    model = create_model(name, num_classes=num_classes).eval()
    assert model.data_config.input_size == PAPERS[name]
    with torch.no_grad():
        out = model(torch.rand(2, 3, PAPERS[name], PAPERS[name]))
    assert out.shape == (2, num_classes)
    assert not torch.allclose(out.sum(dim=1), torch.ones(2)), "models output logits, not probabilities"


def test_khalil_freezes_vgg_blocks_1_to_4_and_drops_block_5():
    model = create_model("khalil2022-vgg16", num_classes=8)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512]
    assert all(not p.requires_grad for p in model.features.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert isinstance(model.head[1], nn.BatchNorm2d) and model.head[0].out_channels == 256
    assert model.classifier.in_features == 256 * 8 * 8


def test_khalil_scratch_is_the_same_architecture_with_nothing_frozen():
    pretrained = create_model("khalil2022-vgg16", num_classes=8)
    scratch = create_model("khalil2022-scratch", num_classes=8)
    assert {k: v.shape for k, v in pretrained.state_dict().items()} == {k: v.shape for k, v in scratch.state_dict().items()}
    assert all(p.requires_grad for p in scratch.parameters())
    assert scratch.data_config.mean == (0.0, 0.0, 0.0) and scratch.data_config.std == (1.0, 1.0, 1.0)


def test_asghar_has_seven_pooled_blocks_ending_on_one_pixel():
    model = create_model("asghar2023-cnn", num_classes=8)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 64, 64, 128, 256, 256]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 7
    assert [m.p for m in model.features if isinstance(m, nn.Dropout)] == [0.25] * 7
    assert model.features(torch.rand(1, 3, 100, 100)).shape == (1, 256, 1, 1)
    assert model.classifier[1].out_features == 128


def test_risodkar_layers():
    model = create_model("risodkar2024-cnn", num_classes=8)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0]) for c in convs] == [(64, 5), (256, 3), (128, 3)]
    assert model.classifier[1].out_features == 256
    assert model.features(torch.rand(1, 3, 100, 100)).shape == (1, 128, 10, 10)


def test_veena_freezes_stem_and_first_two_stages():
    model = create_model("veena-resnet50", num_classes=8)
    for name in ("conv1", "bn1", "layer1", "layer2"):
        assert all(not p.requires_grad for p in getattr(model, name).parameters())
    assert isinstance(model.bn1, FrozenBatchNorm2d)
    for name in ("layer3", "layer4", "fc"):
        assert all(p.requires_grad for p in getattr(model, name).parameters())
    assert model.drop_rate > 0 and model.fc.out_features == 8


@pytest.mark.parametrize("name", ["asghar2023-cnn", "risodkar2024-cnn", "khalil2022-scratch"])
def test_scratch_models_refuse_imagenet_weights(name):
    with pytest.raises(ConfigError, match="from scratch"):
        create_model(name, num_classes=8, pretrained=True)


def test_freezing_survives_a_checkpoint_round_trip(tmp_path):
    model = create_model("khalil2022-vgg16", num_classes=3, class_names=["a", "b", "c"])
    with torch.no_grad():
        model.classifier.bias.fill_(0.5)
    path = save_checkpoint(tmp_path / "k.safetensors", model, CheckpointMeta(model_name="khalil2022-vgg16", data_config=model.data_config))
    loaded = load_checkpoint(path).model
    assert all(not p.requires_grad for p in loaded.features.parameters())
    assert torch.equal(loaded.classifier.bias, torch.full((3,), 0.5))

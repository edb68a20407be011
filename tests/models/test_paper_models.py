"""The published architectures as their papers print them: parameter counts, shapes, freezing, recipes.

The printed figures below are literals copied from the papers' model summaries, never read
back from the code, so a change to an architecture fails here.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d
from typer.testing import CliRunner

from bloodcell.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from bloodcell.errors import ConfigError
from bloodcell.models import create_model, get_model_entry
from bloodcell.models.papers import keras_param_counts
from bloodcell.resources import RECIPES, ROOT, recipe_path
from bloodcell.train.config import resolve_config

PAPERS = {"khalil2022-vgg16": 128, "khalil2022-scratch": 128, "asghar2023-cnn": 100, "risodkar2024-cnn": 102, "veena-resnet50": 224}
# asghar2023-cnn has 284 M parameters (stride-1 pooling): random init on CPU takes seconds and
# 1.1 GB, so its shape checks at the paper's input size run on the meta device.
META_ONLY = {"asghar2023-cnn"}


def _meta(name: str, num_classes: int, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, num_classes=num_classes, **kwargs)


def _hook_shapes(model: nn.Module, modules: list[nn.Module], x: torch.Tensor) -> list[tuple[int, ...]]:
    """Output shapes (without the batch dimension) of ``modules`` for one forward pass of ``x``."""
    shapes: list[tuple[int, ...]] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:]))) for m in modules]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


@pytest.mark.parametrize(("name", "num_classes"), [(name, n) for name in sorted(PAPERS) for n in (5, 8)])
def test_output_shape_at_paper_input_size(name, num_classes):
    size = PAPERS[name]
    if name in META_ONLY:
        model = _meta(name, num_classes)
        assert model.data_config.input_size == size
        assert model(torch.empty(2, 3, size, size, device="meta")).shape == (2, num_classes)
        model = create_model(name, num_classes=num_classes, input_size=24).eval()  # logits check, small input
        size = 24
    else:
        model = create_model(name, num_classes=num_classes).eval()
        assert model.data_config.input_size == size
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, num_classes)
    assert not torch.allclose(out.sum(dim=1), torch.ones(2)), "models output logits, not probabilities"


# --- Khalil et al. 2022: the Keras summary of section 4.5 ---------------------------------

KHALIL_PRINTED_TOTAL = 15_244_356  # 4 classes, Keras model.summary()
KHALIL_PRINTED_TRAINABLE = 7_608_580
KHALIL_BN_MOVING_STATS = 2 * 256  # moving_mean + moving_variance of the head's BatchNormalization(256)


def test_khalil_parameter_counts_match_the_printed_summary():
    model = create_model("khalil2022-vgg16", num_classes=4)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # Like with like: Keras counts the batch norm's gamma, beta, moving mean and moving variance
    # (4 * 256 = 1,024) as parameters, 512 of them trainable; PyTorch keeps the moving statistics
    # as buffers (running_mean, running_var). So PyTorch's parameter total is the printed total
    # minus those 512 values, and the trainable counts are directly comparable.
    assert params == KHALIL_PRINTED_TOTAL - KHALIL_BN_MOVING_STATS == 15_243_844
    assert trainable == KHALIL_PRINTED_TRAINABLE
    bn = model.head[1]
    assert bn.running_mean.numel() + bn.running_var.numel() == KHALIL_BN_MOVING_STATS
    assert keras_param_counts(model) == (KHALIL_PRINTED_TOTAL, KHALIL_PRINTED_TRAINABLE)
    # the printed head convolution: 524,544 parameters (a 2x2 kernel)
    assert sum(p.numel() for p in model.head[0].parameters()) == 524_544
    # frozen part = VGG16 blocks 1-4; trained part = block 5 + head + dense
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert frozen == 7_635_264
    scratch = create_model("khalil2022-scratch", num_classes=4)
    assert keras_param_counts(scratch) == (KHALIL_PRINTED_TOTAL, KHALIL_PRINTED_TOTAL - KHALIL_BN_MOVING_STATS)


def test_khalil_shapes_keep_block_5_then_a_2x2_head():
    model = create_model("khalil2022-vgg16", num_classes=4)
    pool4, pool5 = model.features[23], model.features[30]
    assert isinstance(pool4, nn.MaxPool2d) and isinstance(pool5, nn.MaxPool2d)
    shapes = _hook_shapes(model, [pool4, pool5, model.head[0], model.head[3], model.classifier], torch.rand(1, 3, 128, 128))
    assert shapes == [(512, 8, 8), (512, 4, 4), (256, 2, 2), (1024,), (4,)]
    conv = model.head[0]
    assert conv.kernel_size == (2, 2) and conv.stride == (2, 2) and conv.out_channels == 256
    assert isinstance(model.head[1], nn.BatchNorm2d) and isinstance(model.head[2], nn.ReLU)


def test_khalil_freezes_blocks_1_to_4_and_trains_block_5():
    model = create_model("khalil2022-vgg16", num_classes=8)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert all(not c.weight.requires_grad for c in convs[:10])  # blocks 1-4
    assert all(c.weight.requires_grad and c.bias.requires_grad for c in convs[10:])  # block5_conv1-3
    assert all(p.requires_grad for p in [*model.head.parameters(), *model.classifier.parameters()])


def test_khalil_scratch_is_the_same_architecture_with_nothing_frozen():
    pretrained = create_model("khalil2022-vgg16", num_classes=8)
    scratch = create_model("khalil2022-scratch", num_classes=8)
    assert {k: v.shape for k, v in pretrained.state_dict().items()} == {k: v.shape for k, v in scratch.state_dict().items()}
    assert all(p.requires_grad for p in scratch.parameters())
    assert scratch.data_config.mean == (0.0, 0.0, 0.0) and scratch.data_config.std == (1.0, 1.0, 1.0)


def test_khalil_refuses_inputs_too_small_for_the_head():
    with pytest.raises(ConfigError, match="at least 64"):
        _meta("khalil2022-vgg16", 4, input_size=63)
    assert _meta("khalil2022-vgg16", 4, input_size=64).classifier.in_features == 256


# --- Risodkar et al. 2024: its printed model.summary --------------------------------------

RISODKAR_PRINTED_TOTAL = 973_188  # 4 classes


def test_risodkar_parameter_count_matches_the_printed_summary():
    model = create_model("risodkar2024-cnn", num_classes=4)
    # no batch norm, so PyTorch and Keras count the same parameters
    assert sum(p.numel() for p in model.parameters()) == RISODKAR_PRINTED_TOTAL
    assert keras_param_counts(model) == (RISODKAR_PRINTED_TOTAL, RISODKAR_PRINTED_TOTAL)
    assert model.data_config.input_size == 102


def test_risodkar_shapes_are_the_printed_ones():
    model = create_model("risodkar2024-cnn", num_classes=4)
    stages = [m for m in model.features if isinstance(m, (nn.Conv2d, nn.MaxPool2d))] + [model.classifier[0]]
    shapes = _hook_shapes(model, stages, torch.rand(1, 3, 102, 102))
    assert shapes == [(64, 98, 98), (64, 49, 49), (256, 24, 24), (256, 11, 11), (128, 5, 5), (128, 4, 4), (2048,)]
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0]) for c in convs] == [(64, 5), (256, 3), (128, 3)]
    assert [m.out_features for m in model.classifier if isinstance(m, nn.Linear)] == [256, 4]


def test_risodkar_input_size_limits():
    with pytest.raises(ConfigError, match="at least 50"):
        _meta("risodkar2024-cnn", 4, input_size=49)
    with torch.no_grad():
        assert create_model("risodkar2024-cnn", num_classes=4, input_size=50)(torch.rand(1, 3, 50, 50)).shape == (1, 4)


# --- Asghar et al. 2023: built from its text ---------------------------------------------


def test_asghar_blocks_pool_with_stride_1_and_keep_their_size_through_same_convolutions():
    model = create_model("asghar2023-cnn", num_classes=4, input_size=20)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert [c.out_channels for c in convs] == [32, 64, 64, 64, 128, 256, 256]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" for c in convs)
    assert all(p.kernel_size == 2 and p.stride == 1 for p in pools) and len(pools) == 7
    assert [m.p for m in model.features if isinstance(m, nn.Dropout)] == [0.25] * 7
    shapes = _hook_shapes(model, [m for pair in zip(convs, pools) for m in pair], torch.rand(1, 3, 20, 20))
    sides = [s[1] for s in shapes]
    assert sides == [20, 19, 19, 18, 18, 17, 17, 16, 16, 15, 15, 14, 14, 13]  # conv keeps, each pool trims one
    assert [m.out_features for m in model.classifier if isinstance(m, nn.Linear)] == [128, 4]


def test_asghar_size_at_the_paper_input_follows_from_the_text():
    # No count is printed in the paper; this is the count its text implies at 100x100:
    # convolutions 1,052,352 + dense 256*93*93 -> 128 (283,410,560) + dense 128 -> 4 (516).
    model = _meta("asghar2023-cnn", 4)
    assert model.classifier[1].in_features == 256 * 93 * 93
    assert sum(p.numel() for p in model.parameters()) == 284_463_428
    five = _meta("asghar2023-cnn", 4, hidden_layers=5)
    assert [m.out_features for m in five.classifier if isinstance(m, nn.Linear)] == [128] * 5 + [4]
    with pytest.raises(ConfigError, match="at least 8"):
        _meta("asghar2023-cnn", 4, input_size=7)


# --- Veena et al. -----------------------------------------------------------------------


def test_veena_freezes_stem_and_first_two_stages():
    model = create_model("veena-resnet50", num_classes=8, input_size=96)
    for name in ("conv1", "bn1", "layer1", "layer2"):
        assert all(not p.requires_grad for p in getattr(model, name).parameters())
    assert isinstance(model.bn1, FrozenBatchNorm2d)
    for name in ("layer3", "layer4", "fc"):
        assert all(p.requires_grad for p in getattr(model, name).parameters())
    assert model.drop_rate > 0 and model.fc.out_features == 8


def test_veena_does_not_claim_the_paper_states_its_input_size():
    entry = get_model_entry("veena-resnet50")
    assert "not stated" in entry.paper.input_note.lower() and "our choice" in entry.paper.input_note
    doc = entry.builder.__doc__
    assert "does not state its input size" in doc and "224x224 input" not in doc


# --- paper information, recipes, CLI ------------------------------------------------------


def test_printed_figures_on_the_entries_are_the_papers():
    expected = {
        "khalil2022-vgg16": (KHALIL_PRINTED_TOTAL, KHALIL_PRINTED_TRAINABLE, 4),
        "khalil2022-scratch": (KHALIL_PRINTED_TOTAL, None, 4),
        "risodkar2024-cnn": (RISODKAR_PRINTED_TOTAL, None, 4),
        "asghar2023-cnn": (None, None, None),
        "veena-resnet50": (None, None, None),
    }
    for name, figures in expected.items():
        paper = get_model_entry(name).paper
        assert (paper.printed_params, paper.printed_trainable_params, paper.printed_num_classes) == figures, name
    assert get_model_entry("khalil2022-scratch").paper.claims == {"accuracy (from scratch)": "82 %"}


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_every_paper_entry_documents_its_source_and_recipe(name):
    entry = get_model_entry(name)
    paper = entry.paper
    assert paper is not None and paper.citation and paper.input_note and paper.claims
    assert len(paper.choices) >= 3 and all(choice.strip() for choice in paper.choices)
    path = recipe_path(name)
    assert path == ROOT.parents[1] / paper.recipe
    config = resolve_config(name, {})
    assert config.model == name and config.input_size == entry.data_config.input_size
    assert config.pretrained == (name in ("khalil2022-vgg16", "veena-resnet50"))
    assert name in (RECIPES / "README.md").read_text()
    assert json.loads(path.read_text())["model"] == name


def test_khalil_recipe_is_the_papers():
    config = resolve_config(RECIPES / "khalil2022-vgg16.json", {})
    assert (config.optimizer, config.lr, config.epochs, config.augment) == ("adam", 1e-3, 40, "literature")


def test_asghar_documents_its_contradictions():
    doc = get_model_entry("asghar2023-cnn").builder.__doc__
    assert "Contradictions and choices" in doc and "five hidden dense layers" in doc
    assert any("five hidden dense layers" in c for c in get_model_entry("asghar2023-cnn").paper.choices)


def test_models_info_shows_the_printed_count_and_the_choices():
    from bloodcell.cli.models import app

    result = CliRunner().invoke(app, ["info", "khalil2022-vgg16"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())  # rich wraps long lines
    assert "printed parameters (4 classes): 15,244,356 (7,608,580 trainable)" in flat
    assert "counted as Keras does: 15,244,356 (7,608,580 trainable); PyTorch parameters 15,243,844" in flat
    assert "82 %" in flat and "Khalil et al., 2022" in flat and "bloodcell/resources/configs/papers/khalil2022-vgg16.json" in flat
    for choice in get_model_entry("khalil2022-vgg16").paper.choices:
        assert " ".join(choice.split()) in flat
    assert "block 5 was removed" in flat


# --- behaviour other code relies on ------------------------------------------------------


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
    assert all(not p.requires_grad for p in loaded.features[:24].parameters())
    assert all(p.requires_grad for p in loaded.features[24:].parameters())
    assert torch.equal(loaded.classifier.bias, torch.full((3,), 0.5))

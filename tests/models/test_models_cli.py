"""``bloodcell models list`` and ``info``."""

from __future__ import annotations

import re

import torch
from typer.testing import CliRunner

from bloodcell.cli.models import app
from bloodcell.models import create_model, list_models

runner = CliRunner()
WIDE = {"COLUMNS": "220"}


def test_list_shows_every_entry_with_parameter_count_and_input_size():
    result = runner.invoke(app, ["list"], env=WIDE)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    for entry in list_models():
        if not getattr(entry.builder, "func", entry.builder).__module__.startswith("bloodcell."):
            continue  # a tiny model another test registered: not part of bloodcell's registry
        assert entry.name in rows
        if entry.kind != "torch":
            assert "│ -" in rows[entry.name]
    with torch.device("meta"):  # asghar2023-cnn has 284 M parameters: count them without allocating
        expected = sum(p.numel() for p in create_model("asghar2023-cnn", num_classes=8).parameters())
    assert f"{expected / 1e6:.2f}M" in rows["asghar2023-cnn"]
    assert re.search(r"│\s*299\s*│", rows["inception_v3"]) and "1/255" in rows["risodkar2024-cnn"]
    with torch.device("meta"):  # other head sizes are counted on models built on the meta device
        four = sum(p.numel() for p in create_model("resnet18", num_classes=4).parameters())
    four_rows = runner.invoke(app, ["list", "--num-classes", "4"], env=WIDE).output
    assert f"{four / 1e6:.2f}M" in next(line for line in four_rows.splitlines() if "│ resnet18 " in line)


def test_list_all_timm_pattern():
    result = runner.invoke(app, ["list", "--all-timm", "efficientnet_lite*"], env=WIDE)
    assert result.exit_code == 0 and "efficientnet_lite4" in result.output and "5 timm models" in result.output


def test_info_prints_the_paper_choices():
    result = runner.invoke(app, ["info", "asghar2023-cnn"], env=WIDE)
    assert result.exit_code == 0
    flat = " ".join(result.output.split())
    assert "100x100" in flat and "stride 1" in flat and "hidden_layers=5" in flat
    assert "printed parameters: none printed in the paper as we read it" in flat
    assert "this build (8 classes, 100x100): 284,463,944 parameters" in flat


def test_info_of_unknown_name_raises_config_error():
    result = runner.invoke(app, ["info", "no_such_net"])
    assert result.exit_code != 0 and "no_such_net" in str(result.exception)

"""``reproduce``: each paper's protocol (leaks included) beside an honest one, on synthetic data in seconds."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file
from torch import nn
from typer.testing import CliRunner

from bloodcell.checkpoint import read_checkpoint_meta
from bloodcell.cli import main as cli_main
from bloodcell.cli.reproduce import reproduce as reproduce_command
from bloodcell.data.manifest import ManifestRow, read_manifest, write_manifest
from bloodcell.data.registry import PBC_CLASSES
from bloodcell.errors import ConfigError, DataError, WeightsUnavailableError
from bloodcell.models.pretrained import load_weights_file
from bloodcell.models.registry import _REGISTRY, register_model, registered_entries
from bloodcell.provenance import file_sha256
from bloodcell.train.config import resolve_config
from bloodcell.workflows import reproduce as rep

TINY = "test-tiny-reproduce-net"
BCCD_COLOURS = {"eosinophil": (200, 60, 60), "lymphocyte": (60, 60, 200), "monocyte": (60, 180, 60),
                "neutrophil": (200, 200, 60), "basophil": (120, 40, 160)}
#: Recipe options replaced so a paper's protocol runs in seconds: a tiny colour net, two small epochs.
FAST = {"model": TINY, "input_size": 16, "epochs": 1, "batch_size": 8, "cache": False, "threads": 1,
        "pretrained": False}


class ColourNet(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


if TINY not in _REGISTRY:
    @register_model(TINY, input_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    def _tiny(num_classes, pretrained=False, input_size=16, **kwargs):
        """Tiny colour classifier for the reproduce tests."""
        return ColourNet(num_classes)


def _voc(image_id: str, size: tuple[int, int], box: tuple[int, int, int, int]) -> str:
    x1, y1, x2, y2 = box
    return (f"<annotation><filename>{image_id}.jpg</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            f"<depth>3</depth></size><object><name>WBC</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object></annotation>")


def make_bccd(root: Path, cells_per_type: int = 10, seed: int = 0) -> Path:
    """``root/bccd``: small smears, each with one white cell (a disc coloured by its type), VOC boxes and labels."""
    rng = np.random.default_rng(seed)
    folder = root / "bccd"
    (folder / "JPEGImages").mkdir(parents=True)
    (folder / "Annotations").mkdir()
    lines = ["image_id,wbc_type"]
    for t, (wbc_type, colour) in enumerate(BCCD_COLOURS.items()):
        for i in range(cells_per_type if wbc_type != "basophil" else 1):
            image_id = f"BloodImage_{t}{i:03d}"
            smear = Image.new("RGB", (96, 72), (230, 205, 210))
            cx, cy = int(rng.integers(30, 66)), int(rng.integers(24, 48))
            ImageDraw.Draw(smear).ellipse((cx - 12, cy - 12, cx + 12, cy + 12), fill=colour)
            smear.save(folder / "JPEGImages" / f"{image_id}.jpg", quality=95)
            (folder / "Annotations" / f"{image_id}.xml").write_text(_voc(image_id, smear.size, (cx - 13, cy - 13, cx + 13, cy + 13)))
            lines.append(f"{image_id},{wbc_type}")
    (folder / "wbc_labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def make_pbc(root: Path, per_split: dict[str, int], duplicate_pairs: int = 0, seed: int = 0) -> Path:
    """``root/pbc/<class>/`` colour squares and a frozen-like manifest; ``duplicate_pairs`` pairs of training
    images per class share a duplicate group."""
    rng = np.random.default_rng(seed)
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (200, 40, 200), (40, 200, 200),
               (120, 120, 120), (240, 160, 60)]
    rows = []
    for k, name in enumerate(PBC_CLASSES):
        index = 0
        for split, n in per_split.items():
            for j in range(n):
                copies = 2 if split == "train" and j < duplicate_pairs else 1
                group = f"dup:{name}/{index:04d}.png" if copies == 2 else ""
                for _ in range(copies):
                    path = root / "pbc" / name / f"{index:04d}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    noise = rng.integers(-20, 21, size=(24, 24, 3))
                    Image.fromarray(np.clip(np.array(colours[k]) + noise, 0, 255).astype(np.uint8)).save(path)
                    rows.append(ManifestRow(f"{name}/{index:04d}.png", name, name, split, file_sha256(path), group))
                    index += 1
    write_manifest(root / "pbc-frozen.csv", "pbc", rows)
    return root / "pbc-frozen.csv"


def _groups_by_split(manifest) -> dict[str, set[str]]:
    splits: dict[str, set[str]] = defaultdict(set)
    for row in manifest.rows:
        splits[row.group or row.path].add(row.split)
    return splits


# --------------------------------------------------------------------------------------------------
# The data: the leaky protocol really leaks, the honest one never does
# --------------------------------------------------------------------------------------------------


def test_bccd_copies_paper_split_crosses_cells_and_honest_split_never_does(tmp_path):
    make_bccd(tmp_path / "data")
    folder = rep.build_bccd_copies(tmp_path / "out" / "data" / "bccd4", tmp_path / "data", seed=0, per_class=12)
    paper, honest = read_manifest(folder / "paper.csv"), read_manifest(folder / "honest.csv")
    assert {r.label for r in paper.rows} == set(rep.BCCD4)  # the basophil is left out, as in Kaggle's set
    per_type = defaultdict(int)
    for row in paper.rows:
        per_type[row.label] += 1
    assert dict(per_type) == {t: 12 for t in rep.BCCD4}  # classes balanced by the number of copies
    crossing = [g for g, splits in _groups_by_split(paper).items() if {"train", "test"} <= splits]
    assert crossing, "the paper's protocol must put copies of one cell in train and in test"
    assert all(len(splits) == 1 for splits in _groups_by_split(honest).values())
    test_rows = [r for r in honest.rows if r.split == "test"]
    assert test_rows and all(r.path.endswith("_000.jpg") for r in test_rows)  # each test cell once, unaugmented
    assert len({r.group for r in test_rows}) == len(test_rows)
    leaks = rep.leak_counts(folder / "paper.csv", folder / "paper.csv")
    assert leaks["scored_from_training_sources"] > 0 and leaks["scored_training_images"] == 0
    assert rep.leak_counts(folder / "honest.csv", folder / "honest.csv")["scored_from_training_sources"] == 0
    # copies are real variations of the cell, all the Kaggle-like window (here the whole small smear)
    images = [Image.open(folder / r.path) for r in paper.rows if r.group == crossing[0]]
    assert all(image.size == (96, 72) for image in images)
    assert len({np.asarray(image).tobytes() for image in images}) == len(images)


def test_bccd_copies_are_built_once_and_are_deterministic(tmp_path):
    make_bccd(tmp_path / "data")
    first = rep.build_bccd_copies(tmp_path / "a", tmp_path / "data", seed=3, per_class=6)
    second = rep.build_bccd_copies(tmp_path / "b", tmp_path / "data", seed=3, per_class=6)
    assert (first / "paper.csv").read_bytes() == (second / "paper.csv").read_bytes()
    assert (first / "honest.csv").read_bytes() == (second / "honest.csv").read_bytes()
    stamp = (first / "paper.csv").stat().st_mtime_ns
    rep.build_bccd_copies(first, tmp_path / "data", seed=3, per_class=6)
    assert (first / "paper.csv").stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob(".*.tmp"))


def test_copies_per_cell_balance_a_class_and_keep_every_cell():
    assert rep.copies_per_cell(4, 10) == [3, 3, 2, 2]
    assert rep.copies_per_cell(5, 2) == [1, 1, 1, 1, 1]


def test_pbc_protocols_random_split_crosses_duplicates_and_asghar_scores_training_images(tmp_path):
    frozen = make_pbc(tmp_path, {"train": 12, "val": 3, "test": 3}, duplicate_pairs=3)
    manifest = read_manifest(frozen)
    assert all(len(s) == 1 for s in _groups_by_split(manifest).values())
    assert rep.leak_counts(frozen, frozen) == {"scored_set_images": 8 * 3, "scored_training_images": 0,
                                               "scored_from_training_sources": 0}
    random = rep.random_image_split(manifest, tmp_path / "random.csv", seed=0)
    assert any(len(s) > 1 for s in _groups_by_split(read_manifest(random)).values())  # duplicates ignored
    assert rep.leak_counts(random, random)["scored_from_training_sources"] > 0
    everything = rep.all_images_as_test(manifest, tmp_path / "all.csv")
    leaks = rep.leak_counts(frozen, everything)
    assert leaks["scored_set_images"] == len(manifest.rows)
    assert leaks["scored_training_images"] == sum(r.split == "train" for r in manifest.rows)


# --------------------------------------------------------------------------------------------------
# The workflow: both figures, one clear error for bad options
# --------------------------------------------------------------------------------------------------


def _settings(tmp_path: Path, **kwargs) -> rep.Settings:
    base = {"budget_s": 20.0, "data_root": tmp_path / "data", "copies_per_class": 30, "n_boot": 20, "overrides": FAST}
    return rep.Settings(**{**base, **kwargs})


def _check_figure(result: dict, out: Path) -> None:
    acc = result["accuracy"]
    assert 0.0 <= acc["low"] <= acc["estimate"] <= acc["high"] <= 1.0
    assert result["scored_images"] > 0 and (out / result["report"] / "metrics.json").is_file()


def test_reproduce_bccd_paper_reports_both_protocols_side_by_side(tmp_path, monkeypatch):
    make_bccd(tmp_path / "data")
    out = tmp_path / "out"
    # Khalil's recipe squashes images (resize: squash); the decoded-image cache is on, as in real runs
    settings = _settings(tmp_path, overrides={**FAST, "cache": True, "cache_dir": str(tmp_path / "cache")})
    (record,) = rep.reproduce("khalil2022-scratch", out, settings)
    saved = json.loads((out / "khalil2022-scratch" / rep.RESULT_FILE).read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved["claimed"] and saved["budget_s"] == 20.0
    assert saved["recipe"] == "bloodcell/resources/configs/papers/khalil2022-scratch.json"
    assert saved["command"].startswith("bloodcell reproduce khalil2022-scratch") and "commit" in saved
    paper, honest = saved["ours_paper_protocol"], saved["ours_honest"]
    for result in (paper, honest):
        _check_figure(result, out)
    assert paper["leaks"]["scored_from_training_sources"] > 0 and honest["leaks"]["scored_from_training_sources"] == 0
    assert paper["run"] != honest["run"]  # the two splits train on different images
    assert json.loads((out / paper["report"] / "metrics.json").read_text())["label"] == rep.PAPER_LABEL
    honest_metrics = json.loads((out / honest["report"] / "metrics.json").read_text())
    assert honest_metrics["label"] == "TEST RESULT" and honest_metrics["is_test_result"] is True
    for result in (paper, honest):
        meta = read_checkpoint_meta(out / result["run"] / "best.safetensors")
        assert meta["data_config"]["resize"] == "squash" and meta["train_config"]["optimizer"] == "adam"
    row = (out / "khalil2022-scratch" / "reproduction.md").read_text()
    assert "khalil2022-scratch" in row and row.count(" % [") == 2 and "ImageNet" not in row
    summary = (out / "reproductions.md").read_text()
    assert "ours, paper's protocol (95% CI)" in summary and "ours, honest (95% CI)" in summary
    assert list((out / "data").iterdir()) == [out / "data" / "bccd4-seed0-30"]  # the data built stays under --output

    result = CliRunner().invoke(cli_main.app, ["reproduce", "--report", "--output", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / rep.REPORT_FILE).read_text()
    assert "<table>" in page and page.count(" % [") >= 2 and "What we had to choose" in page
    assert page.count("<img src='data:image/png;base64,") == 4  # two runs' curves, two confusion matrices
    assert "Training curves (paper&#x27;s protocol)" in page and "Confusion matrix, row-normalised (honest protocol)" in page

    def refuse(*args, **kwargs):
        raise AssertionError("a finished reproduction was run again")

    monkeypatch.setattr(rep, "run_training", refuse)
    assert rep.reproduce("khalil2022-scratch", out, settings) == [saved]


def test_reproduce_asghar_trains_once_and_scores_training_images_under_the_paper_protocol(tmp_path):
    frozen = make_pbc(tmp_path / "data", {"train": 4, "val": 2, "test": 2})
    out = tmp_path / "out"
    (record,) = rep.reproduce("asghar2023-cnn", out, _settings(tmp_path, pbc_manifest=frozen))
    paper, honest = record["ours_paper_protocol"], record["ours_honest"]
    _check_figure(paper, out)
    _check_figure(honest, out)
    assert paper["scored_images"] == 8 * 8 and honest["scored_images"] == 8 * 2
    assert paper["leaks"]["scored_training_images"] == 8 * 4 and honest["leaks"]["scored_training_images"] == 0
    assert paper["run"] == honest["run"] and not (out / "asghar2023-cnn" / "honest" / "run").exists()
    assert any("one run serves both" in note for note in honest["notes"])
    assert json.loads((out / paper["run"] / "config.json").read_text())["manifest"] == str(frozen)


@pytest.mark.parametrize("budget", [0, -5, math.nan])
def test_budget_must_be_positive_before_any_work(tmp_path, budget):
    with pytest.raises(ConfigError, match="--budget must be a positive number of seconds"):
        rep.reproduce("khalil2022-vgg16", tmp_path / "out", rep.Settings(budget_s=budget))
    assert not (tmp_path / "out").exists()


def test_a_bad_paper_name_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown paper 'vgg16'; choose one of khalil2022-vgg16, .*, or all"):
        rep.reproduce("vgg16", tmp_path / "out")
    result = CliRunner().invoke(cli_main.app, ["reproduce", "vgg16", "--output", str(tmp_path / "out")])
    assert isinstance(result.exception, ConfigError) and "unknown paper 'vgg16'" in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_every_paper_model_has_a_protocol_and_a_readable_recipe():
    papers = {e.name for e in registered_entries() if e.paper is not None} | set(rep.PIPELINES)
    assert papers == set(rep.PROTOCOLS) and rep.paper_names("all") == list(rep.PROTOCOLS)
    for name in papers:
        assert resolve_config(rep.recipe_path(name)).model == rep.PIPELINES.get(name, (name,))[0]
    assert resolve_config(rep.recipe_path("khalil2022-vgg16")).resize == "squash"


def test_command_table_help_is_the_command_docstring():
    assert cli_main.COMMANDS["reproduce"] == ("bloodcell.cli.reproduce:reproduce",
                                              reproduce_command.__doc__.strip().splitlines()[0])


def test_recipe_gets_the_budget_seed_and_imagenet_weights_file(tmp_path):
    arm = rep.Arm("paper", "words", tmp_path / "m.csv", tmp_path / "m.csv", "pbc", None, "pbc8", True)
    config, notes = rep._train_config("khalil2022-vgg16", arm, rep.Settings(budget_s=123, seed=4), tmp_path / "run")
    assert (config.model, config.resize, config.optimizer, config.input_size) == ("khalil2022-vgg16", "squash", "adam", 128)
    assert config.time_budget_s == 123 and config.seed == 4 and config.manifest == str(tmp_path / "m.csv")
    assert config.pretrained is True and config.pretrained_weights is None
    weights = tmp_path / "vgg16.safetensors"
    weights.write_bytes(b"not checked here")
    config, notes = rep._train_config("khalil2022-vgg16", arm, rep.Settings(imagenet_weights=weights), tmp_path / "run")
    assert config.pretrained_weights == str(weights) and file_sha256(weights) in notes[0]
    config, notes = rep._train_config("risodkar2024-cnn", arm, rep.Settings(imagenet_weights=weights), tmp_path / "run")
    assert config.pretrained is False and config.pretrained_weights is None and notes == []


def test_a_transfer_learning_paper_without_imagenet_weights_is_not_run_and_says_so(tmp_path, monkeypatch):
    make_bccd(tmp_path / "data")
    monkeypatch.setattr(rep, "pretrained_available", lambda name: False)
    monkeypatch.setattr(rep, "run_training", lambda *a, **k: pytest.fail("a stand-in was trained from scratch"))
    out = tmp_path / "out"
    (record,) = rep.reproduce("khalil2022-vgg16", out, rep.Settings(data_root=tmp_path / "data"))
    assert record["status"] == rep.NOT_RUN
    reason = record["ours_paper_protocol"]["reason"]
    assert "bloodcell reproduce khalil2022-vgg16 --pretrained recipe" in reason and "--imagenet-weights" in reason
    row = (out / "reproductions.md").read_text()
    assert row.count("not run: no ImageNet weights on this machine") == 2 and " % [" not in row
    page = rep.write_report_page(out).read_text()
    assert "Not reproduced: khalil2022-vgg16&#x27;s recipe is transfer learning" in page and "<img" not in page
    with pytest.raises(WeightsUnavailableError, match="cannot be had on this machine"):
        rep.reproduce("khalil2022-vgg16", tmp_path / "strict", rep.Settings(data_root=tmp_path / "data",
                                                                            pretrained="recipe"))


TINY_PRETRAINED = "test-tiny-pretrained-net"
BUILT_WITH: list = []

if TINY_PRETRAINED not in _REGISTRY:
    @register_model(TINY_PRETRAINED, input_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    def _tiny_pretrained(num_classes, pretrained=False, input_size=16, **kwargs):
        """Tiny colour classifier that loads ImageNet-like weights from a file, as the transfer recipes do."""
        BUILT_WITH.append(pretrained)
        model = ColourNet(num_classes)
        if pretrained and pretrained is not True:
            load_weights_file(model, pretrained)
        return model


def test_a_transfer_learning_recipe_runs_from_a_local_imagenet_weights_file(tmp_path, monkeypatch):
    make_bccd(tmp_path / "data")
    monkeypatch.setattr(rep, "pretrained_available", lambda name: False)  # no download here: the file is used
    source = ColourNet(1000)
    weights = tmp_path / "imagenet.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    BUILT_WITH.clear()
    settings = _settings(tmp_path, imagenet_weights=weights, pretrained="recipe",
                         overrides={**FAST, "model": TINY_PRETRAINED, "pretrained": True})
    (record,) = rep.reproduce("khalil2022-vgg16", tmp_path / "out", settings)
    assert record["status"] == "done"
    assert [p for p in BUILT_WITH if p] == [str(weights)] * 2  # each protocol's training (scoring loads checkpoints)
    for key in ("ours_paper_protocol", "ours_honest"):
        assert any(file_sha256(weights) in note for note in record[key]["notes"])
        config = json.loads((tmp_path / "out" / record[key]["run"] / "config.json").read_text())
        assert config["pretrained"] is True and config["pretrained_weights"] == str(weights)
    with pytest.raises(ConfigError, match="ImageNet weights file not found"):
        rep.reproduce("khalil2022-vgg16", tmp_path / "x", rep.Settings(imagenet_weights=tmp_path / "missing.pth"))


def test_risodkars_classical_pipeline_is_reproduced_under_both_protocols(tmp_path):
    make_bccd(tmp_path / "data")
    (record,) = rep.reproduce("risodkar2024-svm", tmp_path / "out", _settings(tmp_path, overrides={"threads": 1}))
    assert record["paper"].startswith("Risodkar et al., 2024") and record["recipe"] == "bloodcell/resources/configs/papers/risodkar2024-svm.json"
    paper, honest = record["ours_paper_protocol"], record["ours_honest"]
    for result in (paper, honest):
        _check_figure(result, tmp_path / "out")
        assert result["epochs"] == 0
    assert paper["leaks"]["scored_from_training_sources"] > 0 and honest["leaks"]["scored_from_training_sources"] == 0
    assert "fitted once" in (tmp_path / "out" / "reproductions.md").read_text()


def test_missing_data_is_refused_before_any_work(tmp_path):
    make_bccd(tmp_path / "data")  # BCCD only: no PBC
    settings = rep.Settings(data_root=tmp_path / "data", pbc_manifest=tmp_path / "missing.csv")
    with pytest.raises(DataError, match="pbc"):
        rep.reproduce("veena-resnet50", tmp_path / "out", settings)
    make_pbc(tmp_path / "data", {"train": 1})
    with pytest.raises(DataError, match="missing.csv: PBC manifest not found"):
        rep.reproduce("all", tmp_path / "out", settings)
    assert not (tmp_path / "out").exists()


def test_an_interrupted_reproduction_resumes_from_its_last_epoch_and_matches_an_uninterrupted_one(tmp_path, monkeypatch):
    make_bccd(tmp_path / "data")
    settings = _settings(tmp_path, budget_s=None, overrides={**FAST, "epochs": 3})
    whole = rep.reproduce("risodkar2024-cnn", tmp_path / "whole", settings)[0]

    real_training = rep.run_training
    calls = []

    def stopped_after_two_epochs(config, **kwargs):
        calls.append(kwargs)

        def stop(row):
            if row["epoch"] == 2:
                raise KeyboardInterrupt
        return real_training(config, on_epoch=stop, **kwargs)

    monkeypatch.setattr(rep, "run_training", stopped_after_two_epochs)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        rep.reproduce("risodkar2024-cnn", out, settings)
    run = out / "risodkar2024-cnn" / "paper" / "run"
    assert (run / "last.pt").is_file() and not (out / "risodkar2024-cnn" / rep.RESULT_FILE).exists()
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 2

    resumed_epochs = []

    def resumed(config, **kwargs):
        calls.append(kwargs)
        return real_training(config, on_epoch=lambda row: resumed_epochs.append(row["epoch"]), **kwargs)

    monkeypatch.setattr(rep, "run_training", resumed)
    record = rep.reproduce("risodkar2024-cnn", out, settings)[0]
    assert calls[1] == {"resume": True, "overwrite": False} and resumed_epochs[0] == 3  # epochs 1-2 not redone
    for protocol in ("ours_paper_protocol", "ours_honest"):
        mine, reference = record[protocol], whole[protocol]
        assert mine["epochs"] == reference["epochs"] == 3 and mine["stop_reason"] == "completed"
        assert mine["accuracy"] == reference["accuracy"] and mine["macro_f1"] == reference["macro_f1"]
        assert mine["stop_rule"] == "until the validation loss had not improved for 5 epochs, at most 3"
        resumed_weights = load_file(out / mine["run"] / "best.safetensors")
        whole_weights = load_file(tmp_path / "whole" / reference["run"] / "best.safetensors")
        assert resumed_weights.keys() == whole_weights.keys()
        assert all(torch.equal(resumed_weights[k], whole_weights[k]) for k in whole_weights)

    # a scored protocol is read back, not scored again
    (out / "risodkar2024-cnn" / rep.RESULT_FILE).unlink()
    monkeypatch.setattr(rep, "score_arm", lambda *a, **k: pytest.fail("a scored protocol was scored again"))
    assert rep.reproduce("risodkar2024-cnn", out, settings)[0]["ours_honest"] == record["ours_honest"]


def test_a_resumed_run_that_stopped_early_trains_no_further(tmp_path):
    make_bccd(tmp_path / "data")
    settings = _settings(tmp_path, budget_s=None, overrides={**FAST, "epochs": 30, "early_stopping_patience": 1,
                                                             "lr": 10.0})
    first = rep.reproduce("risodkar2024-cnn", tmp_path / "out", settings)[0]["ours_paper_protocol"]
    assert first["stop_reason"] == "early_stopping" and first["epochs"] < 30
    assert first["stop_rule"] == "until the validation loss had not improved for 1 epochs, at most 30"
    for path in (tmp_path / "out").glob(f"risodkar2024-cnn/*/{rep.ARM_FILE}"):
        path.unlink()
    (tmp_path / "out" / "risodkar2024-cnn" / rep.RESULT_FILE).unlink()
    again = rep.reproduce("risodkar2024-cnn", tmp_path / "out", settings)[0]["ours_paper_protocol"]
    assert again["epochs"] == first["epochs"] and again["stop_reason"] == "early_stopping"


def test_the_report_needs_finished_reproductions_and_a_run_needs_a_paper(tmp_path):
    with pytest.raises(DataError, match="holds no reproduction"):
        rep.write_report_page(tmp_path)
    result = CliRunner().invoke(cli_main.app, ["reproduce", "--output", str(tmp_path / "out")])
    assert isinstance(result.exception, ConfigError) and "name a paper model" in str(result.exception)


def test_reproduce_trains_on_the_threads_it_is_given(tmp_path, monkeypatch):
    make_bccd(tmp_path / "data")
    seen = []
    real_fit = rep.run_training.__globals__["_run"]

    def spy(config, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_fit(config, *args, **kwargs)

    monkeypatch.setitem(rep.run_training.__globals__, "_run", spy)
    before = torch.get_num_threads()
    fast = {key: value for key, value in FAST.items() if key != "threads"}
    rep.reproduce("risodkar2024-cnn", tmp_path / "out", _settings(tmp_path, threads=1, overrides=fast))
    assert seen == [1, 1] and torch.get_num_threads() == before


def test_papers_not_finished_training_get_a_row_with_their_progress(tmp_path):
    """A paper whose training has started but not finished is listed with how far each protocol has got."""
    paper_run = tmp_path / "asghar2023-cnn" / "paper" / "run"
    paper_run.mkdir(parents=True)
    (paper_run / "config.json").write_text(json.dumps({"epochs": 30}))
    honest_run = tmp_path / "khalil2022-scratch" / "honest" / "run"
    honest_run.mkdir(parents=True)
    (honest_run / "config.json").write_text(json.dumps({"epochs": 40}))
    (honest_run / "metrics.csv").write_text("epoch,val_acc,seconds\n1,0.25,3600\n2,0.5,3600\n")
    summary = rep.write_summary(tmp_path).read_text()
    asghar = next(line for line in summary.splitlines() if line.startswith("| asghar2023-cnn"))
    assert "99.91 %" in asghar and "epoch 1 of at most 30 under way / not started" in asghar
    khalil = next(line for line in summary.splitlines() if line.startswith("| khalil2022-scratch"))
    assert "not started / 2 of at most 40 epochs done in 2.0 h, best validation accuracy 50.0 %" in khalil
    (honest_run / "metrics.csv").write_text("epoch,val_acc,seconds\n1,not a number,3600\n")
    assert "could not be read" in rep.unfinished_row("khalil2022-scratch", tmp_path)[-1]
    page = rep.write_report_page(tmp_path).read_text()
    assert "Its training has not finished, so no figure of ours yet" in page and "khalil2022-scratch" in page

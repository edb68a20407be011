"""Robustness perturbations, BCCD cross-lab crops and the robustness runner (synthetic data)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from evaluate_fixtures import (
    COLOURS,
    make_pbc_dataset,
    trained_tiny_checkpoint,
    write_image,
)
from PIL import Image, ImageDraw

from bloodcell.data.bccd import read_wbc_labels, typed_smears
from bloodcell.evaluation.perturbations import (
    LOSSLESS,
    PERTURBATIONS,
    score_images,
    zoom_in,
    zoom_out,
)
from bloodcell.workflows.cells import bccd_cells
from bloodcell.workflows.robustness import run_robustness

BACKGROUND = (230, 220, 215)
CELL = (120, 60, 150)


def cell_image(size=(90, 80), radius_fraction=0.2) -> Image.Image:
    """A purple disc (the cell) centred on a pale background, 40% of the width across."""
    image = Image.new("RGB", size, BACKGROUND)
    r = radius_fraction * size[0]
    cx, cy = size[0] / 2, size[1] / 2
    ImageDraw.Draw(image).ellipse((cx - r, cy - r, cx + r, cy + r), fill=CELL)
    return image


def disc_fraction(image: Image.Image) -> float:
    """Share of pixels closer to the cell colour than to the background."""
    a = np.asarray(image, dtype=np.float32)
    return float((np.linalg.norm(a - CELL, axis=2) < np.linalg.norm(a - BACKGROUND, axis=2)).mean())


def textured_image(seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_every_perturbation_keeps_size_and_mode_and_is_deterministic(name):
    image = cell_image()
    out = PERTURBATIONS[name].apply(image)
    assert out.size == image.size and out.mode == "RGB"
    assert np.array_equal(np.asarray(out), np.asarray(PERTURBATIONS[name].apply(image)))
    if name not in LOSSLESS:
        assert not np.array_equal(np.asarray(out), np.asarray(image)), f"{name} left the image unchanged"


def test_zoom_in_enlarges_and_zoom_out_shrinks_the_centred_cell():
    image = cell_image()
    base = disc_fraction(image)
    in70, in100 = disc_fraction(PERTURBATIONS["zoom_in_70"].apply(image)), disc_fraction(PERTURBATIONS["zoom_in_100"].apply(image))
    out = PERTURBATIONS["zoom_out_33"].apply(image)
    assert base < in70 < in100
    assert in70 == pytest.approx(base * 1.8**2, rel=0.1)
    assert disc_fraction(out) == pytest.approx(base * 0.8**2, rel=0.1)
    corner = np.asarray(out)[0, 0]
    assert tuple(corner) == BACKGROUND  # padded with the border colour, not black


def test_lossless_round_trips_and_jpeg_changes_pixels():
    image = textured_image()
    for name in LOSSLESS:
        assert np.array_equal(np.asarray(PERTURBATIONS[name].apply(image)), np.asarray(image))
    jpeg = np.asarray(PERTURBATIONS["jpeg_q40"].apply(image), dtype=np.int16)
    assert np.abs(jpeg - np.asarray(image, dtype=np.int16)).mean() > 5


def test_colour_casts_move_the_mean_colour_the_stated_way():
    image = cell_image()
    mean = np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(0)

    def shifted(name):
        return np.asarray(PERTURBATIONS[name].apply(image), dtype=np.float64).reshape(-1, 3).mean(0) - mean

    blue, red = shifted("more_blue"), shifted("more_red")
    assert blue[2] > 0 > blue[0] and red[0] > 0 > red[2]
    assert shifted("stain_lighter").sum() > 0 > shifted("stain_darker").sum()
    spread = lambda im: np.asarray(im, dtype=np.float64).std(axis=2).mean()  # noqa: E731
    assert spread(PERTURBATIONS["desaturated"].apply(image)) < 0.6 * spread(image)
    hue = np.asarray(PERTURBATIONS["hue_plus_15"].apply(image).convert("HSV"), dtype=np.int32)[..., 0]
    original = np.asarray(image.convert("HSV"), dtype=np.int32)[..., 0]
    centre = (40, 45)
    assert (hue[centre] - original[centre]) % 256 == pytest.approx(round(15 / 360 * 256), abs=2)


def voc_xml(boxes, width=200, height=150) -> str:
    objects = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
        f"<ymax>{y2}</ymax></bndbox></object>" for name, x1, y1, x2, y2 in boxes)
    return (f"<annotation><filename>x.jpg</filename><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size>{objects}</annotation>")


def test_bccd_crops_take_the_largest_wbc_and_skip_unusable_smears(tmp_path):
    root = tmp_path / "bccd"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    smear = Image.new("RGB", (200, 150), (250, 250, 250))
    draw = ImageDraw.Draw(smear)
    draw.rectangle((20, 20, 39, 39), fill=(0, 0, 255))  # small WBC
    draw.rectangle((120, 60, 179, 119), fill=(255, 0, 0))  # large WBC
    smear.save(root / "JPEGImages" / "S1.jpg", quality=95)
    (root / "Annotations" / "S1.xml").write_text(voc_xml(
        [("WBC", 20, 20, 40, 40), ("RBC", 0, 0, 100, 100), ("WBC", 120, 60, 180, 120)]))
    smear.save(root / "JPEGImages" / "S2.jpg")
    (root / "Annotations" / "S2.xml").write_text(voc_xml([("RBC", 0, 0, 50, 50)]))
    (root / "wbc_labels.csv").write_text("image_id,wbc_type\nS1,Neutrophil\nS2,lymphocyte\nS3,monocyte\nS4,alien\n")

    smears, _ = typed_smears(tmp_path)
    assert smears[0].main_box.xyxy == (120, 60, 180, 120)  # the largest WBC box
    cells = bccd_cells(tmp_path, context=1.0)
    assert cells.ids == ["S1"] and cells.labels == ["neutrophil"]
    crop = np.asarray(cells.images[0], dtype=np.int16)
    assert crop.shape[:2] == (60, 60) and crop[..., 0].mean() > 200 and crop[..., 2].mean() < 50  # the red one
    assert [i for i, _ in cells.skipped] == ["S2", "S3", "S4"]
    wide = bccd_cells(tmp_path, context=2.0)
    assert wide.images[0].size == (120, 120)  # 2x the side, centred on the cell


def test_runner_scores_every_section(tmp_path):
    manifest = make_pbc_dataset(tmp_path, {"train": 1, "test": 3}, corrupt=1)
    checkpoint = trained_tiny_checkpoint(tmp_path / "tiny.safetensors")
    rng = np.random.default_rng(1)
    originals = tmp_path / "originals"
    for k, name in enumerate(["lymphocyte", "neutrophil"]):
        colour = COLOURS[[4, 6][k]]
        # image 0 is a train row of the manifest, 1 and 2 are test rows, "extra" is in no split
        for stem in (f"{name[:3].upper()}_0000", f"{name[:3].upper()}_0001", f"{name[:3].upper()}_0002", "extra"):
            write_image(originals / name / f"{stem}.jpg", colour, rng, size=36)
    bccd = tmp_path / "bccd"
    (bccd / "Annotations").mkdir(parents=True)
    (bccd / "JPEGImages").mkdir()
    rows = ["image_id,wbc_type"]
    # two smears per type: the held-out split keeps one of each out of fitting, and only those are scored
    for i, (name, colour) in enumerate([("eosinophil", COLOURS[1]), ("monocyte", COLOURS[5])] * 2):
        Image.new("RGB", (64, 48), colour).save(bccd / "JPEGImages" / f"B{i}.jpg")
        (bccd / "Annotations" / f"B{i}.xml").write_text(voc_xml([("WBC", 20, 10, 40, 30)], 64, 48))
        rows.append(f"B{i},{name}")
    (bccd / "wbc_labels.csv").write_text("\n".join(rows) + "\n")

    result = run_robustness(checkpoint, manifest, limit=None, data_root=tmp_path, originals=originals, bccd=True,
                            batch_size=5)
    json.dumps(result, allow_nan=False)
    sections = result["test_split"]
    assert list(sections) == ["clean", *PERTURBATIONS]
    clean = sections["clean"]
    assert clean["n"] == 24 and clean["accuracy"] > 0.9  # nearest-colour model on coloured squares
    assert [p.endswith("BA_corrupt0.png") for p, _ in result["test_skipped"]] == [True]
    for name, section in sections.items():
        assert section["n"] == 24 and 0 <= section["accuracy"] <= 1 and section["seconds"] >= 0
        assert set(section["recall"]) <= set(result["class_names"])
    for name in LOSSLESS:
        assert sections[name]["identical_to_clean"] and sections[name]["accuracy"] == clean["accuracy"]
    assert sections["more_red"]["changed_predictions"] >= 0
    assert result["originals"]["n"] == 4 and result["originals"]["sizes"] == {"36x36": 4}  # the test split's only
    assert result["originals"]["split_of_originals"] == {"train": 2, "test": 4, "not in manifest": 2}
    assert set(result["originals"]["recall"]) == {"lymphocyte", "neutrophil"}
    assert result["originals"]["tta"]["n"] == 4 and 0 <= result["originals"]["tta"]["accuracy"] <= 1
    assert set(result["cross_lab"]) == {"bccd_box_1.3x", "bccd_box_2x"}
    for section in result["cross_lab"].values():
        assert section["n"] == 2 and section["accuracy"] == 1.0  # uniform-colour smears
        assert section["predicted_as"] == {"eosinophil": {"eosinophil": 1}, "monocyte": {"monocyte": 1}}
    assert len(result["checkpoint_sha256"]) == 64 and result["manifest_sha256"]


def test_bad_inputs_raise_clear_errors(tmp_path):
    from bloodcell.errors import ConfigError, DataError

    with pytest.raises(ConfigError):
        zoom_in(cell_image(), 0.5)
    with pytest.raises(ConfigError):
        zoom_out(cell_image(), 1.5)
    (tmp_path / "labels.csv").write_text("id,type\nS1,neutrophil\n")
    with pytest.raises(DataError, match="image_id and wbc_type"):
        read_wbc_labels(tmp_path / "labels.csv")

    class Stub:
        class_names = ["a", "b"]

    with pytest.raises(DataError, match="not classes of the model"):
        score_images(Stub(), [cell_image()], ["c"])


def test_benchmark_script_writes_json_with_provenance(tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    from bloodcell.provenance import file_sha256

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "robustness.py"
    spec = importlib.util.spec_from_file_location("robustness_benchmark", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    manifest = make_pbc_dataset(tmp_path, {"train": 1, "val": 1, "test": 2})
    checkpoint = trained_tiny_checkpoint(tmp_path / "tiny.safetensors")
    out = tmp_path / "result.json"
    args = ["--model", str(checkpoint), "--manifest", str(manifest), "--limit", "8", "--data-root", str(tmp_path),
            "--out", str(out)]
    assert module.main(args) == 0
    result = json.loads(out.read_text())
    assert result["checkpoint_sha256"] == file_sha256(checkpoint)
    assert result["manifest_sha256"] == file_sha256(manifest)
    assert "--limit 8" in result["command"] and result["test_split"]["clean"]["n"] == 8
    assert result["originals"] is None and result["cross_lab"] is None  # no such folders under tmp_path
    assert module.main([*args, "--split", "val"]) == 0  # for choosing between candidates
    result = json.loads(out.read_text())
    assert result["split"] == "val" and "test_split" not in result and result["val_split"]["clean"]["n"] == 8
    assert module.main(["--model", str(tmp_path / "missing.safetensors"), "--manifest", str(manifest)]) == 1



def test_a_pbc11_model_is_scored_with_fine_labels_and_not_on_bccd(tmp_path):
    from evaluate_fixtures import TINY

    from bloodcell.checkpoint import CheckpointMeta, save_checkpoint
    from bloodcell.data.taxonomy import get_taxonomy
    from bloodcell.models.factory import create_model

    # make_pbc_dataset's rows carry no finer label, so neutrophils and igs have no pbc11 label
    manifest = make_pbc_dataset(tmp_path, {"train": 1, "test": 2})
    rng = np.random.default_rng(2)
    for name in ("lymphocyte", "neutrophil"):  # test rows: a lymphocyte (a pbc11 class) and a neutrophil (none)
        write_image(tmp_path / "originals" / name / f"{name[:3].upper()}_0001.jpg", COLOURS[4], rng, size=36)
    names = list(get_taxonomy("pbc11").class_names)
    model = create_model(TINY, num_classes=len(names), class_names=names)
    checkpoint = save_checkpoint(tmp_path / "pbc11.safetensors", model,
                                 CheckpointMeta(model_name=TINY, data_config=model.data_config))
    result = run_robustness(checkpoint, manifest, limit=None, data_root=tmp_path, originals=tmp_path / "originals",
                            bccd=True, batch_size=8)
    assert result["taxonomy"] == "pbc11" and result["test_split"]["clean"]["n"] == 2 * 6  # 6 of 8 classes labelled
    assert result["originals"]["n"] == 1 and result["originals"]["unlabelled"] == 1
    assert result["cross_lab"] is None and "not all classes of the model" in result["cross_lab_skipped"]


def test_a_model_with_other_classes_is_refused_before_scoring(tmp_path):
    manifest = make_pbc_dataset(tmp_path, {"test": 1})
    checkpoint = trained_tiny_checkpoint(tmp_path / "tiny.safetensors", class_names=("basophil", "eosinophil"))
    from bloodcell.errors import ConfigError

    with pytest.raises(ConfigError, match="neither pbc8's nor pbc11's"):
        run_robustness(checkpoint, manifest, limit=None, data_root=tmp_path)

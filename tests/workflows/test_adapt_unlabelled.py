"""``bloodcell adapt --unlabelled``: a lab's unlabelled cells re-set the batch-norm statistics (then TENT refines the
chosen blend), unless a label-free rule says that would hurt; bad input is one sentence."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluate"))
from evaluate_fixtures import COLOURS, write_image  # noqa: E402

from bloodcell.checkpoint import CheckpointMeta, read_checkpoint_meta, save_checkpoint  # noqa: E402
from bloodcell.cli.main import app  # noqa: E402
from bloodcell.data.registry import PBC_CLASSES  # noqa: E402
from bloodcell.errors import ConfigError, DataError  # noqa: E402
from bloodcell.inference.predictor import load  # noqa: E402
from bloodcell.models import create_model  # noqa: E402
from bloodcell.models.registry import _REGISTRY, register_model  # noqa: E402
from bloodcell.workflows.adapt_unlabelled import (RULE, RULE_CALIBRATION, TENT, Rule, Tent,  # noqa: E402
                                                  adapt_unlabelled, decide, unlabelled_cells)

TINY_BN = "test-tiny-batchnorm-colour-net"
#: The new lab's stain: every colour shifted (the nearest-colour model then calls many cells wrong).
SHIFT = np.array([-45, 50, 35])


class TinyBatchNormNet(nn.Module):
    """Batch norm on the colour, then the average colour scored by a nearest-colour head."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(3)
        self.head = nn.Linear(3, num_classes)

    def forward(self, x):
        return self.head(self.norm(x).mean(dim=(2, 3)))


if TINY_BN not in _REGISTRY:
    @register_model(TINY_BN, input_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    def _tiny_bn(num_classes, pretrained=False, input_size=16, **kwargs):
        """Tiny colour classifier with a batch-norm layer, for tests."""
        return TinyBatchNormNet(num_classes)


@pytest.fixture()
def model(tmp_path) -> Path:
    return tiny_batchnorm_checkpoint(tmp_path / "tiny-bn.safetensors")


def tiny_batchnorm_checkpoint(path: Path) -> Path:
    """The nearest-colour classifier of the 8 PBC colours; its batch norm holds those colours' statistics and gives
    them back unchanged (so a lab with every colour shifted alike is put right by re-estimating them)."""
    net = create_model(TINY_BN, num_classes=len(PBC_CLASSES), class_names=list(PBC_CLASSES))
    mu = (torch.tensor(COLOURS, dtype=torch.float32) / 255 - 0.5) / 0.25
    with torch.no_grad():
        net.norm.running_mean.copy_(mu.mean(0))
        net.norm.running_var.copy_(mu.var(0))
        net.norm.weight.copy_((mu.var(0) + net.norm.eps).sqrt())
        net.norm.bias.copy_(mu.mean(0))
        net.head.weight.copy_(2 * 3.0 * mu)
        net.head.bias.copy_(-3.0 * (mu**2).sum(1))
    meta = CheckpointMeta(model_name=TINY_BN, data_config=net.eval().data_config, temperature=1.0,
                          extra={"taxonomy": "pbc8"})
    return save_checkpoint(path, net, meta)


def _lab(root: Path, per_class: dict[str, int], seed: int = 0, shift=SHIFT) -> Path:
    rng = np.random.default_rng(seed)
    for name, n in per_class.items():
        colour = np.clip(np.array(COLOURS[PBC_CLASSES.index(name)]) + shift, 0, 255)
        for i in range(n):
            write_image(root / name / f"{name}_{i}.png", colour, rng)
    return root


def _accuracy(checkpoint: Path, lab: Path) -> float:
    images = sorted(lab.rglob("*.png"))
    return float(np.mean([p.label == path.parent.name for p, path in
                          zip(load(checkpoint).predict([Image.open(p) for p in images]), images)]))


def test_cli_adapts_a_shifted_lab_end_to_end_and_records_the_decision(model, tmp_path):
    lab = _lab(tmp_path / "lab", dict.fromkeys(PBC_CLASSES, 6))
    (lab / "notes.txt").write_text("not a cell")
    (lab / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "lab.safetensors"
    result = CliRunner().invoke(app, ["adapt", "--model", str(model), "--unlabelled", str(lab), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "adapted without labels on 48 cells" in result.output and "skipped broken.png" in result.output
    record = read_checkpoint_meta(out)["unlabelled_adaptation"]
    assert record["adapted"] and record["weight"] in (0.5, 1.0)
    assert record["method"] == ("adabn+tent" if record["tent_refined"] else "adabn")
    tried = [c for c in record["candidates"] if c["tent"]]
    assert len(tried) == (1 if TENT.steps else 0)  # the calibrated refinement, tried on the chosen blend only
    assert all(t["weight"] == record["weight"] and t["accepted"] == record["tent_refined"] for t in tried)
    assert ("then TENT" in result.output) == record["tent_refined"]
    assert record["cells"] == 48 and record["lab"] == "lab" and record["source"] == "unlabelled folder"
    chosen = next(c for c in record["candidates"] if c["weight"] == record["weight"] and c["tent"] == record["tent_refined"])
    assert chosen["accepted"] and chosen["mean_entropy"] < record["unadapted"]["mean_entropy"]
    fresh = _lab(tmp_path / "fresh", dict.fromkeys(PBC_CLASSES, 3), seed=1)
    assert _accuracy(model, fresh) < 0.7 and _accuracy(out, fresh) == 1.0  # the shift fooled it; adapting fixed it


def test_the_rule_keeps_the_unadapted_model_where_adapting_hurts(model, tmp_path):
    """A lab whose stain is the model's own but which sent only neutrophils and lymphocytes: their statistics are
    not the model's 8 types', so re-estimating from them alone moves half the calls to the wrong class (checked
    below); the rule, without labels, keeps the unadapted model."""
    lab = _lab(tmp_path / "lab", {"neutrophil": 20, "lymphocyte": 20}, shift=0)
    kept = adapt_unlabelled(model, unlabelled_cells(lab), tmp_path / "kept.safetensors", "lab", "unlabelled folder")
    assert kept.decision.weight is None and all(c.reasons for c in kept.decision.candidates)
    assert not any(c.tent for c in kept.decision.candidates)  # TENT is never tried where the blends were refused
    record = read_checkpoint_meta(kept.path)["unlabelled_adaptation"]
    assert record["adapted"] is False and record["candidates"][0]["reasons"]
    assert _accuracy(kept.path, lab) == _accuracy(model, lab)  # the unadapted weights, written with the record
    from bloodcell.checkpoint import load_checkpoint
    from bloodcell.inference.predictor import Classifier
    from bloodcell.train.batchnorm import blended, lab_statistics
    from bloodcell.workflows.adapt_unlabelled import model_pixels, probabilities

    classifier = Classifier.from_checkpoint(load_checkpoint(model))
    pixels = model_pixels(classifier, unlabelled_cells(lab).images)
    normalised = torch.from_numpy(classifier.preprocess(unlabelled_cells(lab).images))
    forced = blended(classifier.model, lab_statistics(classifier.model, [normalised]), 1.0)
    truth = np.array([PBC_CLASSES.index(p.parent.name) for p in sorted(lab.rglob("*.png"))])
    assert (probabilities(classifier, forced, pixels).argmax(1) == truth).mean() <= 0.5 < _accuracy(model, lab)


def test_the_rule_refuses_surer_calls_that_collapse_or_change_most_calls():
    before = np.array([[0.6, 0.3, 0.1], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6], [0.6, 0.2, 0.2]])
    collapsed = np.array([[0.98, 0.01, 0.01]] * 4)
    surer = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9], [0.9, 0.05, 0.05]])
    changed = surer[[1, 2, 0, 1]]
    guarded = Rule(entropy_drop=0.02, spread_kept=0.75, agreement_min=0.2)  # RULE's calibration set spread_kept 0
    decision = decide(before, {0.5: collapsed, 0.75: changed, 1.0: surer}, guarded)
    assert decision.weight == 1.0
    assert "collapse" in " ".join(decision.candidates[0].reasons)
    assert "changes 100% of the calls" in " ".join(decision.candidates[1].reasons)
    assert decide(before, {1.0: before}).weight is None  # not surer: kept
    assert decide(before, {1.0: surer}, Rule(entropy_drop=0.02, spread_kept=0.75, agreement_min=1.01)).weight is None


def test_the_rule_and_refinement_in_use_are_the_calibrated_ones_and_are_recorded(model, tmp_path):
    """The thresholds and the refinement (steps, learning rate, diversity) in use are those the calibration on
    synthetic labs chose together (its committed result), and every adapted checkpoint records them with where
    they came from."""
    import json

    chosen = json.loads((Path(__file__).resolve().parents[2] / RULE_CALIBRATION).read_text())["chosen"]
    assert RULE == Rule(**{k: chosen[k] for k in ("entropy_drop", "spread_kept", "agreement_min")})
    assert TENT == Tent(**chosen["tent"])
    lab = _lab(tmp_path / "lab", dict.fromkeys(PBC_CLASSES, 4))
    done = adapt_unlabelled(model, unlabelled_cells(lab), tmp_path / "a.safetensors", "lab", "unlabelled folder")
    record = read_checkpoint_meta(done.path)["unlabelled_adaptation"]
    assert record["rule"]["calibration"] == RULE_CALIBRATION and record["rule"]["agreement_min"] == RULE.agreement_min
    assert {k: record["tent"][k] for k in ("steps", "lr", "diversity")} == chosen["tent"]


@pytest.mark.parametrize("files, message", [
    ({}, "at least 20 readable cell images .*found 0"),
    ({"a.txt": b"text", "b.png": b"not an image"}, "found 0, 1 unreadable"),
])
def test_bad_input_is_one_sentence(model, tmp_path, files, message):
    lab = tmp_path / "lab"
    lab.mkdir()
    for name, data in files.items():
        (lab / name).write_bytes(data)
    result = CliRunner().invoke(app, ["adapt", "--model", str(model), "--unlabelled", str(lab), "-o",
                                      str(tmp_path / "x.safetensors")])
    assert result.exit_code != 0 and isinstance(result.exception, DataError)
    assert pytest.importorskip("re").search(message, str(result.exception))
    assert not (tmp_path / "x.safetensors").exists()
    both = CliRunner().invoke(app, ["adapt", str(lab), "--model", str(model), "--unlabelled", str(lab), "-o",
                                    str(tmp_path / "x.safetensors")])
    assert isinstance(both.exception, ConfigError) and "not CELLS and --unlabelled" in str(both.exception)


def test_cli_adapts_from_the_typed_white_cells_of_counted_samples(tmp_path):
    """``--counted``: the white cells ``bloodcell count`` typed, cut from the sample's photos (no label used)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_review_workflow import PBC8, _smear

    torch.manual_seed(0)
    net = create_model("resnet18", num_classes=8, class_names=PBC8, input_size=32)  # has batch norm
    model = save_checkpoint(tmp_path / "r18.safetensors", net, CheckpointMeta(model_name="resnet18",
                                                                              data_config=net.data_config))
    photos = tmp_path / "samples" / "S-1"
    photos.mkdir(parents=True)
    for i in range(11):
        _smear(wbc=2, shade=i).save(photos / f"{i}.png")
    counts = tmp_path / "counts"
    counted = CliRunner().invoke(app, ["count", str(photos.parent), "-o", str(counts), "--detector", "classical",
                                       "--model", str(model)])
    assert counted.exit_code == 0, counted.output
    out = tmp_path / "lab.safetensors"
    result = CliRunner().invoke(app, ["adapt", "--model", str(model), "--counted", str(counts), "-o", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    record = read_checkpoint_meta(out)["unlabelled_adaptation"]
    assert record["source"] == "counted samples" and record["cells"] == 22 and record["lab"] == "counts"
    assert ("kept the unadapted model" in result.output) == (not record["adapted"])


def test_a_sample_with_an_unreadable_counts_json_is_skipped_and_the_others_kept(tmp_path):
    """--counted over several samples: one bad counts.json is reported and skipped, the other samples' cells kept."""
    import json

    from bloodcell.workflows.adapt_unlabelled import counted_cells

    good = tmp_path / "counts" / "S-1"
    good.mkdir(parents=True)
    Image.new("RGB", (64, 64), (200, 150, 150)).save(good / "p.png")
    box = {"label": "WBC", "x1": 20, "y1": 20, "x2": 40, "y2": 40, "wbc_type": "lymphocyte"}
    (good / "counts.json").write_text(json.dumps({"sample_id": "S-1", "sample": {},
                                                  "images": [{"path": "p.png", "boxes": [box]}]}))
    bad = tmp_path / "counts" / "S-2"
    bad.mkdir()
    (bad / "counts.json").write_text("{not json")
    cells = counted_cells(tmp_path / "counts")
    assert cells.ids == ["S-1/1-1"] and len(cells.images) == 1
    assert [name for name, _ in cells.skipped] == ["S-2"]


def test_the_decision_records_the_rule_it_was_taken_under():
    before = np.array([[0.6, 0.3, 0.1], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6]])
    strict = Rule(entropy_drop=0.5, spread_kept=0.99, agreement_min=0.9)
    recorded = decide(before, {1.0: before}, strict).to_dict()["rule"]
    assert {k: recorded[k] for k in ("entropy_drop", "spread_kept", "agreement_min")} == \
        {"entropy_drop": 0.5, "spread_kept": 0.99, "agreement_min": 0.9}


def test_tent_makes_the_calls_surer_by_tuning_only_the_batchnorm_scales_and_shifts(model, tmp_path):
    from bloodcell.checkpoint import load_checkpoint
    from bloodcell.inference.predictor import Classifier
    from bloodcell.metrics.unlabelled import entropy
    from bloodcell.train.batchnorm import blended, lab_statistics
    from bloodcell.workflows.adapt_unlabelled import model_pixels, probabilities, tent

    classifier = Classifier.from_checkpoint(load_checkpoint(model))
    images = unlabelled_cells(_lab(tmp_path / "lab", dict.fromkeys(PBC_CLASSES, 4), shift=SHIFT // 3)).images
    pixels = model_pixels(classifier, images)
    base = blended(classifier.model, lab_statistics(classifier.model, [torch.from_numpy(
        classifier.preprocess(images))]), 0.5)
    original = {k: v.clone() for k, v in base.state_dict().items()}
    tuned = tent(classifier, base, pixels)
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in original.items())  # the blend is left as it was
    changed = {k for k, v in tuned.state_dict().items() if not torch.equal(v, original[k])}
    assert changed == {"norm.weight", "norm.bias"}  # statistics and head untouched
    assert entropy(probabilities(classifier, tuned, pixels)).mean() < entropy(probabilities(classifier, base,
                                                                                           pixels)).mean()


def test_a_tent_refinement_the_rule_refuses_leaves_the_chosen_blend(model, tmp_path):
    from bloodcell.checkpoint import load_checkpoint
    from bloodcell.inference.predictor import Classifier
    from bloodcell.workflows.adapt_unlabelled import candidates, model_pixels, probabilities, refine

    classifier = Classifier.from_checkpoint(load_checkpoint(model))
    pixels = model_pixels(classifier, unlabelled_cells(_lab(tmp_path / "lab", dict.fromkeys(PBC_CLASSES, 4))).images)
    before, models = candidates(classifier, pixels)
    lenient = Rule(entropy_drop=-10.0, spread_kept=0.0, agreement_min=0.0)
    decision = decide(before, {w: probabilities(classifier, m, pixels) for w, m in models.items()}, lenient)
    strict = Rule(entropy_drop=-10.0, spread_kept=0.0, agreement_min=1.01)  # no agreement reaches it
    chosen = refine(classifier, pixels, decision, before, models, strict)
    assert chosen is models[decision.weight] and not decision.tent and decision.method == "adabn"
    assert decision.chosen.tent is False and decision.candidates[-1].tent and decision.candidates[-1].reasons


def test_a_refinement_of_no_step_leaves_the_chosen_blend_untried(model, tmp_path):
    from bloodcell.checkpoint import load_checkpoint
    from bloodcell.inference.predictor import Classifier
    from bloodcell.workflows.adapt_unlabelled import candidates, model_pixels, probabilities, refine

    classifier = Classifier.from_checkpoint(load_checkpoint(model))
    pixels = model_pixels(classifier, unlabelled_cells(_lab(tmp_path / "lab", dict.fromkeys(PBC_CLASSES, 4))).images)
    before, models = candidates(classifier, pixels)
    decision = decide(before, {w: probabilities(classifier, m, pixels) for w, m in models.items()})
    assert decision.weight is not None
    none = Tent(steps=0, lr=0.0, diversity=0.0)
    assert refine(classifier, pixels, decision, before, models, config=none) is models[decision.weight]
    assert not any(c.tent for c in decision.candidates) and decision.method == "adabn"
    assert decision.to_dict()["tent"]["steps"] == 0 and decision.to_dict()["rule"]["calibration"] is None


def test_the_diversity_term_keeps_the_tuned_calls_from_collapsing_onto_one_class():
    """Entropy alone, pushed hard, makes every call sure by sending most cells to one class; with SHOT's diversity
    term (minus the entropy of the mean prediction) the calls stay spread over the classes. Each step is yielded."""
    from bloodcell.metrics.unlabelled import prediction_statistics
    from bloodcell.train.batchnorm import entropy_steps, entropy_tuned

    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 3)).eval()
    with torch.no_grad():
        net[1].weight.copy_(2 * torch.eye(3, 4))
        net[1].bias.zero_()
    cells = torch.randn(64, 4)

    def stats(m):
        with torch.no_grad():
            return prediction_statistics(torch.softmax(m(cells), 1).numpy())

    original = {k: v.clone() for k, v in net.state_dict().items()}
    steps = list(entropy_steps(net, [cells] * 50, lr=0.1))
    assert len(steps) == 50 and all(s is steps[0] for s in steps)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in original.items())  # the model given is untouched
    alone, shot = entropy_tuned(net, [cells] * 50, 0.1), entropy_tuned(net, [cells] * 50, 0.1, diversity=1.0)
    assert stats(alone)["mean_entropy"] < stats(shot)["mean_entropy"] < stats(net)["mean_entropy"]
    assert stats(alone)["spread"] < 0.5 * stats(net)["spread"] and stats(shot)["spread"] > 0.9 * stats(net)["spread"]
    assert not any(p.requires_grad for p in shot.parameters())


def test_the_calibration_chooses_the_refinement_with_the_best_mean_gain_that_loses_no_synthetic_lab(tmp_path):
    """``benchmarks/calibrate_unlabelled_rule.py``: of two refinements that the rule accepts alike, one gains 50
    points on a synthetic lab and loses 12.5 on the other, one gains 25 and loses none: the second is chosen. Its
    cache is named by what it depends on and a file not holding exactly the expected probabilities is not used."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import calibrate_unlabelled_rule as calibration

    calls = np.array([0, 1, 2, 0] * 2)
    sure = lambda p: np.where(np.eye(3)[calls] == 1, p, (1 - p) / 2)  # noqa: E731
    both_right = {(None,): np.array([1, 0] * 4, bool)}
    probs = {(None,): sure(0.6), (0.5,): sure(0.8), (1.0,): sure(0.6)}
    probs |= {(0.5, t.steps, t.lr, t.diversity): sure(0.95) for t in calibration.refinements() if t.steps}
    probs |= {(1.0, t.steps, t.lr, t.diversity): sure(0.95) for t in calibration.refinements() if t.steps}
    gamble, safe = (0.5, 16, 1e-3, 0.0), (0.5, 8, 1e-3, 1.0)
    rows = []
    for gain in (1, -1):
        right = {key: both_right[None,] for key in probs}
        right[gamble] = np.full(8, True) if gain > 0 else np.arange(8) < 3  # +50 and -12.5: higher mean, unsafe
        right[safe] = np.array([1, 0, 1, 0, 1, 0, 1, 0], bool) | (np.arange(8) < 4) * (gain > 0)
        rows.append({"probs": probs, "right": right})
    best, table = calibration.search(rows)
    assert (best["tent"]["steps"], best["tent"]["diversity"]) == (8, 1.0) and best["mean_gain"] == 12.5
    assert best["worst_gain"] == 0.0
    gambled = [r for r in table if r["tent"]["steps"] == 16 and r["tent"]["diversity"] == 0.0]
    assert max(r["mean_gain"] for r in gambled) == 18.75 and min(r["worst_gain"] for r in gambled) == -12.5

    shift = calibration.draw_shift(np.random.default_rng(0))
    path = calibration.cache_path("ab" * 32, 8, 0, 0, shift)
    assert path != calibration.cache_path("ab" * 32, 8, 0, 0, {**shift, "blur": shift["blur"] + 0.1})
    path = tmp_path / path.name
    np.savez_compressed(path, **{json.dumps(k): v for k, v in probs.items()})
    assert calibration.cached(path, set(probs), (8, 3)) is not None
    assert calibration.cached(path, set(probs) | {(0.25,)}, (8, 3)) is None  # a key missing
    assert calibration.cached(path, set(probs), (9, 3)) is None  # other cells

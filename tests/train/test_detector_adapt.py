"""Adapting the smear detector to a lab: reading its photos, cross-validated thresholds, no forgetting, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from detector_fixtures import draw_smear, voc
from PIL import Image
from typer.testing import CliRunner

from bloodcell.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from bloodcell.data.boxes import SMEAR_LABELS as LABELS
from bloodcell.data.boxes import Box
from bloodcell.data.lab_photos import read_lab_photos
from bloodcell.errors import CheckpointError, ConfigError, DataError
from bloodcell.models import create_model
from bloodcell.models.centernet import to_input
from bloodcell.models.centernet_kept import KeptClassesCenterNet, kept_indices
from bloodcell.smear.counting import count_image
from bloodcell.smear.learned_detector import load_detector
from bloodcell.train.detector_adapt import AdaptOptions
from bloodcell.workflows import detector_adapt
from bloodcell.workflows.detector_adapt import adapt_detector, fold_of, worse_than_original

FAST = AdaptOptions(epochs=1, batch_size=4, crop=64, freeze_blocks=3)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """An untrained detector checkpoint read at 40 px per red cell (shared head, as the bundled one), platelets found everywhere."""
    torch.manual_seed(0)
    model = create_model("centernet-lite0", num_classes=3, pretrained=False, class_names=LABELS, input_size=64,
                         shared_head=True)
    with torch.no_grad():
        model.heatmap.bias[2] += 3.0  # an untrained network: let its platelet peaks stand out above the others
    path = tmp_path_factory.mktemp("base") / "base.safetensors"
    save_checkpoint(path, model, CheckpointMeta(
        model_name="centernet-lite0", data_config=model.data_config, model_kwargs={"shared_head": True},
        extra={"detector": {"thresholds": {"RBC": 0.3, "WBC": 0.3, "Platelets": 0.12}, "input_size": 64,
                            "cell_size_px": 40}}))
    return path


def _lab(folder, count: int = 4, platelets: bool = True):
    """``count`` synthetic smears with VOC labels beside them (no platelet boxes unless ``platelets``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, boxes = draw_smear(index)
        image.save(folder / f"photo{index}.png")
        boxes = [b for b in boxes if platelets or b[0] != "Platelets"]
        (folder / f"photo{index}.xml").write_text(voc(f"photo{index}", boxes))
    return folder


def test_lab_photos_read_voc_and_yolo_and_skip_bad_ones_with_a_reason(tmp_path):
    lab = _lab(tmp_path / "lab", 2)
    draw_smear(5)[0].save(lab / "yolo.jpg")
    (lab / "yolo.txt").write_text("0 0.5 0.5 0.1 0.1\n2 0.2 0.2 0.05 0.05\n")  # no classes.txt: RBC, WBC, Platelets
    draw_smear(6)[0].save(lab / "unlabelled.png")
    draw_smear(7)[0].save(lab / "broken.png")
    (lab / "broken.xml").write_text("<annotation><object>")
    draw_smear(8)[0].save(lab / "neutrophil.png")
    (lab / "neutrophil.xml").write_text(voc("neutrophil", [("Neutrophil", 1, 1, 50, 50)]))
    photos, skipped = read_lab_photos(lab)
    assert [p.name for p in photos] == ["photo0.png", "photo1.png", "yolo.jpg"]
    assert [b.label for b in photos[2].annotation.boxes] == ["RBC", "Platelets"]
    assert photos[2].annotation.boxes[0].xyxy == pytest.approx((288.0, 216.0, 352.0, 264.0))
    assert all(len(p.sha256) == 64 for p in photos) and photos[0].sha256 != photos[1].sha256
    reasons = {path.split("/")[-1]: reason for path, reason in skipped}
    assert set(reasons) == {"unlabelled.png", "broken.png", "neutrophil.png"}
    assert "no labels beside it" in reasons["unlabelled.png"] and "malformed VOC XML" in reasons["broken.png"]
    assert "'Neutrophil' is not one of RBC, WBC, Platelets" in reasons["neutrophil.png"]
    (lab / "classes.txt").write_text("Platelets\nWBC\nRBC\n")  # a classes.txt beside the photos names the indices
    assert [b.label for b in read_lab_photos(lab)[0][2].annotation.boxes] == ["Platelets", "RBC"]
    with pytest.raises(DataError, match="not a folder"):
        read_lab_photos(tmp_path / "missing")


def test_folds_are_seeded_balanced_and_refuse_too_many():
    folds = fold_of(10, 3, seed=0)
    assert sorted(np.bincount(folds).tolist()) == [3, 3, 4] and folds == fold_of(10, 3, seed=0)
    assert folds != fold_of(10, 3, seed=1)
    with pytest.raises(ConfigError, match="2 to 3 folds"):
        fold_of(3, 4, seed=0)


def test_thresholds_are_never_chosen_on_photos_the_model_was_tuned_on(base, tmp_path, monkeypatch):
    tuned_on, detected = [], []
    real_fine_tune, real_detect_all = detector_adapt.fine_tune, detector_adapt._detect_all

    def fine_tune(model, samples, options):
        tuned = real_fine_tune(model, samples, options)
        tuned.tuned_on = {s.image_id for s in samples}
        tuned_on.append(tuned.tuned_on)
        return tuned

    def detect_all(detector, samples):
        detected.append((getattr(detector.model, "tuned_on", None), {s.image_id for s in samples}))
        return real_detect_all(detector, samples)

    monkeypatch.setattr(detector_adapt, "fine_tune", fine_tune)
    monkeypatch.setattr(detector_adapt, "_detect_all", detect_all)
    result = adapt_detector(_lab(tmp_path / "lab", 5), tmp_path / "adapted.safetensors", lab="Lab A",
                            detector=base, folds=3, options=FAST)
    everything = {f"photo{i}.png" for i in range(5)}
    by_folds = [(trained, held) for trained, held in detected if trained is not None]
    assert len(by_folds) == 3 and all(not trained & held and trained | held == everything for trained, held in by_folds)
    assert set().union(*(held for _, held in by_folds)) == everything
    assert (None, everything) in detected  # the original detector on the same photos, for comparison
    assert len(tuned_on) == 4 and tuned_on[-1] == everything  # the final model: every photo
    assert sorted({p["fold"] for p in result["photos"]}) == [0, 1, 2] and result["folds"] == 3


def test_adapted_checkpoint_describes_itself_and_counts(base, tmp_path):
    lab = _lab(tmp_path / "lab", 4)
    out = tmp_path / "adapted.safetensors"
    result = adapt_detector(lab, out, lab="St Elsewhere haematology", detector=base, folds=2, options=FAST,
                            keep_if_worse=False)
    meta = json.loads(out.with_suffix(".json").read_text())
    adapted = meta["detector"]["adapted"]
    assert meta["model_name"] == "centernet-lite0" and meta["model_kwargs"] == {"shared_head": True}
    assert adapted["lab"] == "St Elsewhere haematology" and adapted["kept_classes"] == []
    assert [p["name"] for p in adapted["photos"]] == [f"photo{i}.png" for i in range(4)]
    assert all(p["scale_from"] == "labels" and len(p["sha256"]) == 64 for p in adapted["photos"])
    assert adapted["from"]["detector"] == "base.safetensors" and adapted["from"]["thresholds"]["Platelets"] == 0.12
    for label in LABELS:
        figures = adapted["cross_validated"][label]
        assert set(figures) == {"count_accuracy", "ap50", "labelled", "counted"}
        assert figures["labelled"] == {"RBC": 32, "WBC": 4, "Platelets": 4}[label]
        assert 0.0 <= meta["detector"]["thresholds"][label] <= 1.0
    assert "cross-validation" in meta["detector"]["thresholds_chosen_on"] and result["seconds"] > 0
    detector = load_detector(out)
    assert detector.settings.cell_size_px == 40
    image = Image.open(lab / "photo0.png")
    entry = count_image(image, None, str(out), None, 80.0)
    assert set(entry["counts"]) >= set(LABELS)
    with pytest.raises(ConfigError, match="exists"):
        adapt_detector(lab, out, lab="Lab A", detector=base, options=FAST)


def test_a_class_the_lab_does_not_label_keeps_the_original_behaviour(base, tmp_path):
    out = tmp_path / "no-platelets.safetensors"
    adapt_detector(_lab(tmp_path / "lab", 4, platelets=False), out, lab="Lab B", detector=base, folds=2,
                   options=AdaptOptions(epochs=1, batch_size=4, crop=64, lr=5e-3), keep_if_worse=False)
    checkpoint = load_checkpoint(out)
    assert isinstance(checkpoint.model, KeptClassesCenterNet) and checkpoint.model.kept == (2,)
    meta = checkpoint.meta["detector"]
    assert meta["adapted"]["kept_classes"] == ["Platelets"] and meta["thresholds"]["Platelets"] == 0.12
    assert meta["adapted"]["kept_because"] == {"Platelets": "no labelled example among the photos"}
    original, adapted = load_detector(base), load_detector(out)
    photo = Image.fromarray(np.asarray(draw_smear(9)[0].resize((320, 240))))
    before, after = original.detect_resized(photo, [0.05] * 3), adapted.detect_resized(photo, [0.05] * 3)
    platelets = [b for b in after if b.label == "Platelets"]
    assert platelets and platelets == [b for b in before if b.label == "Platelets"]
    x = to_input(np.asarray(photo), original.mean, original.std)[None]
    with torch.no_grad():  # the red-cell heatmap was tuned
        assert not torch.equal(adapted.model.adapted(x)["heatmap"][:, 0], original.model(x)["heatmap"][:, 0])
    with pytest.raises(CheckpointError, match="only a plain CenterNet"):
        adapt_detector(tmp_path / "lab", tmp_path / "again.safetensors", lab="Lab B", detector=out, options=FAST)


def test_a_class_adapting_does_not_improve_is_kept_from_the_original():
    def figures(rbc, wbc, platelets):
        return {label: {"count_accuracy": value} for label, value in zip(LABELS, (rbc, wbc, platelets))}

    validated = {"figures": figures(0.98, 0.72, None), "original": figures(0.96, 1.0, 0.8)}
    worse = worse_than_original(validated, kept=["Platelets"])
    assert list(worse) == ["WBC"] and "72.0 %, not above the original's 100.0 %" in worse["WBC"]
    assert list(worse_than_original({**validated, "figures": figures(0.96, 1.0, 0.9)}, kept=[])) == ["RBC", "WBC"]


def test_kept_classes_are_validated():
    assert kept_indices("Platelets, WBC") == (1, 2)
    for bad in ("", "Neutrophil", "RBC,WBC,Platelets"):
        with pytest.raises(ConfigError, match="kept classes"):
            kept_indices(bad)


def test_adapt_command_reports_skipped_photos_and_refuses_too_few(base, tmp_path):
    from bloodcell.cli.main import app

    lab = _lab(tmp_path / "lab", 3)
    draw_smear(7)[0].save(lab / "unlabelled.png")
    out = tmp_path / "adapted.safetensors"
    args = ["detector", "adapt", str(lab), "-o", str(out), "--lab", "Lab C", "--detector", str(base), "--folds", "2",
            "--epochs", "1", "--threads", "1", "--adapt-all"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{result.output} {result.exception!r}"
    assert "skipped" in result.output and "unlabelled.png: " in result.output and "no labels beside it" in result.output
    assert "3 photos, 2-fold cross-validated" in result.output and "RBC: count accuracy" in result.output
    assert out.is_file()
    one = _lab(tmp_path / "one", 1)
    refused = CliRunner().invoke(app, [*args[:2], str(one), "-o", str(tmp_path / "x.safetensors"), *args[5:]])
    assert refused.exit_code != 0 and "adapting needs at least 2" in str(refused.exception)
    assert not (tmp_path / "x.safetensors").exists()


def test_the_service_counts_with_the_detector_it_is_given(base, tmp_path, monkeypatch):
    import io
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from bloodcell.service import app as service_app
    from bloodcell.service.settings import ServiceSettings

    from bloodcell.smear.counting import count_image

    calls = []

    def counter(image, classifier=None, detector="learned", refer_below=None, **options):
        calls.append(detector)
        return count_image(image, None, "classical", refer_below, **options)  # the real loop, without weights

    monkeypatch.setattr(service_app, "library_count_image", counter)
    photo = io.BytesIO()
    draw_smear(0)[0].save(photo, format="PNG")
    classifier = SimpleNamespace(class_names=["neutrophil", "lymphocyte"], source="tiny")
    app = service_app.create_app(ServiceSettings(detector=str(base)), classifier=classifier, access_log=io.StringIO())
    with TestClient(app, base_url="http://localhost") as client:
        response = client.post("/v1/count", files=[("files", ("smear.png", photo.getvalue(), "image/png"))])
        health = client.get("/health").json()
    assert response.status_code == 200, response.text
    assert calls == [str(base)]
    assert response.json()["detector"] == health["detector"] == "base.safetensors"  # the page shows which counted
    with pytest.raises(CheckpointError, match="no such model file"):
        service_app.create_app(ServiceSettings(detector=str(tmp_path / "missing.safetensors")), classifier=classifier)


def test_among_equally_good_thresholds_the_middle_one_is_chosen():
    from bloodcell.train.detector import Sample

    samples = [Sample(f"p{i}", np.zeros((8, 8, 3), np.uint8), np.array([[0, 0, 8, 8]], np.float32), np.array([1]))
               for i in range(2)]
    detections = [[Box("WBC", 0, 0, 8, 8, 0.9), Box("WBC", 20, 20, 28, 28, 0.3)], [Box("WBC", 0, 0, 8, 8, 0.5)]]
    chosen = detector_adapt._chosen(detections, samples, ["Platelets"], {"RBC": 0.4, "WBC": 0.4, "Platelets": 0.33})
    assert 0.4 <= chosen["WBC"] <= 0.425 and chosen["Platelets"] == 0.33  # 0.325-0.5 all count right: the middle


def _counted_doc(folder, count: int = 2) -> dict:
    """A counted sample of ``count`` synthetic smears in ``folder`` (counts.json as `bloodcell count` writes it)."""
    images = []
    for index in range(count):
        image, boxes = draw_smear(index)
        image.save(folder / f"photo{index}.png")
        images.append({"path": f"photo{index}.png", "photo_id": f"{index + 1:016x}",
                       "boxes": [{"label": label, "score": 0.9, "x1": x1, "y1": y1, "x2": x2, "y2": y2}
                                 for label, x1, y1, x2, y2 in boxes],
                       "counts": {"RBC": 8, "WBC": 1, "Platelets": 1}, "wbc_types": {}})
    return {"sample_id": "S-9", "images": images, "errors": [],
            "sample": {"images": count, "counts": {"RBC": 8 * count, "WBC": count, "Platelets": count}}}


def test_a_reviewed_sample_folder_is_read_as_reviewed_and_adapts(base, tmp_path):
    from bloodcell.smear.review import Correction, apply_corrections
    from bloodcell.workflows.reviewed_photos import from_folder

    folder = tmp_path / "reviewed"
    folder.mkdir()
    doc = _counted_doc(folder, 3)
    (folder / "counts.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="S-9 is not reviewed"):
        from_folder(folder)
    reviewed, _ = apply_corrections(doc, [
        Correction("wrong", item=f"{1:016x}-1"), Correction("relabel", item=f"{1:016x}-9", label="Platelets"),
        Correction("missing", photo="photo1.png", label="Platelets", box=(300.0, 20.0, 330.0, 50.0))])
    reviewed["images"][2]["path"] = "gone.png"  # a photo no longer there: skipped, the others kept
    (folder / "counts.json").write_text(json.dumps(reviewed))
    found = from_folder(folder)
    assert [p.name for p in found.photos] == ["S-9/photo0.png", "S-9/photo1.png"]
    first, second = ([b.label for b in p.annotation.boxes] for p in found.photos)
    assert first == ["RBC"] * 7 + ["Platelets", "Platelets"]  # box 1 marked wrong, the white cell relabelled
    assert second == ["RBC"] * 8 + ["WBC", "Platelets", "Platelets"]  # the missed platelet added
    assert found.photos[1].annotation.boxes[-1].xyxy == pytest.approx((300.0, 20.0, 330.0, 50.0))
    assert len(found.skipped) == 1 and "gone.png" in found.skipped[0][1] and "not found" in found.skipped[0][1]
    result = adapt_detector(folder, tmp_path / "adapted.safetensors", lab="Lab R", detector=base, folds=2,
                            options=FAST, keep_if_worse=False)
    assert [p["name"] for p in result["photos"]] == ["S-9/photo0.png", "S-9/photo1.png"]
    assert result["cross_validated"]["Platelets"]["labelled"] == 4 and result["skipped"][0]["path"] == "gone.png"


def _store_sample(store, folder, sample_id: str, lab: str, seeds: list[int]):
    """Count ``seeds``' synthetic smears into ``store`` as one sample of ``lab`` (the detector boxed every cell)."""
    from bloodcell.smear.schema import SampleResult
    from bloodcell.store.samples import record_count

    images = []
    for seed in seeds:
        image, boxes = draw_smear(seed)
        path = folder / f"{sample_id}-{seed}.png"
        image.save(path)
        images.append({"path": str(path), "boxes": [{"label": label, "score": 0.9, "x1": x1, "y1": y1, "x2": x2,
                                                     "y2": y2} for label, x1, y1, x2, y2 in boxes],
                       "counts": {"RBC": 8, "WBC": 1, "Platelets": 1}})
    result = SampleResult.model_validate({"sample_id": sample_id, "images": images, "errors": [], "sample": {
        "images": len(seeds), "counts": {"RBC": 8 * len(seeds), "WBC": len(seeds), "Platelets": len(seeds)},
        "wbc_types": {}, "wbc_classified": 0, "wbc_referred": 0}})
    with store.session() as session:
        record_count(session, store.photos, result, "counter (system account)", lab=lab)


def test_adapting_from_the_store_uses_the_labs_reviewed_samples_and_keeps_it_in_their_audit_trail(base, tmp_path):
    from bloodcell.cli.main import app
    from bloodcell.smear.detectors import describe_detector
    from bloodcell.store.audit import trail
    from bloodcell.store.database import open_store
    from bloodcell.store.samples import add_cell, decide, find, finish_review
    from bloodcell.store.users import Person
    from bloodcell.workflows.reviewed_photos import from_store

    spec = str(tmp_path / "store.sqlite")
    store, photos, tia = open_store(spec), tmp_path / "photos", Person("tia", "technician")
    photos.mkdir()
    for sample_id, lab, seeds in (("A-1", "Lab S", [0, 1]), ("A-2", "Lab S", [2]), ("A-3", "Lab S", [3]),
                                  ("B-1", "Lab T", [4])):
        _store_sample(store, photos, sample_id, lab, seeds)
    with store.session() as session:
        first = next(c for c in find(session, "A-1").cells if c.label == "RBC")
        decide(session, "A-1", first.id, "remove", tia)
        add_cell(session, "A-1", 1, (300.0, 20.0, 330.0, 50.0), "Platelets", tia)
        for sample_id in ("A-1", "A-2", "B-1"):  # A-3 is counted, not reviewed: not used
            finish_review(session, sample_id, tia)
    found = from_store(store, "Lab S")
    assert [p.name for p in found.photos] == [f"A-1/A-1-{s}.png" for s in (0, 1)] + ["A-2/A-2-2.png"]
    assert [len(p.annotation.boxes) for p in found.photos] == [9, 11, 10]  # one removed, one added
    assert found.samples == {"A-1": ["A-1-0.png", "A-1-1.png"], "A-2": ["A-2-2.png"]}
    with pytest.raises(DataError, match="no reviewed or signed sample of lab 'Lab X'"):
        from_store(store, "Lab X")

    with store.session() as session:
        versions = {s: find(session, s).version for s in ("A-1", "A-2", "A-3", "B-1")}
    out = tmp_path / "adapted.safetensors"
    args = ["detector", "adapt", "-o", str(out), "--lab", "Lab S", "--store", spec, "--detector", str(base),
            "--folds", "2", "--epochs", "1", "--threads", "1", "--adapt-all"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{result.output} {result.exception!r}"
    assert "3 photos, 2-fold cross-validated" in result.output
    adapted = json.loads(out.with_suffix(".json").read_text())["detector"]["adapted"]
    assert adapted["lab"] == "Lab S" and [p["name"] for p in adapted["photos"]] == [p.name for p in found.photos]
    assert describe_detector(out) == "adapted.safetensors (adapted to Lab S from 3 photos)"
    with store.session() as session:
        entries = {s: [e for e in trail(session, find(session, s)) if e.action == "adapt_detector"]
                   for s in ("A-1", "A-2", "A-3", "B-1")}
        assert not entries["A-3"] and not entries["B-1"]
        entry = entries["A-1"][0]
        assert entry.after["sha256"] == adapted_sha256(out) and entry.after["photos"] == ["A-1-0.png", "A-1-1.png"]
        assert entry.after["lab"] == "Lab S" and entry.target == "detector:adapted.safetensors"
        assert "system account" in entry.actor and entries["A-2"][0].after["photos"] == ["A-2-2.png"]
        assert {s: find(session, s).version for s in versions} == versions  # the samples themselves unchanged

    neither = ["detector", "adapt", "-o", str(tmp_path / "x.safetensors"), "--lab", "Lab S"]
    for wrong in (neither, [*neither[:2], str(photos), *neither[2:], "--store", spec]):
        refused = CliRunner().invoke(app, wrong)
        assert refused.exit_code != 0 and "or --store, one of the two" in str(refused.exception)
    store.photos.path(found.photos[2].sha256).write_bytes(b"changed")  # a stored photo changed on disk: skipped
    again = from_store(store, "Lab S")
    assert len(again.photos) == 2 and "SHA-256 differs" in again.skipped[0][1]
    store.close()


def adapted_sha256(path) -> str:
    from bloodcell.provenance import file_sha256

    return file_sha256(path)


def test_a_lab_named_before_the_rule_adapts_its_detector_from_the_store(base, tmp_path):
    """A 200-character lab name written into the store before the lab-name rule (196 at most for a new name):
    `detector adapt --store --lab` looks it up as it is and adapts from its reviewed samples."""
    from sqlalchemy import update

    from bloodcell.cli.main import app
    from bloodcell.store.audit import trail
    from bloodcell.store.database import open_store
    from bloodcell.store.models import Sample
    from bloodcell.store.samples import find, finish_review
    from bloodcell.store.users import Person

    old = "Lab " + "o" * 196
    spec = str(tmp_path / "store.sqlite")
    store, photos = open_store(spec), tmp_path / "photos"
    photos.mkdir()
    for sample_id, seeds in (("O-1", [0, 1]), ("O-2", [2])):
        _store_sample(store, photos, sample_id, "placeholder", seeds)
    with store.session() as session:
        session.execute(update(Sample).where(Sample.lab == "placeholder").values(lab=old))
    with store.session() as session:
        for sample_id in ("O-1", "O-2"):
            finish_review(session, sample_id, Person("tia", "technician"))
    out = tmp_path / "adapted.safetensors"
    with pytest.raises(ConfigError, match="cannot be used: use at most 196 characters"):
        detector_adapt.adapt_detector(photos, out, lab=old, detector=base, options=FAST)  # a new name: the rule
    result = CliRunner().invoke(app, ["detector", "adapt", "-o", str(out), "--lab", old, "--store", spec,
                                      "--detector", str(base), "--folds", "2", "--epochs", "1", "--threads", "1",
                                      "--adapt-all"])
    assert result.exit_code == 0, f"{result.output} {result.exception!r}"
    assert "3 photos, 2-fold cross-validated" in result.output
    assert json.loads(out.with_suffix(".json").read_text())["detector"]["adapted"]["lab"] == old
    with store.session() as session:
        entry = next(e for e in trail(session, find(session, "O-1")) if e.action == "adapt_detector")
        assert entry.after["lab"] == old and entry.after["photos"] == ["O-1-0.png", "O-1-1.png"]
    store.close()

"""`bloodcell count --engine/--threads/--tta` reach the classifier that types the white cells."""

from __future__ import annotations

from types import SimpleNamespace

from PIL import Image
from typer.testing import CliRunner

from bloodcell.cli.main import app


class RecordingClassifier:
    """Types every white cell as a lymphocyte and records the options it was called with."""

    class_names = ("lymphocyte", "neutrophil")
    calls: list[dict]

    def __init__(self):
        self.calls = []

    def predict(self, crops, **options):
        self.calls.append(options)
        return [SimpleNamespace(error=None, label="lymphocyte", confidence=0.9, referred=False, reason=None)
                for _ in crops]


def test_white_cells_are_typed_with_tta_when_asked():
    from bloodcell.smear.counting import _classify

    classifier = RecordingClassifier()
    boxes = [{"label": "WBC", "x1": 10.0, "y1": 10.0, "x2": 40.0, "y2": 40.0}, {"label": "RBC", "x1": 0, "y1": 0, "x2": 5, "y2": 5}]
    image = Image.new("RGB", (64, 64), (230, 200, 210))
    _classify(classifier, image, boxes, 0.5, tta=True)
    _classify(classifier, image, boxes, 0.5)
    assert [call["tta"] for call in classifier.calls] == [True, False]
    assert boxes[0]["wbc_type"] == "lymphocyte"


def test_count_passes_engine_threads_and_tta_through(tmp_path, monkeypatch):
    import bloodcell.inference.predictor as predictor
    import bloodcell.workflows.count as workflow

    loaded, counted = {}, {}

    def load(model, engine="torch", num_threads=None):
        loaded.update(model=model, engine=engine, num_threads=num_threads)
        return RecordingClassifier()

    def count_samples(groups, output, classifier, **options):
        counted.update(options)
        return []

    monkeypatch.setattr(predictor, "load", load)
    monkeypatch.setattr(workflow, "count_samples", count_samples)
    photo = tmp_path / "smear.png"
    Image.new("RGB", (320, 240), (230, 200, 210)).save(photo)
    result = CliRunner().invoke(app, ["count", str(photo), "-o", str(tmp_path / "out"), "--detector", "classical",
                                      "--engine", "onnx", "--threads", "1", "--tta"])
    assert result.exit_code == 1 and "no photo could be counted" in result.output  # nothing counted: the stub
    assert loaded == {"model": None, "engine": "onnx", "num_threads": 1}
    assert counted["tta"] is True

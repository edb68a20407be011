"""Hardening item 1: nothing in a checkpoint's metadata is trusted.

Each bad document is refused in one sentence (CheckpointError) by ``bloodcell.load``, by
``bloodcell predict --model FILE`` and by ``bloodcell serve --model FILE``, before any model
is built that its weights do not fit, and before any image is read.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from hardening_helpers import (
    CLASSES,
    TINY,
    cell_png,
    read_document,
    save_tiny,
    write_document,
)
from typer.testing import CliRunner

import bloodcell
import bloodcell.checkpoint as checkpoint_module
from bloodcell.checkpoint import MAX_INPUT_SIZE, load_checkpoint, read_checkpoint_meta
from bloodcell.cli.main import app
from bloodcell.errors import CheckpointError


class WouldAllocate(BaseException):
    """Raised (past every ``except Exception``) instead of building a model the file cannot hold."""


@pytest.fixture()
def builds(monkeypatch):
    """Every model really built by the checkpoint loader (name, input size, kwargs); a build that would
    allocate a model larger than any tiny test checkpoint raises WouldAllocate instead of running."""
    real = checkpoint_module.create_model
    built = []

    def spy(name, num_classes, pretrained=False, class_names=None, input_size=None, **kwargs):
        on_meta = torch.get_default_device().type == "meta"
        if not on_meta:
            built.append((name, input_size, kwargs))
            if (input_size or 0) > MAX_INPUT_SIZE or name != TINY:
                raise WouldAllocate(f"would build {name} at {input_size} px with {kwargs}")
        return real(name, num_classes, pretrained=pretrained, class_names=class_names, input_size=input_size,
                    **kwargs)

    monkeypatch.setattr(checkpoint_module, "create_model", spy)
    return built


def _guard(dimension: int) -> dict:
    from bloodcell.inference.ood import fit_guard

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (12, 3, 16, 16), dtype=np.uint8)
    return fit_guard(pixels, rng.normal(size=(12, dimension))).to_dict()


def _set(doc, path, value):
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def _drop(doc, key):
    del doc[key]
    return doc


#: name -> (edit of a valid document, returning the new document or JSON text; words the refusal names)
CASES = {
    "input size 100000": (lambda d: _set(d, ("data_config", "input_size"), 100000), "input_size"),
    "input size 0": (lambda d: _set(d, ("data_config", "input_size"), 0), "input_size"),
    "input size as text": (lambda d: _set(d, ("data_config", "input_size"), "huge"), "input_size"),
    "document is a list": (lambda d: [d], "not a JSON object"),
    "data config is a list": (lambda d: _set(d, ("data_config",), [64, [0.5] * 3]), "data_config"),
    "class names are a list of lists": (lambda d: _set(d, ("class_names",), [["a"], ["b"], ["c"]]), "class_names"),
    "class names missing": (lambda d: _drop(d, "class_names"), "class_names"),
    "class names repeat": (lambda d: _set(_set(d, ("class_names",), ["a", "a", "b"]), ("data_config", "class_names"), []),
                           "repeat"),
    "a class name is a path": (lambda d: _set(_set(d, ("class_names",), ["a", "../../b", "c"]),
                                              ("data_config", "class_names"), []), "class_names"),
    "a class name is '..'": (lambda d: _set(_set(d, ("class_names",), ["a", "..", "c"]),
                                           ("data_config", "class_names"), []), "'..'"),
    "num_classes disagrees": (lambda d: _set(d, ("num_classes",), 5), "num_classes"),
    "temperature not a number": (lambda d: _set(d, ("temperature",), "hot"), "temperature"),
    "temperature NaN": (lambda d: json.dumps(_set(d, ("temperature",), math.nan)), "NaN"),
    "temperature negative": (lambda d: _set(d, ("temperature",), -1.0), "temperature"),
    "temperature 1e999": (lambda d: json.dumps(d).replace('"temperature": 1.2', '"temperature": 1e999'), "temperature"),
    "unknown model kwargs": (lambda d: _set(d, ("model_kwargs",), {"bogus": 3}), "bogus"),
    "model kwargs a list": (lambda d: _set(d, ("model_kwargs",), [1, 2]), "model_kwargs"),
    "unknown model": (lambda d: _set(d, ("model_name",), "no-such-net"), "no-such-net"),
    "a classical pipeline's name": (lambda d: _set(d, ("model_name",), "sk/svm"), "sk/svm"),
    "std zero": (lambda d: _set(d, ("data_config", "std"), [0, 0, 0]), "std"),
    "unknown interpolation": (lambda d: _set(d, ("data_config", "interpolation"), "lanczos9"), "interpolation"),
    "nested past the recursion limit": (lambda d: "[" * 100_000 + "]" * 100_000, "JSON"),
    # a size within bounds, but a model whose dense layer grows with it (34 billion weights at 1024 px):
    "paper model at 1024 px": (lambda d: _set(_set(d, ("model_name",), "asghar2023-cnn"),
                                              ("data_config", "input_size"), 1024), "asghar2023-cnn"),
    "a model option of a billion layers": (lambda d: _set(_set(d, ("model_name",), "asghar2023-cnn"),
                                                          ("model_kwargs",), {"hidden_layers": 10**9}), "hidden_layers"),
    "a model option of the wrong type": (lambda d: _set(_set(d, ("model_name",), "asghar2023-cnn"),
                                                        ("model_kwargs",), {"hidden_layers": "five"}), "asghar2023-cnn"),
    "guard is a list": (lambda d: _set(d, ("ood",), [1, 2, 3]), "guard"),
    "guard image count 1e999": (lambda d: json.dumps(_set(d, ("ood", "num_images"), 123456789))
                                .replace("123456789", "1e999"), "guard"),
    "guard of the wrong feature dimension": (lambda d: _set(d, ("ood",), _guard(5)), "guard"),
}


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """A valid tiny checkpoint carrying a valid out-of-distribution guard (4 features)."""
    path = tmp_path_factory.mktemp("valid") / "tiny.safetensors"
    save_tiny(path)
    write_document(path, {**read_document(path), "ood": _guard(4)})
    return path


def _bad(valid, tmp_path, case):
    edit, _ = CASES[case]
    return write_document(valid, edit(copy.deepcopy(read_document(valid))), out=tmp_path / "bad.safetensors")


def _one_sentence(exc: BaseException, *words: str) -> None:
    text = str(exc)
    assert isinstance(exc, CheckpointError), repr(exc)
    assert "\n" not in text and len(text) < 400, text
    for word in words:
        assert word in text, text


def test_the_valid_checkpoint_loads_with_its_guard(valid, builds):
    classifier = bloodcell.load(valid)
    assert classifier.class_names == list(CLASSES) and classifier.guard is not None
    assert builds == [(TINY, 16, {})]


@pytest.mark.parametrize("case", list(CASES))
def test_load_refuses_bad_metadata_in_one_sentence(valid, tmp_path, builds, case):
    bad = _bad(valid, tmp_path, case)
    with pytest.raises(CheckpointError) as refused:
        bloodcell.load(bad)
    _one_sentence(refused.value, "bad.safetensors", CASES[case][1])
    assert all(size <= MAX_INPUT_SIZE and name == TINY for name, size, _ in builds)


@pytest.mark.parametrize("case", list(CASES))
def test_predict_refuses_bad_metadata_before_reading_any_image(valid, tmp_path, builds, monkeypatch, case):
    from bloodcell.inference import predictor

    def no_reading(*_a, **_k):
        raise AssertionError("an image was read")

    monkeypatch.setattr(predictor, "read_image", no_reading)
    bad = _bad(valid, tmp_path, case)
    image = cell_png(tmp_path / "cell.png")
    result = CliRunner().invoke(app, ["predict", str(image), "--model", str(bad), "--output", str(tmp_path / "p.csv")])
    assert result.exit_code == 1
    _one_sentence(result.exception, "bad.safetensors", CASES[case][1])
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("case", ["input size 100000", "document is a list", "class names missing",
                                  "temperature not a number", "unknown model kwargs", "input size 0",
                                  "paper model at 1024 px", "guard image count 1e999"])
def test_serve_refuses_bad_metadata_before_listening(valid, tmp_path, builds, monkeypatch, case):
    import uvicorn

    def no_serving(*_a, **_k):
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn, "run", no_serving)
    bad = _bad(valid, tmp_path, case)
    result = CliRunner().invoke(app, ["serve", "--model", str(bad), "--port", "9"])
    assert result.exit_code == 1
    _one_sentence(result.exception, "bad.safetensors", CASES[case][1])


def test_onnx_naming_3_classes_for_8_outputs_is_refused_at_load(tmp_path):
    import onnx

    from bloodcell.inference.onnx import export_onnx

    eight = [f"class{i}" for i in range(8)]
    model = export_onnx(save_tiny(tmp_path / "eight.safetensors", classes=eight), tmp_path / "eight.onnx")
    assert len(bloodcell.load(model).class_names) == 8
    proto = onnx.load(str(model))
    for prop in proto.metadata_props:
        value = json.loads(prop.value)
        if prop.key == "bloodcell":
            value["class_names"] = eight[:3]
            value["data_config"]["class_names"] = eight[:3]
        elif prop.key == "class_names":
            value = eight[:3]
        elif prop.key == "data_config":
            value["class_names"] = eight[:3]
        prop.value = json.dumps(value)
    three = tmp_path / "three.onnx"
    onnx.save(proto, str(three))
    with pytest.raises(CheckpointError) as refused:
        bloodcell.load(three)
    _one_sentence(refused.value, "three.onnx", "8 outputs for 3 class names")
    image = cell_png(tmp_path / "cell.png")
    result = CliRunner().invoke(app, ["predict", str(image), "--model", str(three), "--output", str(tmp_path / "p.csv")])
    assert result.exit_code == 1 and isinstance(result.exception, CheckpointError)
    assert not (tmp_path / "p.csv").exists()


def test_a_checkpoint_is_written_as_readable_as_the_rest_of_the_run(tmp_path):
    """Item 9: safetensors writes 0600; a checkpoint is chmod-ed to 0644 like the run's other files."""
    path = save_tiny(tmp_path / "best.safetensors")
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_figure_that_could_not_be_computed_is_saved_as_null_and_the_checkpoint_loads(tmp_path):
    """A NaN in the metadata (FCOS has no validation loss) used to make a checkpoint that refused to load."""
    path = save_tiny(tmp_path / "best.safetensors", scores={"val_loss": float("nan"), "limits": [1.0, float("inf")]})
    assert read_checkpoint_meta(path)["scores"] == {"val_loss": None, "limits": [1.0, None]}
    assert json.loads(path.with_suffix(".json").read_text())["scores"]["val_loss"] is None
    assert load_checkpoint(path).meta["scores"]["val_loss"] is None


@pytest.mark.parametrize("recorded", [{"held_out_accuracy": "high"}, {"held_out_accuracy": [0.9]},
                                      {"held_out_accuracy": 7.5, "held_out_smears": "many"}, "a sentence",
                                      {"held_out_accuracy": 0.8, "held_out_smears": 20, "fitted_on": "pbc"}])
def test_count_quotes_only_well_formed_typing_records(tmp_path, recorded):
    """A checkpoint's smear_typing section is quoted by count's report only when its figures are well formed;
    a malformed one is left out instead of ending the count in a traceback after all the photos were counted."""
    checkpoint = save_tiny(tmp_path / "typer.safetensors", smear_typing=recorded, adaptation={"lab": ["not a name"]})
    photo = cell_png(tmp_path / "smear.png", size=96)
    result = CliRunner().invoke(app, ["count", str(photo), "--output", str(tmp_path / "out"), "--detector",
                                      "classical", "--model", str(checkpoint)])
    assert result.exit_code == 0, repr(result.exception)
    typing = json.loads((tmp_path / "out" / "counts.json").read_text())["sample"]["wbc_typing"]
    valid = isinstance(recorded, dict) and recorded.get("held_out_accuracy") == 0.8
    assert typing == ({"typer": "typer.safetensors", **recorded} if valid else {"typer": "typer.safetensors"})
    assert (tmp_path / "out" / "report.md").is_file()


CLASSICAL_CASES = {
    "input size 100000": ({"input_size": 100000}, "input_size"),
    "data config input size 100000": ({"data_config": {"input_size": 100000}}, "input_size"),
    "data config input size as text": ({"data_config": {"input_size": "huge"}}, "classical checkpoint metadata"),
    "class names a string": ({"class_names": "ab"}, "class_names"),
    "class names missing": ({"class_names": None}, "class_names"),
    "temperature not a number": ({"temperature": "hot"}, "temperature"),
    "temperature zero": ({"temperature": 0}, "temperature"),
}


def _skops(path, **changes):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from bloodcell.models.classical import save_classical

    meta = {"model_name": "sk/svm", "class_names": list(CLASSES), "input_size": 32, "temperature": 1.0,
            "data_config": {"input_size": 32, "class_names": list(CLASSES)}}
    meta.update(changes)
    return save_classical(path, Pipeline([("clf", LogisticRegression())]), {k: v for k, v in meta.items()
                                                                            if v is not None})


@pytest.mark.parametrize("case", list(CLASSICAL_CASES))
def test_evaluate_refuses_bad_classical_metadata_before_scoring(tmp_path, monkeypatch, case):
    """A classical (.skops) checkpoint's metadata is validated too: an input size of 100000 would resize every
    image to 30 GB of pixels."""
    import bloodcell.workflows.evaluate as workflow
    from bloodcell.models.classical import load_classical

    def no_scoring(*_a, **_k):
        raise AssertionError("images were scored")

    monkeypatch.setattr(workflow, "score_paths", no_scoring)
    assert load_classical(_skops(tmp_path / "good.skops"))[1]["input_size"] == 32
    changes, words = CLASSICAL_CASES[case]
    bad = _skops(tmp_path / "bad.skops", **changes)
    cell_png(tmp_path / "cells" / "lymphocyte" / "a.png")
    result = CliRunner().invoke(app, ["evaluate", "--model", str(bad), "--dataset", "folder", "--data-root",
                                      str(tmp_path / "cells"), "--output", str(tmp_path / "out")])
    assert result.exit_code == 1
    _one_sentence(result.exception, "bad.skops", words)

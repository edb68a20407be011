"""The bundled models' cards: each is there, says what a user must know, and its plain example is exact."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bloodcell.cli.main import app
from bloodcell.framing import frame_cell
from bloodcell.inference.predictor import load
from bloodcell.weights import BUNDLED

SECTIONS = ("## Intended use", "## Training data", "## Measured", "## Known failures", "## Preprocessing",
            "## Licence and citation")


def _card(name: str) -> str:
    card = BUNDLED[name].card
    assert card.is_file(), f"{name} has no model card"
    return card.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_every_bundled_model_has_a_card_with_the_sections_a_user_needs(name):
    text = _card(name)
    for section in SECTIONS:
        assert section in text, f"{name}.md lacks {section}"
    assert "not a diagnosis" in text.lower() or "not for diagnosis" in text.lower()


def test_models_info_shows_the_card():
    result = CliRunner().invoke(app, ["models", "info", "pbc8"])
    assert result.exit_code == 0 and "Intended use" in result.output


def _cell(seed: int, size: int = 300) -> Image.Image:
    """A synthetic stained cell off-centre on a pink background, larger than the model input."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size + 17, 3), (226, 196, 206), np.float32) + rng.normal(0, 5, (size, size + 17, 3))
    yy, xx = np.mgrid[:size, :size + 17]
    cy, cx = size * 0.45, size * 0.55
    image[(yy - cy) ** 2 + (xx - cx) ** 2 < (size / 7) ** 2] = (225, 170, 200)
    image[(yy - cy) ** 2 + (xx - cx + 8) ** 2 < (size / 13) ** 2] = (100, 45, 135)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("name, runs_on", [("pbc8", "pbc8"), ("pbc11", "pbc11"), ("pbc8", "pbc8-int8")])
def test_the_cards_plain_onnxruntime_example_matches_predict(name, runs_on, tmp_path):
    """The card's code, run as written on an exported model, gives predict's probabilities within 1e-4; on the bundled
    int8 file, which pbc8-int8's card says it runs on unchanged, within 1e-3 (the float input's last bits can move an
    activation by one quantization step)."""
    block = re.search(r"```python\n(.*?)```", _card(name), re.S)
    assert block, f"{name}.md has no python example"
    onnx_path = BUNDLED[runs_on].path
    if onnx_path.suffix != ".onnx":
        onnx_path = tmp_path / f"{name}.onnx"
        result = CliRunner().invoke(app, ["export", "--model", name, "--output", str(onnx_path)])
        assert result.exit_code == 0, result.output
    namespace: dict = {}
    exec(compile(block.group(1).replace(f'"{name}.onnx"', repr(str(onnx_path))), f"{name}.md", "exec"), namespace)
    classifier = load(runs_on)
    framed = classifier.data_config.framing == "cell"
    for seed in range(3):
        image = _cell(seed)
        plain = namespace["classify"](frame_cell(image) if framed else image)
        expected = classifier.predict_proba([image])[0]
        assert list(plain) == classifier.class_names
        np.testing.assert_allclose(list(plain.values()), expected, atol=1e-4 if runs_on == name else 1e-3)


def _strings(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_checkpoint_metadata_carries_no_machine_paths(name):
    from bloodcell.checkpoint import read_checkpoint_meta
    from bloodcell.inference.onnx import OnnxBackend, read_document

    path = BUNDLED[name].path
    meta = read_document(OnnxBackend(path), path) if path.suffix == ".onnx" else read_checkpoint_meta(name)
    paths = [s for s in _strings(meta) if s.startswith(("/", "~")) or re.match(r"^[A-Za-z]:\\\\", s)]
    assert paths == []


def test_models_info_on_an_int8_file_says_it_is_quantized_and_from_which_checkpoint():
    from bloodcell.provenance import file_sha256

    result = CliRunner().invoke(app, ["models", "info", str(BUNDLED["pbc8-int8"].path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "quantized to int8 (static-qdq)" in result.output
    assert f"exported from the checkpoint with sha256 {file_sha256(BUNDLED['pbc8'].path)}" in result.output

"""Rendering: every figure and the gallery are embedded; non-test results are labelled everywhere."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from bloodcell.metrics import classification_report
from bloodcell.report import (
    comparison_chart,
    evaluation_figures,
    render_html,
    render_markdown,
)
from bloodcell.report.plots import EVALUATION_FIGURES

CLASSES = ["basophil", "eosinophil", "lymphocyte", "neutrophil"]


def _jpeg(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def _result(label: str, is_test: bool) -> dict:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    logits = rng.normal(size=(200, 4))
    logits[np.arange(200), y] += 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    metrics = classification_report(y, p, CLASSES, n_boot=50)
    return {
        "title": "tiny on pbc / test", "label": label, "is_test_result": is_test, "dataset": "pbc", "split": "test",
        "taxonomy": "pbc8",
        "provenance": {"checkpoint": "m.safetensors", "checkpoint_sha256": "ab" * 32, "manifest_sha256": "cd" * 32,
                       "model_name": "tiny", "temperature": 1.3, "bloodcell_version": "0.1.0", "git_commit": "f00"},
        "counts": {"images": 201, "scored": 200, "skipped": 1, "unmapped": 0},
        "metrics": metrics, "uncalibrated": {"ece": 0.1, "nll": 0.9},
        "misclassified": [], "skipped": [{"path": "bad|name.jpg", "reason": "not an image file"}],
        "unmapped": {"BAND": {"count": 3, "predicted": {"neutrophil": 2, "basophil": 1}}}, "notes": ["a <note>"],
    }


@pytest.fixture(scope="module")
def figures():
    return evaluation_figures(_result("TEST RESULT", True)["metrics"])


def test_every_figure_is_a_png(figures):
    assert set(figures) == set(EVALUATION_FIGURES)
    for title, png in figures.values():
        assert png.startswith(b"\x89PNG") and Image.open(io.BytesIO(png)).size[0] > 200


def test_html_embeds_figures_gallery_and_provenance(figures):
    result = _result("TEST RESULT", True)
    gallery = [{"path": f"neutrophil/SNE_{i}.jpg", "true": "neutrophil", "predicted": "basophil",
                "confidence": 0.91, "thumbnail": _jpeg((200, 10 * i, 10))} for i in range(3)]
    page = render_html(result, figures, gallery)
    for key, (title, png) in figures.items():
        tag = re.search(rf"<img id='fig-{key}' alt='([^']*)' src='data:image/png;base64,([^']+)'>", page)
        assert tag and tag.group(1) == title
        assert base64.b64decode(tag.group(2)) == png
    assert page.count("<figure class='error'>") == 3
    assert page.count("src='data:image/jpeg;base64,") == 3
    assert "true: neutrophil · predicted: basophil (91.0%)" in page
    assert "neutrophil/SNE_2.jpg" in page
    assert "ab" * 32 in page and "cd" * 32 in page
    assert "a &lt;note&gt;" in page  # escaped
    assert "BAND" in page and "neutrophil: 2" in page
    assert "src='http" not in page and "src=\"http" not in page  # self-contained
    assert "VALIDATION" not in page


def test_validation_label_everywhere(figures):
    label = "VALIDATION — not a test result"
    result = _result(label, False)
    page = render_html(result, figures)
    assert page.count(label) >= 4  # title, banner, headline, footer
    assert "<div class='banner'>" in page
    md = render_markdown(result)
    assert md.count(label) >= 3
    assert md.splitlines()[2] == f"> **{label}**"


def test_markdown_tables_and_figure_links():
    result = _result("TEST RESULT", True)
    md = render_markdown(result, {"roc": ("ROC curves", "figures/roc.png")})
    assert "![ROC curves](figures/roc.png)" in md
    assert "bad\\|name.jpg" in md  # pipes escaped in tables
    boot = result["metrics"]["bootstrap"]["accuracy"]
    assert f"{100 * boot['estimate']:.2f}% [{100 * boot['low']:.2f}%, {100 * boot['high']:.2f}%]" in md
    for name in CLASSES:
        assert f"| {name} |" in md


def test_comparison_chart_draws_each_model():
    rows = [{"model": m, "accuracy": a, "accuracy_low": a - 0.02, "accuracy_high": a + 0.01}
            for m, a in (("a", 0.9), ("b", 0.95))]
    png = comparison_chart(rows)
    assert png.startswith(b"\x89PNG")

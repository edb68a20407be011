"""Hardening item 1, property-based: a valid checkpoint document mutated at random (types, missing keys,
huge, negative and non-finite numbers, nested junk) either loads or is refused with CheckpointError,
never another exception, and never builds a model with an input larger than MAX_INPUT_SIZE.
Both the ``.safetensors`` metadata and an exported ONNX model's metadata are fuzzed."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from hardening_helpers import CLASSES, read_document, save_tiny
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import bloodcell
import bloodcell.checkpoint as checkpoint_module
from bloodcell.checkpoint import FORMAT, MAX_INPUT_SIZE
from bloodcell.errors import CheckpointError

#: Stands for the JSON number 1e999 (which Python reads as infinity; json.dumps cannot write it).
HUGE = "\x00HUGE\x00"

junk = st.recursive(
    st.none() | st.booleans() | st.text(max_size=12) | st.just(HUGE)
    | st.integers(min_value=-2**70, max_value=2**70)
    | st.sampled_from([0, -1, 1, 2, 7, 8, 1024, 1025, 100_000, 10**12, 0.0, -0.0, 1e-9, 1e308])
    | st.floats(allow_nan=True, allow_infinity=True),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
#: Values worth trying in the fields that matter most.
names = st.sampled_from([CLASSES[0], "", "x" * 300, "sk/svm", "asghar2023-cnn", "centernet-lite0", "resnet18",
                         "no-such-model", "hardening-tiny"])


def _paths(value, prefix=()):
    """Places in a document: every dict key and the first two items of every list (depth at most 4)."""
    out = []
    if len(prefix) >= 4:
        return out
    if isinstance(value, dict):
        for key, child in value.items():
            out.append(prefix + (key,))
            out += _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in list(enumerate(value))[:2]:
            out.append(prefix + (index,))
            out += _paths(child, prefix + (index,))
    return out


def _mutate(data, document):
    """Apply 1-4 random edits: delete, replace with junk or a likely value, or add a junk key."""
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        places = _paths(document)
        if places and data.draw(st.booleans(), label="a main field"):  # the fields a model is built from
            places = [p for p in places if len(p) == 1 or p[0] == "data_config"] or places
        action = data.draw(st.sampled_from(["delete", "replace", "add", "whole"]), label="action")
        if action == "whole" or not places:
            return data.draw(junk, label="whole document")
        path = data.draw(st.sampled_from(places), label="place")
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if action == "delete":
            del parent[key]
        elif action == "replace":
            parent[key] = data.draw(junk | names, label="value")
        elif isinstance(parent, dict):
            parent[data.draw(st.text(max_size=8), label="new key")] = data.draw(junk, label="new value")
    return document


def _text(document) -> str:
    return json.dumps(document, allow_nan=True).replace(json.dumps(HUGE), "1e999")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A valid tiny checkpoint with a guard and extra sections: its weights and its metadata document."""
    from bloodcell.inference.ood import fit_guard

    folder = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    guard = fit_guard(rng.integers(0, 256, (12, 3, 16, 16), dtype=np.uint8), rng.normal(size=(12, 4)))
    path = save_tiny(folder / "base.safetensors", ood=guard.to_dict(), smear_typing={"held_out_accuracy": 0.8})
    return folder, load_file(str(path)), read_document(path)


@pytest.fixture()
def sizes(monkeypatch):
    """Input sizes of the models the loader really builds (not the meta-device skeletons)."""
    real = checkpoint_module.create_model
    seen: list[int] = []

    def spy(name, num_classes, **kwargs):
        if torch.get_default_device().type != "meta":
            seen.append(kwargs.get("input_size"))
            assert (kwargs.get("input_size") or 0) <= MAX_INPUT_SIZE, f"built {name} at {kwargs.get('input_size')} px"
        return real(name, num_classes, **kwargs)

    monkeypatch.setattr(checkpoint_module, "create_model", spy)
    return seen


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_checkpoint_metadata_loads_or_is_refused_in_one_sentence(base, sizes, data):
    folder, weights, document = base
    text = _text(_mutate(data, copy.deepcopy(document)))
    path = folder / "mutated.safetensors"
    save_file(weights, str(path), metadata={"format": FORMAT, "bloodcell": text})
    try:
        classifier = bloodcell.load(path)
    except CheckpointError as exc:
        assert "\n" not in str(exc)
        return
    assert classifier.data_config.input_size <= MAX_INPUT_SIZE
    assert len(classifier.class_names) == 3


@pytest.fixture(scope="module")
def onnx_base(base):
    import onnx

    from bloodcell.inference.onnx import export_onnx

    folder, _, _ = base
    exported = export_onnx(folder / "base.safetensors", folder / "base.onnx")
    proto = onnx.load(str(exported))
    return folder, proto, json.loads(next(p.value for p in proto.metadata_props if p.key == "bloodcell"))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_onnx_metadata_loads_or_is_refused_in_one_sentence(onnx_base, data):
    folder, proto, document = onnx_base
    text = _text(_mutate(data, copy.deepcopy(document)))
    mutated = copy.deepcopy(proto)
    for prop in mutated.metadata_props:
        if prop.key == "bloodcell":
            prop.value = text
    path = folder / "mutated.onnx"
    path.write_bytes(mutated.SerializeToString())
    try:
        classifier = bloodcell.load(path)
    except CheckpointError as exc:
        assert "\n" not in str(exc)
        return
    assert classifier.data_config.input_size <= MAX_INPUT_SIZE
    assert len(classifier.class_names) == 3
    assert np.isfinite(classifier.temperature) and classifier.temperature > 0


def test_a_metadata_key_with_a_line_break_is_named_on_one_line(base):
    """Found by the fuzz test above: an unknown key holding a line break was echoed as is, breaking the sentence."""
    folder, weights, document = base
    mutated = copy.deepcopy(document)
    mutated["data_config"]["bad\nkey"] = 1
    path = folder / "newline.safetensors"
    save_file(weights, str(path), metadata={"format": FORMAT, "bloodcell": json.dumps(mutated)})
    with pytest.raises(CheckpointError) as refused:
        bloodcell.load(path)
    assert "\n" not in str(refused.value) and "bad\\nkey" in str(refused.value)

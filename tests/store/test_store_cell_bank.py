"""A lab's cell bank in the store (issue 26 item 4): the white cells of its reviewed and signed samples whose class
a person confirmed or corrected, counted and cut from the stored photos without a copy; ``bloodcell adapt --store
--lab`` adapts from it and keeps ``adapt_classifier`` in each contributing sample's audit trail. SQLite and
PostgreSQL (when configured)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bloodcell.cli.main import app
from bloodcell.errors import DataError
from bloodcell.framing import CONTEXT
from bloodcell.store.audit import trail
from bloodcell.store.cell_bank import bank_counts, bank_crops, bank_summary
from bloodcell.store.samples import add_cell, decide, find, finish_review, record_count, sign

from store_helpers import bank_doc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluate"))
from evaluate_fixtures import COLOURS, trained_tiny_checkpoint  # noqa: E402

from bloodcell.data.registry import PBC_CLASSES  # noqa: E402

GREY = (120, 120, 120)


def _keep(store, tmp_path, sample_id, lab, cells, seed=0):
    with store.session() as session:
        record_count(session, store.photos, bank_doc(tmp_path / "in", sample_id, cells, seed), "counter", lab=lab)
        return [c.id for c in find(session, sample_id).cells]


def test_the_bank_holds_only_cells_a_person_vouched_for_in_finished_samples_of_the_lab(store, people, tmp_path):
    tia, sam = people["tia"], people["sam"]
    ids = _keep(store, tmp_path, "A-1", "Lab S", [("neutrophil", GREY)] * 7)
    with store.session() as session:
        decide(session, "A-1", ids[0], "confirm", tia)                                  # vouched
        decide(session, "A-1", ids[1], "relabel", tia, cell_class="lymphocyte")          # corrected: vouched
        decide(session, "A-1", ids[2], "relabel", tia, cell_class="monocyte")
        decide(session, "A-1", ids[2], "relabel", tia, cell_class="neutrophil", undo=True)  # taken back: not
        decide(session, "A-1", ids[3], "remove", tia)                                   # not a cell
        decide(session, "A-1", ids[4], "confirm", tia)
        decide(session, "A-1", ids[4], "move", tia, box=(41.0, 11.0, 59.0, 29.0))       # still vouched
        decide(session, "A-1", ids[5], "platelet", tia)                                 # not a white cell
        add_cell(session, "A-1", 0, (200.0, 10.0, 220.0, 30.0), "WBC", tia, cell_class="eosinophil")  # vouched
        add_cell(session, "A-1", 0, (180.0, 10.0, 195.0, 25.0), "WBC", tia)              # no type: not
        # ids[6] left as the counter called it: not vouched
    with store.session() as session:
        assert bank_counts(session, "Lab S") == {}  # not finished yet
        finish_review(session, "A-1", tia)
    other = _keep(store, tmp_path, "B-1", "Lab T", [("neutrophil", GREY)] * 2, seed=1)
    open_ids = _keep(store, tmp_path, "A-2", "Lab S", [("basophil", GREY)] * 2, seed=2)
    signed = _keep(store, tmp_path, "A-3", "Lab S", [("lymphocyte", GREY)], seed=3)
    with store.session() as session:
        decide(session, "B-1", other[0], "confirm", tia)
        finish_review(session, "B-1", tia)
        decide(session, "A-2", open_ids[0], "confirm", tia)  # A-2 stays in review: not in the bank
        decide(session, "A-3", signed[0], "confirm", tia)
        finish_review(session, "A-3", tia)
        sign(session, "A-3", sam)
    with store.session() as session:
        assert bank_counts(session, "Lab S") == {"eosinophil": 1, "lymphocyte": 2, "neutrophil": 2}
        assert bank_counts(session, "Lab T") == {"neutrophil": 1}
        summary = bank_summary(session, "Lab S", ["basophil", "lymphocyte", "neutrophil", "eosinophil"])
        assert summary == {"lab": "Lab S", "wanted": 10,
                           "counts": {"basophil": 0, "lymphocyte": 2, "neutrophil": 2, "eosinophil": 1},
                           "needed": {"basophil": 10, "lymphocyte": 8, "neutrophil": 8, "eosinophil": 9}}


def test_crops_are_cut_from_the_stored_photos_and_a_changed_photo_is_skipped(store, people, tmp_path):
    tia = people["tia"]
    colours = [("neutrophil", (200, 40, 40)), ("lymphocyte", (40, 40, 200))]
    for sample_id, seed in (("A-1", 0), ("A-2", 1)):
        ids = _keep(store, tmp_path, sample_id, "Lab S", colours, seed=seed)
        with store.session() as session:
            for cell_id in ids:
                decide(session, sample_id, cell_id, "confirm", tia)
            finish_review(session, sample_id, tia)
    with store.session() as session:
        crops = bank_crops(session, store.photos, "Lab S")
        a2_photo = find(session, "A-2").photos[0].sha256
    assert crops.labels == ["neutrophil", "lymphocyte"] * 2 and not crops.skipped
    assert [i.split("/")[0] for i in crops.ids] == ["A-1", "A-1", "A-2", "A-2"]
    assert crops.samples.keys() == {"A-1", "A-2"} and all(len(v) == 2 for v in crops.samples.values())
    side = round(CONTEXT * 20)
    assert all(abs(image.width - side) <= 1 and image.height == image.width for image in crops.images)
    middle = np.asarray(crops.images[0])[side // 2 - 3:side // 2 + 3, side // 2 - 3:side // 2 + 3].mean(axis=(0, 1))
    assert middle[0] > 150 and middle[2] < 90  # the neutrophil's red square, centred: cut where the box lies
    assert not any(p.name.endswith(".png") for p in tmp_path.rglob("*") if "photos" in str(p))  # nothing copied
    store.photos.path(a2_photo).write_bytes(b"changed on disk")
    with store.session() as session:
        again = bank_crops(session, store.photos, "Lab S")
    assert len(again.images) == 2 and [s for s, _ in again.skipped] == [f"A-2/cell {i}" for i in crops.samples["A-2"]]
    assert "changed on disk" in again.skipped[0][1]


#: The new lab's stain shifts every colour (as in tests/workflows/test_adapt.py): the model is fooled until adapted.
SHIFT = np.array([-60, 70, 40])


def _lab_colour(name: str) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.array(COLOURS[PBC_CLASSES.index(name)]) + SHIFT, 0, 255))


def _reviewed_lab(store, tmp_path, tia, per_sample: list[dict[str, int]], lab: str = "Lab S") -> list[str]:
    """Samples of ``lab`` (ids ``<lab's last letter>-1``, ...) whose every white cell a technician confirmed (as
    called) and finished."""
    names = []
    for k, types in enumerate(per_sample):
        sample_id = f"{lab[-1]}-{k + 1}"
        cells = [(name, _lab_colour(name)) for name, n in types.items() for _ in range(n)]
        ids = _keep(store, tmp_path, sample_id, lab, cells, seed=k)
        with store.session() as session:
            for cell_id in ids:
                decide(session, sample_id, cell_id, "confirm", tia)
            finish_review(session, sample_id, tia)
        names.append(sample_id)
    return names


def test_adapt_from_the_store_uses_the_bank_and_keeps_it_in_each_samples_audit_trail(store, store_spec, people,
                                                                                     tmp_path):
    from bloodcell.checkpoint import read_checkpoint_meta

    model = trained_tiny_checkpoint(tmp_path / "tiny.safetensors")
    few = ["adapt", "--store", store_spec, "--lab", "Lab S", "--model", str(model), "-o", str(tmp_path / "a.safetensors")]
    _reviewed_lab(store, tmp_path, people["tia"], [{"neutrophil": 3, "lymphocyte": 2}])
    refused = CliRunner().invoke(app, few)
    assert refused.exit_code != 0 and isinstance(refused.exception, DataError)
    assert str(refused.exception).startswith("the cell bank of lab 'Lab S' is too small to adapt from (it holds "
                                             "lymphocyte 2, neutrophil 3): 2 more neutrophil and 3 more lymphocyte needed")
    assert not (tmp_path / "a.safetensors").exists()

    samples = _reviewed_lab(store, tmp_path, people["tia"], [{"eosinophil": 4, "lymphocyte": 4, "neutrophil": 3},
                                                             {"eosinophil": 4, "lymphocyte": 4, "neutrophil": 3}],
                            lab="Lab R")
    with store.session() as session:
        versions = {s: find(session, s).version for s in ["S-1", *samples]}
    out = tmp_path / "lab-r.safetensors"
    done = CliRunner().invoke(app, ["adapt", "--store", store_spec, "--lab", "Lab R", "--model", str(model),
                                    "--keep", "monocyte", "-o", str(out)])
    assert done.exit_code == 0, f"{done.output} {done.exception!r}"
    assert "adapted on 22 cells (eosinophil 8, lymphocyte 8, neutrophil 6)" in done.output
    assert "kept monocyte: a cell the model itself calls monocyte" in done.output  # the lab's word, from the store too
    adaptation = read_checkpoint_meta(out)["adaptation"]
    assert adaptation["lab"] == "Lab R" and adaptation["cells"] == {"eosinophil": 8, "lymphocyte": 8, "neutrophil": 6}
    assert adaptation["cv_accuracy_before"] < 0.9 <= adaptation["cv_accuracy"]  # the stain shift, then adapted
    from bloodcell.provenance import file_sha256

    with store.session() as session:
        entries = {s: [e for e in trail(session, find(session, s)) if e.action == "adapt_classifier"]
                   for s in ["S-1", *samples]}
        assert not entries["S-1"]  # Lab S's sample is not in Lab R's bank
        for sample_id in samples:
            (entry,) = entries[sample_id]
            cells = [c.id for c in find(session, sample_id).cells]
            assert "system account" in entry.actor and entry.target == "classifier:lab-r.safetensors"
            assert entry.after["cells"] == cells and entry.after["sha256"] == file_sha256(out)
            assert entry.after["cells_per_type"] == {"eosinophil": 4, "lymphocyte": 4, "neutrophil": 3}
            assert entry.after["lab"] == "Lab R" and entry.after["base"] == "tiny.safetensors"
            assert entry.after["kept"] == ["monocyte"]
        assert {s: find(session, s).version for s in versions} == versions  # the samples themselves unchanged


def test_a_model_whose_audit_cannot_be_written_is_removed(store, people, tmp_path, monkeypatch):
    from bloodcell.store.errors import StoreError
    from bloodcell.workflows import bank_adapt

    model = trained_tiny_checkpoint(tmp_path / "tiny.safetensors")
    _reviewed_lab(store, tmp_path, people["tia"], [{"eosinophil": 5, "lymphocyte": 5}])

    def fails(*args, **kwargs):
        raise StoreError("the store refused the write")

    monkeypatch.setattr(bank_adapt, "record_classifier_adaptation", fails)
    out = tmp_path / "adapted.safetensors"
    with pytest.raises(StoreError, match="refused"):
        bank_adapt.adapt_from_bank(store, model, out, lab="Lab S", actor="sam")
    assert not out.exists() and not out.with_suffix(".json").exists()


@pytest.mark.parametrize("command", [["adapt"], ["detector", "adapt"]])
def test_adapting_from_a_store_that_does_not_exist_is_refused_and_creates_none(tmp_path, command):
    """A mistyped --store is one sentence, not a new empty store and then 'too few cells'."""
    from bloodcell.store.errors import StoreError

    missing = tmp_path / "typo.sqlite"
    refused = CliRunner().invoke(app, [*command, "--store", str(missing), "--lab", "L", "-o",
                                       str(tmp_path / "a.safetensors")])
    assert refused.exit_code != 0 and isinstance(refused.exception, StoreError)
    assert "no sample store at " in str(refused.exception) and not missing.exists()


def test_cli_refuses_both_or_neither_source_in_one_sentence(tmp_path):
    from bloodcell.errors import ConfigError

    out = ["-o", str(tmp_path / "x.safetensors")]
    for args in (out, [str(tmp_path), *out, "--store", "s.sqlite", "--lab", "L"], [*out, "--store", "s.sqlite"]):
        refused = CliRunner().invoke(app, ["adapt", *args])
        assert refused.exit_code != 0 and isinstance(refused.exception, ConfigError)


@pytest.mark.parametrize("counts, needed", [
    ({}, "(it holds no reviewed white cell): 5 of each of 2 types needed"),
    ({"neutrophil": 3, "basophil": 0}, "(it holds neutrophil 3): 2 more neutrophil and 5 of another type needed"),
    ({"neutrophil": 7, "lymphocyte": 4, "basophil": 1}, "neutrophil 7): 1 more lymphocyte needed"),
    ({"neutrophil": 7, "lymphocyte": 5, "basophil": 1}, None),
])
def test_too_small_a_bank_says_how_many_more_of_which_types(counts, needed):
    from bloodcell.workflows.bank_adapt import too_few

    sentence = too_few(counts, "Lab S")
    assert sentence == needed if needed is None else needed in sentence and sentence.count(".") == 0


def test_a_type_the_model_does_not_have_is_named_as_a_type_not_a_class_folder(store, people, tmp_path):
    from bloodcell.workflows import bank_adapt

    model = trained_tiny_checkpoint(tmp_path / "tiny.safetensors")
    _reviewed_lab(store, tmp_path, people["tia"], [{"eosinophil": 5, "lymphocyte": 5}])
    ids = _keep(store, tmp_path, "S-9", "Lab S", [("blast", (90, 40, 120))], seed=9)
    with store.session() as session:
        decide(session, "S-9", ids[0], "confirm", people["tia"])
        finish_review(session, "S-9", people["tia"])
    with pytest.raises(DataError, match=r"^type\(s\) blast are not classes of the model"):
        bank_adapt.adapt_from_bank(store, model, tmp_path / "adapted.safetensors", lab="Lab S", actor="sam")
    assert not (tmp_path / "adapted.safetensors").exists()


@pytest.mark.parametrize("lab", ["x" * 197, "north\tsouth"])
def test_every_lab_option_naming_a_lab_anew_refuses_a_name_the_rule_refuses_in_one_sentence(store_spec, tmp_path, lab):
    """adapt --lab CELLS and detector adapt --lab PHOTOS: one rule, checked before any work; adapt --store, detector
    adapt --store and samples lab-audit only read the store, where such a name may have been kept before the rule:
    they look it up."""
    from bloodcell.errors import ConfigError
    from bloodcell.store.database import open_store

    open_store(store_spec).close()
    out = tmp_path / "a.safetensors"
    commands = [["adapt", str(tmp_path), "--lab", lab, "-o", str(out)],
                ["detector", "adapt", str(tmp_path), "--lab", lab, "-o", str(out)]]
    for command in commands:
        refused = CliRunner().invoke(app, command)
        assert refused.exit_code != 0 and isinstance(refused.exception, ConfigError), (command, refused.output)
        assert str(refused.exception).startswith("the lab name ") and "cannot be used: use at most 196 characters, " \
            "none" in str(refused.exception), command
        assert not out.exists()
    looked_up = CliRunner().invoke(app, ["samples", "lab-audit", lab, "--store", store_spec])
    assert looked_up.exit_code == 0 and looked_up.output.startswith("nothing recorded for lab"), looked_up.output
    read = CliRunner().invoke(app, ["adapt", "--store", store_spec, "--lab", lab, "-o", str(out)])
    assert read.exit_code != 0 and isinstance(read.exception, DataError), read.output
    assert str(read.exception).startswith("the cell bank of lab ") and not out.exists()
    read = CliRunner().invoke(app, ["detector", "adapt", "--store", store_spec, "--lab", lab, "-o", str(out)])
    assert read.exit_code != 0 and isinstance(read.exception, DataError), read.output
    assert "holds no reviewed or signed sample of lab " in str(read.exception) and not out.exists()
    too_long = CliRunner().invoke(app, ["samples", "lab-audit", "x" * 201, "--store", store_spec])
    assert isinstance(too_long.exception, ConfigError) and "at most 200 characters" in str(too_long.exception)


def test_a_lab_named_before_the_rule_keeps_its_bank_for_adapt_store(store, store_spec, people, tmp_path):
    """A 200-character lab name kept before the rule: `adapt --store --lab` reads its bank (too small here: the
    bank's sentence, not the rule's) and `samples lab-audit` its trail."""
    from sqlalchemy import update

    from bloodcell.store.models import Sample

    old = "Lab " + "s" * 196
    _keep(store, tmp_path, "A-1", "placeholder", [("neutrophil", GREY)] * 3)
    with store.session() as session:
        session.execute(update(Sample).where(Sample.sample_id == "A-1").values(lab=old))
        assert bank_summary(session, old)["lab"] == old
    out = tmp_path / "a.safetensors"
    read = CliRunner().invoke(app, ["adapt", "--store", store_spec, "--lab", old, "-o", str(out)])
    assert isinstance(read.exception, DataError) and "is too small to adapt from" in str(read.exception), read.output
    audit = CliRunner().invoke(app, ["samples", "lab-audit", old, "--store", store_spec])
    assert audit.exit_code == 0 and audit.output.startswith("nothing recorded for lab"), audit.output

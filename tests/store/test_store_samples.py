"""Samples kept, reviewed, signed and reopened: roles, stale writes, read-only signed samples, the audit trail."""

from __future__ import annotations

import pytest
from store_helpers import PASSWORDS, confirm_referred, counted_doc
from sqlalchemy import select, text

from bloodcell.errors import ConfigError
from bloodcell.smear.referral import review_targets
from bloodcell.store.audit import trail
from bloodcell.store.errors import AuthError, ConflictError, ReadOnlyError, RoleError, StoreError
from bloodcell.store.models import AuditEntry, Cell
from bloodcell.store.samples import (add_cell, decide, find, finish_review, record_count, reopen, sign,
                                     standing_decisions, summary, tallies, undecided)
from bloodcell.store.users import authenticate, disable_user


def _record(store, tmp_path, sample_id="S-001", **kwargs):
    with store.session() as session:
        record_count(session, store.photos, counted_doc(tmp_path / "photos", sample_id, **kwargs), "tia",
                     classifier=("pbc8.safetensors", "a" * 64), detector=("classical", None), seconds=1.5)


def _wbc_cells(store, sample_id="S-001"):
    with store.session() as session:
        return [c.id for c in find(session, sample_id).cells if c.label == "WBC"]


def test_a_counted_sample_is_kept_with_its_photo_cells_models_and_timing(store, tmp_path):
    _record(store, tmp_path)
    with store.session() as session:
        sample = find(session, "S-001")
        row = summary(sample)
        referred = [c for c in sample.cells if c.referral_reason]
        photo = store.photos.get(sample.photos[0].sha256)
    assert row["status"] == "counted" and row["version"] == 1
    assert row["counts"] == {"RBC": 3, "WBC": 4, "Platelets": 1}
    assert row["wbc_types"] == {"lymphocyte": 1, "neutrophil": 3}
    assert row["differential_percent"] == {"lymphocyte": 25.0, "neutrophil": 75.0}
    assert row["classifier"] == {"name": "pbc8.safetensors", "sha256": "a" * 64}
    assert row["timings"] == {"count": 1.5}
    assert [c.referral_reason for c in referred] == ["confidence 0.40 below 0.60"]
    assert photo == (tmp_path / "photos").joinpath(sample.photos[0].name).read_bytes()


def test_the_same_sample_id_is_not_recorded_twice(store, tmp_path):
    _record(store, tmp_path)
    with pytest.raises(ConfigError, match="already holds sample 'S-001'"):
        _record(store, tmp_path)


def test_wrong_password_unknown_user_and_disabled_user_are_refused(store, people):
    with store.session() as session:
        with pytest.raises(AuthError, match="^wrong user name or password$"):
            authenticate(session, "sam", "not-sams-password")
        with pytest.raises(AuthError, match="^wrong user name or password$"):
            authenticate(session, "nobody", PASSWORDS["sam"])
        assert authenticate(session, "sam", PASSWORDS["sam"]).role == "supervisor"
        disable_user(session, "sam", people["ada"])
    with store.session() as session, pytest.raises(AuthError, match="disabled"):
        authenticate(session, "sam", PASSWORDS["sam"])


def test_passwords_are_hashed_and_never_defaulted(store, people):
    with store.session() as session:
        hashes = [h for (h,) in session.execute(text("SELECT password_hash FROM users"))]
        assert all(h.startswith("$argon2") for h in hashes)
        assert not any(p in h for h in hashes for p in PASSWORDS.values())
        with pytest.raises(ConfigError, match="at least 10 characters"):
            from bloodcell.store.users import add_user
            add_user(session, "bob", "technician", "", people["ada"])


def test_the_first_user_must_be_an_admin_and_later_ones_need_an_admin(store):
    from bloodcell.store.users import add_user
    with store.session() as session, pytest.raises(ConfigError, match="first user of a store must be an admin"):
        add_user(session, "tia", "technician", "technician-pass-1", None)
    with store.session() as session:
        ada = add_user(session, "ada", "admin", "admin-password-1", None)
    with store.session() as session, pytest.raises(AuthError, match="sign in as an admin"):
        add_user(session, "eve", "admin", "intruder-password", None)
    with store.session() as session:
        tia = add_user(session, "tia", "technician", "technician-pass-1", ada)
    with store.session() as session, pytest.raises(RoleError, match="^tia is a technician: only an admin may manage users$"):
        add_user(session, "bob", "technician", "technician-pass-2", tia)


def test_a_missing_role_is_refused_in_one_sentence(store, tmp_path, people):
    _record(store, tmp_path)
    with store.session() as session:
        confirm_referred(session, "S-001", people["tia"])
        finish_review(session, "S-001", people["tia"])
    with store.session() as session, pytest.raises(RoleError) as error:
        sign(session, "S-001", people["tia"])
    assert str(error.value) == "tia is a technician: only a supervisor may sign off or reopen a sample"
    with store.session() as session, pytest.raises(
            RoleError, match="^ada is an admin: only a technician or a supervisor may review cells$"):
        decide(session, "S-001", _wbc_cells(store)[0], "confirm", people["ada"])


def test_a_stale_write_is_refused_and_the_newer_one_kept(store, tmp_path, people):
    _record(store, tmp_path)
    first, second = _wbc_cells(store)[:2]
    with store.session() as session:
        decide(session, "S-001", first, "relabel", people["tia"], cell_class="monocyte", expected_version=1)
    with store.session() as session, pytest.raises(ConflictError, match="is at version 2, not 1"):
        decide(session, "S-001", second, "relabel", people["sam"], cell_class="eosinophil", expected_version=1)
    with store.session() as session:
        assert tallies(find(session, "S-001"))[1] == {"lymphocyte": 1, "monocyte": 1, "neutrophil": 2}


def test_two_writers_of_one_sample_at_once_one_is_refused(store, tmp_path, people):
    """Both read version 1; the second to commit is refused by the version column, not overwritten."""
    _record(store, tmp_path)
    first, second = _wbc_cells(store)[:2]
    with pytest.raises(ConflictError, match="changed by someone else"):
        with store.session() as slow:
            read = find(slow, "S-001")
            assert read.version == 1
            with store.session() as fast:
                decide(fast, "S-001", first, "remove", people["tia"])
            decide(slow, "S-001", second, "remove", people["sam"])
    with store.session() as session:
        sample = find(session, "S-001")
        assert sample.version == 2 and [c.id for c in sample.cells if c.removed] == [first]


def test_a_signed_sample_is_read_only_until_reopened_with_a_reason(store, tmp_path, people):
    _record(store, tmp_path)
    cell = _wbc_cells(store)[0]
    with store.session() as session, pytest.raises(ReadOnlyError, match="only a reviewed sample can be signed"):
        sign(session, "S-001", people["sam"])
    with store.session() as session:
        confirm_referred(session, "S-001", people["tia"])
        finish_review(session, "S-001", people["tia"])
        sign(session, "S-001", people["sam"])
    with store.session() as session, pytest.raises(ReadOnlyError, match="is signed: a supervisor must reopen it"):
        decide(session, "S-001", cell, "relabel", people["sam"], cell_class="basophil")
    with store.session() as session, pytest.raises(ReadOnlyError):
        add_cell(session, "S-001", 0, (1, 1, 5, 5), "Platelets", people["tia"])
    with store.session() as session, pytest.raises(ConfigError, match="needs a reason"):
        reopen(session, "S-001", people["sam"], "  ")
    with store.session() as session, pytest.raises(RoleError):
        reopen(session, "S-001", people["tia"], "tech wants to change it")
    with store.session() as session:
        reopen(session, "S-001", people["sam"], "eosinophils look low")
        decide(session, "S-001", cell, "relabel", people["sam"], cell_class="basophil")
        sample = find(session, "S-001")
        assert sample.status == "in_review" and sample.signed_by is None
        assert trail(session, sample)[-2].after == {"status": "in_review", "reason": "eosinophils look low"}


def _referred(store, sample_id="S-001"):
    with store.session() as session:
        return [c.id for c in find(session, sample_id).cells if c.referral_reason]


def test_a_review_with_a_referred_cell_undecided_cannot_be_finished_nor_signed(store, tmp_path, people):
    _record(store, tmp_path, types={"neutrophil": 8})
    referred = _referred(store)
    with store.session() as session:  # seven more, so that the sentence names the first five
        for cell in [c.id for c in find(session, "S-001").cells if c.label == "WBC"][1:]:
            session.get(Cell, cell).referral_reason = "the detector is not sure this is a white cell (0.46)"
    cells = _referred(store)
    assert len(cells) == 8 and cells[0] == referred[0]
    with store.session() as session, pytest.raises(ReadOnlyError) as error:
        finish_review(session, "S-001", people["tia"])
    assert str(error.value) == (f"sample 'S-001' has 8 referred or doubtful cells with no decision yet (cells "
                                f"{', '.join(map(str, cells[:5]))}, ...): confirm, relabel or remove each before "
                                "finishing its review")
    with store.session() as session:
        for cell in cells[:7]:
            decide(session, "S-001", cell, "confirm", people["tia"])
        decide(session, "S-001", cells[7], "move", people["tia"], box=(1, 1, 9, 9))  # a moved box is no call
    with store.session() as session, pytest.raises(ReadOnlyError, match=rf"has 1 referred or doubtful cell with no "
                                                   rf"decision yet \(cell {cells[7]}\): confirm, relabel or remove it"):
        finish_review(session, "S-001", people["tia"])
    with store.session() as session, pytest.raises(ReadOnlyError, match="only a reviewed sample can be signed"):
        sign(session, "S-001", people["sam"])
    with store.session() as session:
        decide(session, "S-001", cells[7], "remove", people["tia"])
        finish_review(session, "S-001", people["tia"])
    with store.session() as session:  # a change after the review was finished: it must be finished again
        decide(session, "S-001", cells[7], "relabel", people["tia"], cell_class="lymphocyte", undo=True)
    with store.session() as session:
        assert find(session, "S-001").status == "in_review"
    with store.session() as session, pytest.raises(ReadOnlyError, match="only a reviewed sample can be signed"):
        sign(session, "S-001", people["sam"])
    with store.session() as session:  # a store whose sample was finished before finishing checked its cells
        find(session, "S-001").status = "reviewed"
    with store.session() as session, pytest.raises(ReadOnlyError, match=r"\(cell \d+\): .* before signing it$"):
        sign(session, "S-001", people["sam"])


def test_an_undo_leaves_the_cell_exactly_as_before_and_undecided_and_is_audited(store, tmp_path, people):
    _record(store, tmp_path)
    cell = _referred(store)[0]

    def state():
        with store.session() as session:
            kept = session.get(Cell, cell)
            sample = find(session, "S-001")
            return ((kept.label, kept.cell_class, kept.removed, kept.x1), [d.action for d in
                    standing_decisions(session, sample).get(cell, [])], [c.id for c in undecided(session, sample)])

    first = state()
    assert first[1:] == ([], [cell])
    with store.session() as session:
        decide(session, "S-001", cell, "relabel", people["tia"], cell_class="monocyte")
        decide(session, "S-001", cell, "move", people["tia"], box=(2, 2, 9, 9))
        decide(session, "S-001", cell, "remove", people["tia"])
    assert state()[1:] == (["relabel", "move", "remove"], [])
    for standing in (["relabel", "move"], ["relabel"], []):
        with store.session() as session:  # the action sent with an undo does not matter: the cell goes back
            decide(session, "S-001", cell, "confirm", people["tia"], undo=True)
        assert state()[1] == standing
    assert state() == first
    with store.session() as session:
        entries = [e for e in trail(session, find(session, "S-001")) if e.target == f"cell:{cell}"]
    assert [(e.action, (e.after or {}).get("undo", False)) for e in entries] == [
        ("relabel", False), ("move_box", False), ("remove_box", False), ("remove_box", True), ("move_box", True),
        ("relabel", True)]
    assert entries[3].before == {"label": "WBC", "class": "monocyte", "removed": True}
    assert entries[3].after == {"label": "WBC", "class": "monocyte", "removed": False, "undo": True}
    with store.session() as session, pytest.raises(ConfigError, match="tia has no decision on cell"):
        decide(session, "S-001", cell, "confirm", people["tia"], undo=True)
    with store.session() as session:
        decide(session, "S-001", cell, "platelet", people["tia"])
        decide(session, "S-001", cell, "confirm", people["sam"])
    with store.session() as session, pytest.raises(ConflictError, match="sam decided cell .* after you"):
        decide(session, "S-001", cell, "relabel", people["tia"], cell_class="neutrophil", undo=True)


def test_every_change_is_audited_with_who_before_and_after(store, tmp_path, people):
    _record(store, tmp_path)
    first, second, third = _wbc_cells(store)[:3]
    with store.session() as session:
        decide(session, "S-001", first, "confirm", people["tia"])
        decide(session, "S-001", second, "relabel", people["tia"], cell_class="monocyte")
        decide(session, "S-001", third, "remove", people["tia"])
        added = add_cell(session, "S-001", 0, (50, 50, 60, 60), "WBC", people["tia"], cell_class="eosinophil")
        finish_review(session, "S-001", people["tia"])
        sign(session, "S-001", people["sam"])
        reopen(session, "S-001", people["sam"], "second look")
    with store.session() as session:
        entries = trail(session, find(session, "S-001"))
    assert [(e.actor, e.action) for e in entries] == [
        ("tia", "count"), ("tia", "decision"), ("tia", "relabel"), ("tia", "remove_box"), ("tia", "add_box"),
        ("tia", "review_done"), ("sam", "sign"), ("sam", "reopen")]
    assert entries[2].target == f"cell:{second}"
    assert (entries[2].before, entries[2].after) == ({"label": "WBC", "class": "neutrophil", "removed": False},
                                                     {"label": "WBC", "class": "monocyte", "removed": False})
    assert entries[4].after["class"] == "eosinophil" and entries[4].target == f"cell:{added.id}"
    assert all(e.at is not None for e in entries)


def _all_entries(store):
    with store.session() as session:
        return [(e.id, e.actor, e.action, e.before, e.after) for e in session.scalars(select(AuditEntry))]


def test_the_audit_trail_is_never_edited_or_deleted(store, tmp_path, people):
    _record(store, tmp_path)
    kept = _all_entries(store)
    with pytest.raises(StoreError, match="append-only"), store.session() as session:
        session.scalars(select(AuditEntry)).first().actor = "someone else"
        session.flush()
    with pytest.raises(StoreError, match="append-only"), store.session() as session:
        session.delete(session.scalars(select(AuditEntry)).first())
        session.flush()
    for statement in ("UPDATE audit SET actor = 'someone else'", "DELETE FROM audit"):
        with pytest.raises(Exception, match="append-only"), store.engine.begin() as connection:
            connection.execute(text(statement))
    assert _all_entries(store) == kept and kept[-1][1:3] == ("tia", "count")


def test_a_removed_cell_leaves_the_counts_and_an_added_one_joins_them(store, tmp_path, people):
    _record(store, tmp_path, types={"neutrophil": 2})
    with store.session() as session:
        decide(session, "S-001", _wbc_cells(store)[0], "remove", people["tia"])
        add_cell(session, "S-001", 0, (70, 10, 80, 20), "WBC", people["tia"], cell_class="lymphocyte")
        counts, types = tallies(find(session, "S-001"))
        assert counts["WBC"] == 2 and types == {"lymphocyte": 1, "neutrophil": 1}
        assert session.scalar(select(Cell).where(Cell.origin == "reviewer")).cell_class == "lymphocyte"


def test_a_count_that_fails_half_way_leaves_no_trace_in_the_database(store, tmp_path):
    doc = counted_doc(tmp_path / "photos")
    doc.images.append(doc.images[0].model_copy(update={"path": str(tmp_path / "photos" / "gone.png")}))
    with pytest.raises(StoreError, match="gone.png: cannot read the photo to keep it"), store.session() as session:
        record_count(session, store.photos, doc, "tia")
    with store.session() as session:
        assert session.scalar(text("SELECT count(*) FROM samples")) == 0
        assert session.scalar(text("SELECT count(*) FROM cells")) == 0
        assert session.scalar(text("SELECT count(*) FROM audit")) == 0


def test_a_full_disk_fails_the_count_in_one_sentence_and_keeps_the_store_consistent(store, tmp_path, monkeypatch):
    import errno
    import os

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("bloodcell.store.photos.os.replace", full)
    with pytest.raises(StoreError, match="cannot keep the photo .No space left on device.$"):
        with store.session() as session:
            record_count(session, store.photos, counted_doc(tmp_path / "photos"), "tia")
    monkeypatch.undo()
    assert not [p for p in store.photos.root.rglob("*") if p.is_file()]  # no half-written photo left
    _record(store, tmp_path)  # the same sample goes in once there is room again
    with store.session() as session:
        assert find(session, "S-001").status == "counted"


def test_the_store_keeps_the_same_referred_cells_the_count_reported(store, tmp_path):
    """Issue 25's one count of referred cells: a white cell the detector doubts is referred in the store too."""
    result = counted_doc(tmp_path / "photos")
    result.images[0].boxes[4].score = 0.3  # a confident neutrophil call on a doubtful detection
    result.sample.wbc_referred = len(review_targets(result.images[0].entry()))
    with store.session() as session:
        record_count(session, store.photos, result, "tia")
        kept = summary(find(session, "S-001"))
    assert kept["referred"] == result.sample.wbc_referred == 2


def test_the_lab_check_of_a_kept_sample_comes_from_its_live_white_cells(store, store_spec, tmp_path):
    """Each typed white cell's lab check is kept; the sample's follows its cells as reviewed (a removed cell no longer
    counts), so `samples show`, the service and the page say what counts.json said; unchecked cells say nothing."""
    result = counted_doc(tmp_path / "photos", "S-lab")
    white = [box for box in result.images[0].boxes if box.label == "WBC"]
    for box, odd in zip(white, (True, True, True, False)):
        box.unfamiliar_lab = odd
    with store.session() as session:
        record_count(session, store.photos, result, "tia")
    _record(store, tmp_path, "S-plain")
    with store.session() as session:
        check = summary(find(session, "S-lab"))["lab_check"]
        assert summary(find(session, "S-plain"))["lab_check"] is None
    assert check["checked"] == 4 and check["unfamiliar"] == 3 and check["unfamiliar_lab"]
    assert "adapt the classifier to your lab" in check["message"]
    from bloodcell.cli.main import app
    from typer.testing import CliRunner

    shown = CliRunner().invoke(app, ["samples", "show", "S-lab", "--store", str(store_spec)])
    assert shown.exit_code == 0, shown.output
    assert "lab check: WARNING: 3 of 4 white cells look unlike" in " ".join(shown.output.split())

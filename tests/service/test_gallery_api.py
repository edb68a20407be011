"""The gallery review over HTTP: crops cut from the kept full-resolution photo, the lab's target count (an admin's,
audited), the gallery's decisions (platelet and smudge bins, a moved box, an undo: each a new audited decision),
and photos counted by a signed-in person kept in the store under the sample id they typed, or added to it."""

from __future__ import annotations

import io
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from service_helpers import smear_png

import bloodcell.service.gallery_api as gallery_api
import bloodcell.store.report as store_report
from bloodcell.data.images import read_image
from bloodcell.errors import ImageError
from bloodcell.service.app import create_app
from bloodcell.service.settings import ServiceSettings
from bloodcell.store.audit import trail
from bloodcell.store.database import open_store
from bloodcell.store.models import AuditEntry, Decision
from bloodcell.store.samples import find

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_helpers import PASSWORDS  # noqa: E402


@pytest.fixture()
def client(store_path, tiny_classifier):
    app = create_app(ServiceSettings(store=str(store_path), detector="classical"), classifier=tiny_classifier,
                     access_log=io.StringIO())
    with TestClient(app, raise_server_exceptions=False, base_url="http://localhost") as client:
        yield client


def _sign_in(client: TestClient, name: str) -> dict[str, str]:
    response = client.post("/v1/session", json={"name": name, "password": PASSWORDS[name]})
    assert response.status_code == 200, response.text
    return {"X-CSRF-Token": response.json()["csrf_token"]}


def _white(sample: dict) -> list[dict]:
    return [c for c in sample["cells"] if c["label"] == "WBC"]


def test_a_crop_is_cut_from_the_full_resolution_photo_at_the_size_asked(client):
    assert client.get("/v1/samples/S-001/cells/1/crop").status_code == 401
    _sign_in(client, "tia")
    cell = _white(client.get("/v1/samples/S-001").json())[0]  # a 10x10 box at x 40-50, y 20-30
    large = client.get(f"/v1/samples/S-001/cells/{cell['id']}/crop?size=256")
    assert large.status_code == 200 and large.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(large.content)).size == (256, 256)
    native = Image.open(io.BytesIO(client.get(f"/v1/samples/S-001/cells/{cell['id']}/crop?size=0&context=2").content))
    assert native.size == (20, 20)  # the photo's own pixels: twice the box's side
    photo = Image.open(io.BytesIO(client.get("/v1/samples/S-001/photos/0").content)).convert("RGB")
    assert native.convert("RGB").tobytes() == photo.crop((35, 15, 55, 35)).tobytes()
    assert client.get("/v1/samples/S-001/cells/99999/crop").status_code == 404
    assert client.get(f"/v1/samples/S-001/cells/{cell['id']}/crop?size=5000").status_code == 422


def test_only_an_admin_sets_the_target_count_and_the_change_is_audited(client, store_path):
    tia = _sign_in(client, "tia")
    assert client.get("/v1/lab/settings").json() == {"wbc_target": 100}
    assert client.get("/v1/samples/S-001").json()["wbc_target"] == 100
    refused = client.put("/v1/lab/settings", json={"wbc_target": 200}, headers=tia)
    assert refused.status_code == 403 and refused.json()["message"] == (
        "tia is a technician: only an admin may change the lab's settings")
    ada = _sign_in(client, "ada")
    assert client.put("/v1/lab/settings", json={"wbc_target": 150}, headers=ada).status_code == 422
    assert client.put("/v1/lab/settings", json={"wbc_target": 200}, headers=ada).json() == {"wbc_target": 200}
    assert client.get("/v1/samples/S-001").json()["wbc_target"] == 200
    store = open_store(store_path)
    with store.session() as session:
        entry = session.query(AuditEntry).filter(AuditEntry.action == "setting").one()
        assert (entry.actor, entry.before, entry.after) == ("ada", {"wbc_target": 100}, {"wbc_target": 200})
    store.close()


def test_bins_a_moved_box_and_an_undo_are_new_audited_decisions(client, store_path):
    tia = _sign_in(client, "tia")
    sample = client.get("/v1/samples/S-001").json()
    first, second = (c["id"] for c in _white(sample)[:2])

    def decide(body):
        nonlocal sample
        response = client.post("/v1/samples/S-001/decisions", json={**body, "version": sample["version"]}, headers=tia)
        assert response.status_code == 200, response.text
        sample = response.json()
        return next(c for c in sample["cells"] if c["id"] == body["cell_id"])

    model = _white(sample)[0]["model_call"]
    assert model["class"] == "neutrophil" and model["confidence"] is not None and _white(sample)[0]["changed_by"] is None
    platelet = decide({"cell_id": first, "action": "platelet"})
    assert platelet["label"] == "Platelets"
    assert platelet["changed_by"] == "tia" and platelet["model_call"] == model  # the person's call, the model's kept
    assert sample["counts"]["WBC"] == 3 and sample["counts"]["Platelets"] == 2
    back = decide({"cell_id": first, "action": "relabel", "cell_class": "neutrophil", "undo": True})
    assert (back["label"], back["class"], back["decision"]) == ("WBC", "neutrophil", None)  # as before: undecided
    assert back["changed_by"] is None and back["model_call"] == model  # the model's call stands again
    assert decide({"cell_id": second, "action": "remove"})["removed"]
    relabelled = decide({"cell_id": second, "action": "relabel", "cell_class": "lymphocyte"})
    assert not relabelled["removed"]  # out of the bin
    assert relabelled["changed_by"] == "tia" and relabelled["model_call"]["class"] == "neutrophil"
    moved = decide({"cell_id": first, "action": "move", "box": [38, 18, 54, 32]})
    assert moved["box"] == [38, 18, 54, 32] and moved["changed_by"] is None  # a moved box changes no call
    unknown = client.post("/v1/samples/S-001/decisions", headers=tia, json={
        "cell_id": first, "action": "relabel", "cell_class": "monocyte", "version": sample["version"]})
    assert unknown.status_code == 422 and unknown.json()["message"].startswith(
        "'monocyte' is not a class here; a white cell is one of ")
    assert not {"RBC", "WBC", "Platelets"} & set(unknown.json()["message"].split(" one of ")[1].split(", "))
    bad_box = client.post("/v1/samples/S-001/decisions", headers=tia, json={
        "cell_id": first, "action": "move", "box": [50, 18, 40, 32], "version": sample["version"]})
    assert bad_box.status_code == 422

    store = open_store(store_path)
    with store.session() as session:
        entries = trail(session, find(session, "S-001"))
    store.close()
    assert [e.action for e in entries] == ["count", "relabel", "relabel", "remove_box", "relabel", "move_box"]
    assert entries[1].before == {"label": "WBC", "class": "neutrophil", "removed": False}
    assert entries[1].after == {"label": "Platelets", "class": None, "removed": False}
    assert entries[2].after["undo"] is True and "undo" not in entries[1].after
    assert entries[5].before == {"box": [40.0, 20.0, 50.0, 30.0]} and entries[5].after == {"box": [38, 18, 54, 32]}


def test_photos_counted_by_a_signed_in_person_are_kept_under_the_typed_id_or_added_to_it(client):
    photo, other = smear_png(wbc=1), smear_png(wbc=1, shade=7)
    anonymous = client.post("/v1/count", files=[("files", ("a.png", photo, "image/png"))])
    assert anonymous.status_code == 200 and anonymous.json()["stored_sample"] is None  # not signed in: not kept
    tia = _sign_in(client, "tia")
    no_id = client.post("/v1/count", files=[("files", ("a.png", photo, "image/png"))], headers=tia)
    assert no_id.status_code == 422 and no_id.json()["message"] == (
        "type the sample's id: photos counted while you are signed in are kept in the lab's store under it")
    no_token = client.post("/v1/count", data={"sample_id": "S-2"}, files=[("files", ("a.png", photo, "image/png"))])
    assert no_token.status_code == 200 and no_token.json()["stored_sample"] is None  # not asked to keep: counted
    assert client.get("/v1/samples/S-2").status_code == 404

    kept = client.post("/v1/count", data={"sample_id": "S-2"}, files=[("files", ("a.png", photo, "image/png"))],
                       headers=tia)
    assert kept.status_code == 200, kept.text
    assert kept.json()["stored_sample"] == "S-2"
    sample = client.get("/v1/samples/S-2").json()
    assert sample["counted_by"] == "tia" and [p["name"] for p in sample["photos"]] == ["a.png"]
    assert sample["counts"] == kept.json()["sample"]["counts"]
    assert sample["detector"]["name"] == "classical"

    again = client.post("/v1/count", data={"sample_id": "S-2"}, files=[("files", ("b.png", other, "image/png"))],
                        headers=tia)
    assert again.status_code == 422 and "already holds sample 'S-2'" in again.json()["message"]
    added = client.post("/v1/count", data={"sample_id": "S-2", "add_to_sample": "true"},
                        files=[("files", ("b.png", other, "image/png"))], headers=tia)
    assert added.status_code == 200, added.text
    sample = client.get("/v1/samples/S-2").json()
    assert [p["name"] for p in sample["photos"]] == ["a.png", "b.png"]
    assert client.get("/v1/samples/S-2/audit").json()[-1]["action"] == "add_photos"
    twice = client.post("/v1/count", data={"sample_id": "S-2", "add_to_sample": "true"},
                        files=[("files", ("c.png", other, "image/png"))], headers=tia)
    assert twice.status_code == 422 and twice.json()["message"] == "c.png: sample 'S-2' holds this photo already"
    assert len(client.get("/v1/samples/S-2").json()["photos"]) == 2  # nothing of the refused request was kept
    missing = client.post("/v1/count", data={"sample_id": "S-9", "add_to_sample": "true"},
                          files=[("files", ("b.png", other, "image/png"))], headers=tia)
    assert missing.status_code == 404


def test_a_crop_of_a_phone_photo_uses_the_upright_coordinates_counting_used(client):
    upright = Image.open(io.BytesIO(smear_png(wbc=2))).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: a viewer rotates it 90 degrees clockwise to show it upright
    buffer = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    tia = _sign_in(client, "tia")
    counted = client.post("/v1/count", data={"sample_id": "EXIF-1"},
                          files=[("files", ("phone.jpg", buffer.getvalue(), "image/jpeg"))], headers=tia)
    assert counted.status_code == 200, counted.text
    shown = read_image(buffer.getvalue())
    assert shown.size == upright.size
    cell = _white(client.get("/v1/samples/EXIF-1").json())[0]
    response = client.get(f"/v1/samples/EXIF-1/cells/{cell['id']}/crop?size=0&context=1")
    assert response.status_code == 200, response.text
    crop = Image.open(io.BytesIO(response.content))
    x1, y1, x2, y2 = cell["box"]
    side = crop.size[0]
    left, top = round((x1 + x2 - side) / 2), round((y1 + y2 - side) / 2)
    want = np.asarray(shown.crop((left, top, left + side, top + side)), float)
    assert np.abs(np.asarray(crop.convert("RGB"), float) - want).mean() < 3


def _confirm_referred(client, sample_id: str, headers: dict) -> int:
    """Confirm every referred or doubtful cell of the sample (so its review can be finished); its new version."""
    sample = client.get(f"/v1/samples/{sample_id}").json()
    for cell in sample["cells"]:
        if cell["referral_reason"] and not cell["removed"] and not cell["decision"]:
            response = client.post(f"/v1/samples/{sample_id}/decisions", headers=headers, json={
                "cell_id": cell["id"], "action": "confirm", "version": sample["version"]})
            assert response.status_code == 200, response.text
            sample = response.json()
    return sample["version"]


def test_photos_added_to_a_reviewed_sample_send_it_back_in_review_and_a_signed_one_refuses_them(client):
    tia = _sign_in(client, "tia")

    def add(name, shade, add_to_sample="true"):
        return client.post("/v1/count", data={"sample_id": "S-3", "add_to_sample": add_to_sample}, headers=tia,
                           files=[("files", (name, smear_png(wbc=3, shade=shade), "image/png"))])

    assert add("first.png", 1, "false").status_code == 200
    version = _confirm_referred(client, "S-3", tia)
    assert client.post("/v1/samples/S-3/finish", headers=tia, json={"version": version}).status_code == 200

    assert add("new.png", 5).status_code == 200
    sample = client.get("/v1/samples/S-3").json()
    assert sample["status"] == "in_review" and len(sample["photos"]) == 2
    entry = client.get("/v1/samples/S-3/audit").json()[-1]
    assert entry["action"] == "add_photos" and (entry["before"]["status"], entry["after"]["status"]) == (
        "reviewed", "in_review")
    sam = _sign_in(client, "sam")
    assert client.post("/v1/samples/S-3/sign", headers=sam, json={"version": sample["version"]}).status_code == 409
    version = _confirm_referred(client, "S-3", sam)
    version = client.post("/v1/samples/S-3/finish", headers=sam, json={"version": version}).json()["version"]
    assert client.post("/v1/samples/S-3/sign", headers=sam, json={"version": version}).status_code == 200
    tia = _sign_in(client, "tia")
    refused = add("later.png", 9)
    assert refused.status_code == 409 and "is signed" in refused.json()["message"]
    assert len(client.get("/v1/samples/S-3").json()["photos"]) == 2


def test_a_box_beyond_the_photo_is_refused_and_a_crop_that_misses_it_is_422(client, store_path):
    tia = _sign_in(client, "tia")
    sample = client.get("/v1/samples/S-001").json()
    width, height = Image.open(io.BytesIO(client.get("/v1/samples/S-001/photos/0").content)).size
    cell = _white(sample)[0]
    moved = client.post("/v1/samples/S-001/decisions", headers=tia, json={
        "cell_id": cell["id"], "action": "move", "box": [5000, 5000, 5010, 5010], "version": sample["version"]})
    assert moved.status_code == 422 and f"{width}x{height} pixels" in moved.json()["message"]
    added = client.post("/v1/samples/S-001/cells", headers=tia, json={
        "photo": 0, "box": [width - 5, 1, width + 5, 11], "label": "WBC", "version": sample["version"]})
    assert added.status_code == 422 and "reaches beyond photo" in added.json()["message"]
    assert client.get("/v1/samples/S-001").json()["version"] == sample["version"]  # nothing kept
    store = open_store(store_path)  # a box kept off the photo (before boxes were checked)
    with store.session() as session:
        kept = next(c for c in find(session, "S-001").cells if c.id == cell["id"])
        kept.x1, kept.y1, kept.x2, kept.y2 = 5000, 5000, 5010, 5010
    store.close()
    crop = client.get(f"/v1/samples/S-001/cells/{cell['id']}/crop")
    assert crop.status_code == 422 and "lies outside its photo" in crop.json()["message"]


def test_a_cell_added_with_an_unknown_class_or_a_class_for_a_red_cell_is_refused(client):
    tia = _sign_in(client, "tia")
    sample = client.get("/v1/samples/S-001").json()

    def add(label, cell_class):
        return client.post("/v1/samples/S-001/cells", headers=tia, json={
            "photo": 0, "box": [1, 1, 11, 11], "label": label, "cell_class": cell_class, "version": sample["version"]})

    unknown = add("WBC", "not-a-type")
    assert unknown.status_code == 422 and "'not-a-type' is not a class here" in unknown.json()["message"]
    red = add("RBC", "lymphocyte")
    assert red.status_code == 422 and red.json()["message"] == (
        "a RBC cell has no white-cell class (got 'lymphocyte'): add it as WBC")
    assert client.get("/v1/samples/S-001").json()["wbc_types"] == sample["wbc_types"]
    assert add("WBC", "Lymphocytes").json()["wbc_types"]["lymphocyte"] == sample["wbc_types"].get("lymphocyte", 0) + 1


def test_a_sample_id_that_could_not_be_opened_again_is_refused_before_counting(client):
    tia = _sign_in(client, "tia")
    for sample_id in ("a/b", "..", "a%2Fb", "x?y"):
        refused = client.post("/v1/count", data={"sample_id": sample_id}, headers=tia,
                              files=[("files", ("a.png", smear_png(wbc=1), "image/png"))])
        assert refused.status_code == 422 and "cannot be used: use 1 to 190 letters (of any script)" in refused.json()["message"], sample_id
    assert [s["sample_id"] for s in client.get("/v1/samples").json()] == ["S-001"]
    kept = client.post("/v1/count", data={"sample_id": "S_2026.01-7"}, headers=tia,
                       files=[("files", ("a.png", smear_png(wbc=1), "image/png"))])
    assert kept.status_code == 200 and client.get("/v1/samples/S_2026.01-7").status_code == 200


def test_one_sample_id_rule_and_one_message_for_counting_keeping_and_reviewing(client):
    from urllib.parse import quote

    from bloodcell.smear.sample_id import RULE

    photo = [("files", ("a.png", smear_png(wbc=1), "image/png"))]
    for sample_id in ("s" * 191, "S#5"):
        anonymous = client.post("/v1/count", data={"sample_id": sample_id}, files=photo)  # only counted: same rule
        assert anonymous.status_code == 422 and anonymous.json()["message"].endswith(f"cannot be used: {RULE}")
    review = client.post("/v1/review", files={"review": ("review.json", b'{"sample_id": "a/b", "states": [{}]}',
                                                         "application/json")})
    assert review.status_code == 422 and f"cannot be used: {RULE}" in review.json()["message"]
    tia = _sign_in(client, "tia")
    for sample_id in ("Ünïcödé-血液", "L" * 150, "s" * 190):  # letters of any script; the CLI's 150 characters
        kept = client.post("/v1/count", data={"sample_id": sample_id}, headers=tia, files=[
            ("files", ("a.png", smear_png(wbc=1, shade=len(sample_id) % 50), "image/png"))])
        assert kept.status_code == 200, kept.text
        assert client.get(f"/v1/samples/{quote(sample_id)}").json()["sample_id"] == sample_id



def test_photos_counted_with_other_models_are_not_added_to_a_sample(client):
    tia = _sign_in(client, "tia")  # S-001 was counted without a classifier file; this service has one
    refused = client.post("/v1/count", data={"sample_id": "S-001", "add_to_sample": "true"}, headers=tia,
                          files=[("files", ("new.png", smear_png(wbc=3, shade=5), "image/png"))])
    assert refused.status_code == 409 and refused.json()["message"].startswith(
        "sample 'S-001' was counted with the classifier unknown (no file), not this service's tiny")
    assert len(client.get("/v1/samples/S-001").json()["photos"]) == 1


def test_an_undo_needs_an_earlier_decision_of_the_reviewer_on_that_cell(client, store_path):
    tia = _sign_in(client, "tia")
    sample = client.get("/v1/samples/S-001").json()
    cell = _white(sample)[0]["id"]

    def decide(action, undo, **extra):
        nonlocal sample
        response = client.post("/v1/samples/S-001/decisions", headers=tia, json={
            "cell_id": cell, "action": action, "undo": undo, "version": sample["version"], **extra})
        if response.status_code == 200:
            sample = response.json()
        return response

    nothing = decide("confirm", True)
    assert nothing.status_code == 422 and nothing.json()["message"] == (
        f"tia has no decision on cell {cell} of sample 'S-001' to undo")
    assert decide("platelet", False).status_code == 200
    assert decide("relabel", True, cell_class="neutrophil").status_code == 200
    assert decide("confirm", True).status_code == 422  # the platelet was taken back already
    store = open_store(store_path)
    with store.session() as session:
        kept = find(session, "S-001")
        assert [(d.action, d.undo) for d in session.query(Decision).filter(Decision.sample_pk == kept.id)
                .order_by(Decision.id)] == [("platelet", False), ("platelet", True)]  # the undo of the platelet
        assert [e.after.get("undo", False) for e in trail(session, kept)][1:] == [False, True]
    store.close()



def test_a_count_is_kept_only_when_a_signed_in_person_asks_and_a_stale_cookie_still_counts(client):
    photo = smear_png(wbc=1)
    client.cookies.set("bloodcell_session", "stale-token")
    stale = client.post("/v1/count", data={"sample_id": "sample"}, files=[("files", ("a.png", photo, "image/png"))])
    assert stale.status_code == 200 and stale.json()["stored_sample"] is None
    asked = client.post("/v1/count", data={"sample_id": "S-4"}, headers={"X-CSRF-Token": "old"},
                        files=[("files", ("a.png", photo, "image/png"))])
    assert asked.status_code == 401  # asked to keep with a session that has ended: sign in again
    client.cookies.clear()
    ada = _sign_in(client, "ada")
    plain = client.post("/v1/count", data={"sample_id": "sample"}, files=[("files", ("a.png", photo, "image/png"))])
    assert plain.status_code == 200 and plain.json()["stored_sample"] is None
    keep = client.post("/v1/count", data={"sample_id": "S-4"}, headers=ada,
                       files=[("files", ("a.png", photo, "image/png"))])
    assert keep.status_code == 403  # an admin manages users; technicians and supervisors count
    assert [s["sample_id"] for s in client.get("/v1/samples").json()] == ["S-001"]


def test_a_settings_or_decision_body_with_a_field_that_does_not_fit_is_422(client):
    ada = _sign_in(client, "ada")
    for body in ({"wbc_target": 200, "extra": 1}, {"wbc_target": "200"}, {"wbc_target": True},
                 {"wbc_target": 200.5}):
        assert client.put("/v1/lab/settings", json=body, headers=ada).status_code == 422, body
    assert client.get("/v1/lab/settings").json() == {"wbc_target": 100}
    tia = _sign_in(client, "tia")
    sample = client.get("/v1/samples/S-001").json()
    cell = _white(sample)[0]["id"]
    for extra in ({"action": "confirm", "box": [1, 1, 5, 5]}, {"action": "move", "box": [1, 1, 5, 5],
                  "cell_class": "lymphocyte"}, {"action": "platelet", "cell_class": "lymphocyte"},
                  {"action": "confirm", "note": "hi"}):
        response = client.post("/v1/samples/S-001/decisions", headers=tia,
                               json={"cell_id": cell, "version": sample["version"], **extra})
        assert response.status_code == 422, extra
    assert client.get("/v1/samples/S-001").json()["version"] == sample["version"]
    fits = client.post("/v1/samples/S-001/decisions", headers=tia,
                       json={"cell_id": cell, "action": "confirm", "cell_class": None, "version": sample["version"]})
    assert fits.status_code == 200, fits.text


def test_a_photo_changed_on_disk_is_one_sentence_and_the_report_leaves_it_out(client, store_path):
    _sign_in(client, "tia")
    store = open_store(store_path)
    with store.session() as session:
        path = store.photos.path(find(session, "S-001").photos[0].sha256)
    store.close()
    path.write_bytes(smear_png(wbc=2, shade=40))  # a readable image, but not the photo that was counted
    photo = client.get("/v1/samples/S-001/photos/0")
    assert photo.status_code == 500 and "changed on disk" in photo.json()["message"]
    report = client.get("/v1/samples/S-001/report")
    assert report.status_code == 200 and "1 photo file of this sample could not be read" in report.text
    assert "photo folder; it is not shown" in report.text


def test_a_photo_the_detector_refuses_is_not_called_too_small(client, monkeypatch):
    def refuses(image, classifier=None):
        raise ImageError("the detector cannot use this photo")

    monkeypatch.setattr(client.app.state.service, "count_photo", refuses)
    response = client.post("/v1/kind", files=[("files", ("field.png", smear_png(wbc=2), "image/png"))])
    result = response.json()["results"][0]
    assert response.status_code == 200 and result["kind"] is None
    assert result["error"] == "field.png: the detector cannot use this photo"


class _Decodes:
    """read_image, slowed, counting its calls and the most running at once."""

    def __init__(self):
        self.running, self.most, self.calls, self.lock = 0, 0, 0, threading.Lock()

    def __call__(self, data):
        with self.lock:
            self.running, self.calls = self.running + 1, self.calls + 1
            self.most = max(self.most, self.running)
        time.sleep(0.2)
        with self.lock:
            self.running -= 1
        return read_image(data)


def _at_once(client, paths: list[str]) -> list[int]:
    statuses = []
    threads = [threading.Thread(target=lambda p=p: statuses.append(client.get(p).status_code)) for p in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_crops_and_reports_asked_at_once_decode_one_photo_at_a_time(client, monkeypatch):
    crops, reports = _Decodes(), _Decodes()
    monkeypatch.setattr(gallery_api, "read_image", crops)
    monkeypatch.setattr(store_report, "read_image", reports)
    _sign_in(client, "tia")
    cells = [c["id"] for c in client.get("/v1/samples/S-001").json()["cells"]][:4]
    assert _at_once(client, [f"/v1/samples/S-001/cells/{c}/crop" for c in cells]) == [200] * len(cells)
    assert (crops.most, crops.calls) == (1, 1)  # the others waited, then found it decoded
    assert _at_once(client, ["/v1/samples/S-001/report"] * 3) == [200] * 3
    assert (reports.most, reports.calls) == (1, 3)


def test_a_signed_in_page_counts_into_the_store_without_the_api_key(store_path, tiny_classifier):
    settings = ServiceSettings(store=str(store_path), detector="classical", api_key="lab-key-123")
    app = create_app(settings, classifier=tiny_classifier, access_log=io.StringIO())
    with TestClient(app, raise_server_exceptions=False, base_url="http://localhost") as client:
        photo = [("files", ("field.png", smear_png(wbc=1), "image/png"))]
        assert client.post("/v1/count", files=photo, data={"sample_id": "S-9"}).status_code == 401  # no key, no one
        tia = _sign_in(client, "tia")
        cookie_only = client.post("/v1/kind", files=photo)
        assert cookie_only.status_code == 401 and "API key" in cookie_only.json()["message"]  # a cookie alone: no
        wrong = client.post("/v1/kind", files=photo, headers={"X-CSRF-Token": "not-the-token"})
        assert wrong.status_code == 401
        assert client.post("/v1/kind", files=photo, headers=tia).status_code == 200
        counted = client.post("/v1/count", files=photo, data={"sample_id": "S-9"}, headers=tia)
        assert counted.status_code == 200, counted.text
        assert counted.json()["stored_sample"] == "S-9"
        assert client.get("/v1/samples/S-9").json()["counted_by"] == "tia"
        client.delete("/v1/session", headers=tia)  # the session ended: its token opens nothing
        assert client.post("/v1/kind", files=photo, headers=tia).status_code == 401

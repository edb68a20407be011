"""Samples and review over HTTP: one differential per sample, review items, /v1/review, exports, refusals."""

from __future__ import annotations

import base64
import csv
import io
import json
import zipfile
from collections import Counter

import pytest
from PIL import Image
from service_helpers import SERVICE_CLASSES, classical_counter, smear_png

from bloodcell.inference.predictor import DEFAULT_REFER_BELOW


@pytest.fixture()
def smear_client(make_client):
    return make_client(count_image=classical_counter)


def _count(client, *photos, sample_id="S-17"):
    files = [("files", (name, data, "image/png")) for name, data in photos]
    response = client.post("/v1/count", files=files, data={"sample_id": sample_id})
    assert response.status_code == 200, response.text
    return response.json()


def _review(client, review, photos=()):
    files = [("review", ("review.json", json.dumps(review), "application/json"))]
    files += [("files", (name, data, "image/png")) for name, data in photos]
    return client.post("/v1/review", files=files)


def test_count_gives_the_samples_differential_in_words_and_its_cells_for_review(smear_client):
    body = _count(smear_client, ("a.png", smear_png(wbc=2)))
    assert body["sample_id"] == "S-17" and body["refer_below"] == DEFAULT_REFER_BELOW
    assert body["classes"] == list(SERVICE_CLASSES)
    report = body["report"]
    assert report["sample_id"] == "S-17" and report["photos"] == 1 and report["reviewed"] is False
    assert [row["cell"] for row in report["counts"]] == ["Red cells", "White cells", "Platelets"]
    assert {row["type"] for row in report["differential"]} >= {"neutrophil", "lymphocyte", "monocyte"}
    assert all(row["flag"] in ("", "above the reference interval", "below the reference interval")
               for row in report["differential"])
    assert report["notes"][-1].startswith("Warning: only 2 white cells classified") and "`" not in report["trust"]
    photo = body["images"][0]
    assert photo["width"] == 640 and len(photo["photo_id"]) == 16
    review = body["review"]  # an untrained model is never 60 % sure: both white cells are referred
    assert [item["id"] for item in review] == [f"{photo['photo_id']}-{n}" for n in _wbc_numbers(photo)]
    item = review[0]
    assert item["filename"] == "a.png" and item["reason"].startswith("low confidence")
    assert len(item["top_k"]) == 3 and item["top_k"][0]["label"] == item["label"]
    assert Image.open(io.BytesIO(base64.b64decode(item["crop_png"]))).size[0] > 50
    assert report["referred"] == 2 and len(body["state"]["photos"]) == 1


def _wbc_numbers(photo):
    return [n for n, box in enumerate(photo["boxes"], start=1) if box["label"] == "WBC"]


def test_two_counts_of_a_sample_combine_and_a_review_recomputes_and_exports_it(smear_client):
    a, b = ("a.png", smear_png(wbc=2)), ("b.png", smear_png(wbc=1, shade=3))
    first, second = _count(smear_client, a), _count(smear_client, b)
    states = [first["state"], second["state"]]
    combined = _review(smear_client, {"sample_id": "S-17", "states": states, "reviewed": False}).json()
    assert combined["report"]["photos"] == 2 and combined["report"]["reviewed"] is False
    assert combined["report"]["referred"] == 3 and combined["cells_zip"] is None
    one, two, three = first["review"] + second["review"]
    review = {"sample_id": "S-17", "states": states,
              "corrections": [{"item": one["id"], "decision": "relabel", "label": "lymphocyte"},
                              {"item": two["id"], "decision": "accept"}, {"item": three["id"], "decision": "wrong"}],
              "missing": [{"photo_id": three["photo_id"], "box": [20, 380, 90, 450], "label": "eosinophil"}]}
    response = _review(smear_client, review, [b, a])  # any order: photos are matched by content
    assert response.status_code == 200, response.text
    body = response.json()
    report = body["report"]
    assert report["reviewed"] is True and report["referred"] == 0
    assert report["review_summary"].startswith("Reviewed by a person: 3 boxes decided (1 accepted, 1 given another "
                                               "class, 1 marked wrong); 1 missed cell added.")
    counts = {row["cell"]: row["count"] for row in report["counts"]}
    assert counts["White cells"] == 3  # 3 counted - 1 wrong + 1 added
    typed = {row["type"]: row["count"] for row in report["differential"]}
    assert typed["lymphocyte"] >= 1 and typed["eosinophil"] == 1
    rows = list(csv.DictReader(io.StringIO(body["corrections_csv"])))
    assert [r["decision"] for r in rows] == ["relabel", "accept", "wrong", "missing"]
    assert rows[0]["image"] == "a.png" and rows[0]["label"] == "lymphocyte" and rows[0]["model_label"] == one["label"]
    task = body["labelstudio"][0]
    assert task["data"]["image"] == "a.png" and task["annotations"][0]["result"][0]["type"] == "rectanglelabels"
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(body["cells_zip"])))
    names = sorted(archive.namelist())
    assert names == sorted([f"cells/lymphocyte/S-17_photo1_box{one['id'].split('-')[1]}.png",
                            f"cells/{two['label']}/S-17_photo1_box{two['id'].split('-')[1]}.png",
                            f"cells/eosinophil/S-17_photo2_box{len(second['images'][0]['boxes']) + 1}.png"])
    assert body["cells"] == dict(sorted(Counter(["lymphocyte", two["label"], "eosinophil"]).items()))
    assert all(Image.open(archive.open(name)).size[0] > 50 for name in names)


def test_review_without_the_photos_saves_the_corrections_and_says_why_there_are_no_cells(smear_client):
    first = _count(smear_client, ("a.png", smear_png(wbc=1)))
    item = first["review"][0]
    review = {"states": [first["state"]], "corrections": [{"item": item["id"], "decision": "accept"}]}
    body = _review(smear_client, review).json()
    assert body["report"]["reviewed"] is True and body["cells_zip"] is None
    assert body["cells_note"] == ("The reviewed cells of 1 photo(s) (a.png) could not be cut: send those photos "
                                  "with the review.")
    assert "/" not in json.dumps(body["report"])  # no path of the server anywhere in what people see


@pytest.mark.parametrize("change, status, message", [
    (lambda r, s: r.update(corrections=[{"item": "0123456789abcdef-1", "decision": "accept"}]), 422,
     "correction 1: no box '0123456789abcdef-1' in this sample"),
    (lambda r, s: r.update(corrections=[{"item": s["review"][0]["id"], "decision": "relabel", "label": "monocyte"}]),
     422, "'monocyte' is not a class the reviewer can give (one of basophil, eosinophil, lymphocyte, neutrophil, RBC"),
    (lambda r, s: r.update(states=[s["state"], s["state"]]), 422, "a.png: this photo is in the sample twice"),
    (lambda r, s: r.update(corrections=[{"item": "x", "decision": "maybe"}]), 422, "invalid review: corrections.0.decision"),
    (lambda r, s: r.pop("states"), 422, "invalid review: states: Field required"),
    (lambda r, s: r.update(missing=[{"photo_id": s["images"][0]["photo_id"], "box": [0, 0, 9000, 50], "label": "RBC"}]),
     422, "correction 1: the box 0,0,9000,50 is not on the 640x480 photo"),
])
def test_a_bad_review_is_refused_with_one_sentence(smear_client, change, status, message):
    counted = _count(smear_client, ("a.png", smear_png(wbc=1)))
    review = {"sample_id": "S-17", "states": [counted["state"]]}
    change(review, counted)
    response = _review(smear_client, review)
    assert response.status_code == status and message in response.json()["message"], response.text
    assert response.json()["error"] in ("invalid_review", "duplicate_photo")


def test_a_review_part_that_is_not_json_is_422(smear_client):
    response = smear_client.post("/v1/review", files=[("review", ("r.json", b"\x00not json", "application/json"))])
    assert response.status_code == 422 and response.json()["error"] == "invalid_review"


def test_the_same_photo_twice_in_one_count_is_counted_once(smear_client):
    photo = smear_png(wbc=1)
    body = _count(smear_client, ("a.png", photo), ("copy.png", photo))
    assert body["images"][1]["error"] == "copy.png: the same photo was sent twice in this request; it is counted once"
    assert body["report"]["photos"] == 1 and body["report"]["skipped"] == 1


def test_one_count_of_referred_cells_in_the_sample_and_the_report(smear_client):
    body = _count(smear_client, ("a.png", smear_png(wbc=2)), ("b.png", smear_png(wbc=1, shade=3)))
    assert body["sample"]["wbc_referred"] == body["report"]["referred"] == len(body["review"]) == 3

"""The sample store over HTTP: sign-in with a session cookie and CSRF token, the API key for machines (read and
export only), decisions kept across reloads, stale writes refused with 409, sign-off by a supervisor, exports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bloodcell.service.app import create_app
from bloodcell.service.settings import ServiceSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_helpers import PASSWORDS  # noqa: E402

KEY = "machine-key-for-tests"


@pytest.fixture()
def client_for(store_path, tiny_classifier):
    clients = []

    def make() -> TestClient:
        app = create_app(ServiceSettings(store=str(store_path), api_key=KEY), classifier=tiny_classifier)
        client = TestClient(app, raise_server_exceptions=False, base_url="http://localhost")  # an allowed host
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _sign_in(client: TestClient, name: str) -> str:
    response = client.post("/v1/session", json={"name": name, "password": PASSWORDS[name]})
    assert response.status_code == 200, response.text
    assert "httponly" in response.headers["set-cookie"].lower() and "samesite=strict" in response.headers["set-cookie"].lower()
    return response.json()["csrf_token"]


def _decide(client, csrf, cell_id, version, action="relabel", cell_class="lymphocyte"):
    return client.post("/v1/samples/S-001/decisions", headers={"X-CSRF-Token": csrf},
                       json={"cell_id": cell_id, "action": action, "version": version,
                             **({"cell_class": cell_class} if action == "relabel" else {})})


def test_a_wrong_password_or_no_sign_in_is_401_in_one_sentence(client_for):
    client = client_for()
    response = client.post("/v1/session", json={"name": "sam", "password": "guess"})
    assert response.status_code == 401 and response.json()["message"] == "wrong user name or password"
    response = client.get("/v1/samples")
    assert response.status_code == 401 and response.json()["message"] == "sign in (POST /v1/session) or send the API key"


def test_password_guessing_waits_a_growing_delay_per_name_and_per_client_across_processes(client_for, monkeypatch):
    from datetime import timedelta

    import bloodcell.store.sign_in_throttle as throttle

    now = [throttle.utcnow()]
    monkeypatch.setattr(throttle, "utcnow", lambda: now[0])
    client, other_process = client_for(), client_for()

    def sign_in(name, password, on=client):
        response = on.post("/v1/session", json={"name": name, "password": password})
        return response.status_code, response.json().get("message")

    for _ in range(5):
        assert sign_in("sam", "guess-password") == (401, "wrong user name or password")
        assert sign_in("nobody", "guess-password") == (401, "wrong user name or password")
    waiting = (429, "too many failed sign-ins with this user name or from this computer: try again in 30 seconds")
    assert sign_in("sam", PASSWORDS["sam"], other_process) == waiting  # the right password is not even checked
    assert sign_in("nobody", "guess-password") == waiting  # the same answer: no telling which names exist
    assert sign_in("tia", PASSWORDS["tia"])[0] == 200  # another name is not held up
    now[0] += timedelta(seconds=31)
    assert sign_in("sam", "guess-password") == (401, "wrong user name or password")
    assert sign_in("sam", PASSWORDS["sam"]) == (429, waiting[1].replace("30 seconds", "60 seconds"))  # doubled
    now[0] += timedelta(seconds=61)
    assert sign_in("sam", PASSWORDS["sam"])[0] == 200  # and the name's failures are forgotten
    assert sign_in("sam", "guess-password")[0] == 401
    for k in range(8):  # 20 failures from this client in all: any name waits, from here
        assert sign_in(f"guess-{k}", "guess-password")[0] == 401
    assert sign_in("tia", PASSWORDS["tia"]) == waiting
    now[0] += throttle.WINDOW + timedelta(seconds=1)
    assert sign_in("tia", PASSWORDS["tia"])[0] == 200


def test_decisions_are_kept_across_a_reload_and_a_stale_one_is_409(client_for):
    page = client_for()
    csrf = _sign_in(page, "tia")
    sample = page.get("/v1/samples/S-001").json()
    wbc = [c["id"] for c in sample["cells"] if c["label"] == "WBC"]
    first = _decide(page, csrf, wbc[0], sample["version"])
    assert first.status_code == 200 and first.json()["version"] == sample["version"] + 1
    reloaded = client_for()  # another service process on the same store, the same browser cookie
    reloaded.cookies.update(page.cookies)
    again = reloaded.get("/v1/samples/S-001").json()
    assert next(c for c in again["cells"] if c["id"] == wbc[0])["class"] == "lymphocyte"
    assert again["status"] == "in_review"
    stale = _decide(reloaded, csrf, wbc[1], sample["version"], cell_class="basophil")
    assert stale.status_code == 409 and "someone changed it since you read it" in stale.json()["message"]


def test_a_change_without_the_csrf_token_is_403(client_for):
    client = client_for()
    _sign_in(client, "tia")
    sample = client.get("/v1/samples/S-001").json()
    response = _decide(client, "forged", sample["cells"][3]["id"], sample["version"])
    assert response.status_code == 403 and "CSRF token" in response.json()["message"]


def test_the_api_key_reads_and_exports_but_never_decides(client_for):
    machine = client_for()
    assert machine.get("/v1/samples", headers={"X-API-Key": KEY}).json()[0]["sample_id"] == "S-001"
    assert machine.get("/v1/samples", headers={"X-API-Key": "wrong"}).status_code == 401
    export = machine.get("/v1/samples/S-001/export?format=fhir", headers={"X-API-Key": KEY})
    assert export.status_code == 200 and export.headers["content-type"].startswith("application/fhir+json")
    assert export.json()["entry"][0]["resource"]["status"] == "preliminary"
    response = machine.post("/v1/samples/S-001/decisions", headers={"X-API-Key": KEY},
                            json={"cell_id": 1, "action": "confirm", "version": 1})
    assert response.status_code == 401 and "signed-in person" in response.json()["message"]


def test_sign_off_needs_a_supervisor_and_makes_the_sample_read_only(client_for):
    client = client_for()
    csrf = _sign_in(client, "tia")
    sample = client.get("/v1/samples/S-001").json()
    response = client.post("/v1/samples/S-001/sign", headers={"X-CSRF-Token": csrf}, json={"version": sample["version"]})
    assert response.status_code == 403 and response.json()["message"].startswith("tia is a technician")
    supervisor = client_for()
    csrf = _sign_in(supervisor, "sam")
    response = supervisor.post("/v1/samples/S-001/sign", headers={"X-CSRF-Token": csrf},
                               json={"version": sample["version"]})
    assert response.status_code == 409 and "only a reviewed sample can be signed" in response.json()["message"]
    tech_csrf = _sign_in(client, "tia")
    referred = [c["id"] for c in sample["cells"] if c["referral_reason"]]
    response = client.post("/v1/samples/S-001/finish", headers={"X-CSRF-Token": tech_csrf},
                           json={"version": sample["version"]})
    assert response.status_code == 409 and response.json()["message"] == (
        f"sample 'S-001' has 1 referred or doubtful cell with no decision yet (cell {referred[0]}): confirm, "
        "relabel or remove it before finishing its review")
    response = supervisor.post("/v1/samples/S-001/sign", headers={"X-CSRF-Token": csrf},
                               json={"version": sample["version"]})
    assert response.status_code == 409 and "only a reviewed sample can be signed" in response.json()["message"]
    decided = _decide(client, tech_csrf, referred[0], sample["version"], action="confirm")
    assert decided.status_code == 200 and decided.json()["status"] == "in_review"
    response = client.post("/v1/samples/S-001/finish", headers={"X-CSRF-Token": tech_csrf},
                           json={"version": decided.json()["version"]})
    assert response.status_code == 200 and response.json()["status"] == "reviewed"
    version = response.json()["version"]
    response = supervisor.post("/v1/samples/S-001/sign", headers={"X-CSRF-Token": csrf}, json={"version": version})
    assert response.status_code == 200 and response.json()["status"] == "signed"
    cell = supervisor.get("/v1/samples/S-001").json()["cells"][3]["id"]
    response = _decide(supervisor, csrf, cell, version + 1)
    assert response.status_code == 409 and "is signed" in response.json()["message"]
    fhir = supervisor.get("/v1/samples/S-001/export?format=fhir").json()
    assert fhir["entry"][0]["resource"]["status"] == "final"
    response = supervisor.post("/v1/samples/S-001/reopen", headers={"X-CSRF-Token": csrf},
                               json={"version": version + 1, "reason": "a second look at the monocytes"})
    assert response.status_code == 200 and response.json()["status"] == "in_review"
    audit = supervisor.get("/v1/samples/S-001/audit").json()
    assert [(e["actor"], e["action"]) for e in audit] == [("tia", "count"), ("tia", "decision"), ("tia", "review_done"),
                                                          ("sam", "sign"), ("sam", "reopen")]
    assert audit[-1]["after"]["reason"] == "a second look at the monocytes"


def test_a_missed_cell_is_added_and_counted(client_for):
    client = client_for()
    csrf = _sign_in(client, "tia")
    before = client.get("/v1/samples/S-001").json()
    response = client.post("/v1/samples/S-001/cells", headers={"X-CSRF-Token": csrf},
                           json={"version": before["version"], "photo": 0, "box": [90, 60, 110, 80], "label": "WBC",
                                 "cell_class": "eosinophil"})
    assert response.status_code == 200, response.text
    after = response.json()
    assert after["wbc_types"]["eosinophil"] == 1 and after["counts"]["WBC"] == before["counts"]["WBC"] + 1
    assert after["cells"][-1]["origin"] == "reviewer" and after["cells"][-1]["box"] == [90, 60, 110, 80]
    response = client.post("/v1/samples/S-001/cells", headers={"X-CSRF-Token": csrf},
                           json={"version": after["version"], "photo": 7, "box": [1, 1, 5, 5], "label": "Platelets"})
    assert response.status_code == 404 and response.json()["message"] == "sample 'S-001' has no photo 7"


def test_signing_out_ends_the_session(client_for):
    client = client_for()
    csrf = _sign_in(client, "tia")
    token = client.cookies.get("bloodcell_session")
    assert client.delete("/v1/session", headers={"X-CSRF-Token": csrf}).status_code == 204
    client.cookies.set("bloodcell_session", token)
    response = client.get("/v1/samples")
    assert response.status_code == 401 and "not signed in" in response.json()["message"]


def test_an_unknown_sample_is_404(client_for):
    client = client_for()
    _sign_in(client, "tia")
    response = client.get("/v1/samples/NOPE")
    assert response.status_code == 404 and response.json()["message"] == "no sample 'NOPE' in the store"


def test_a_reloaded_page_reads_its_session_the_photos_and_each_cells_last_decision(client_for):
    page = client_for()
    assert page.get("/v1/session").status_code == 401
    csrf = _sign_in(page, "tia")
    again = page.get("/v1/session").json()
    assert again == {"name": "tia", "role": "technician", "csrf_token": csrf}
    sample = page.get("/v1/samples/S-001").json()
    assert sample["counted_by"] == "tia" and sample["classes"] and all(c["decision"] is None for c in sample["cells"])
    wbc = next(c["id"] for c in sample["cells"] if c["label"] == "WBC")
    decided = _decide(page, csrf, wbc, sample["version"], action="confirm").json()
    assert next(c for c in decided["cells"] if c["id"] == wbc)["decision"]["action"] == "confirm"
    assert page.get("/v1/samples").json()[0]["counted_by"] == "tia"
    photo = page.get("/v1/samples/S-001/photos/0")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/png" and photo.content[:4] == b"\x89PNG"
    assert page.get("/v1/samples/S-001/photos/1").status_code == 404
    assert client_for().get("/v1/samples/S-001/photos/0").status_code == 401

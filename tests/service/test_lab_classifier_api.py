"""Using a lab's adapted classifier (issue 26 item 4): a supervisor or admin, with the CSRF token, chooses a model
one of the lab's finished adapting jobs wrote, and the service's counts are then typed with it (the kept sample
records it), until they switch back to the service's own model; a model changed on disk is refused in one
sentence, never used; roles, CSRF and the API key are checked; every choice is audited."""

from __future__ import annotations

from pathlib import Path

from service_helpers import smear_png
from test_bank_api import KEY, _sign_in, adapted_by_sam, client_for  # noqa: F401


def _choose(client, csrf, model, lab=""):
    return client.post("/v1/lab/classifier", headers={"X-CSRF-Token": csrf} if csrf else {},
                       json={"lab": lab, "model": model})


def _count(client, csrf, sample_id, shade):
    return client.post("/v1/count", data={"sample_id": sample_id}, headers={"X-CSRF-Token": csrf, "X-API-Key": KEY},
                       files=[("files", ("a.png", smear_png(wbc=1, shade=shade), "image/png"))])


def test_the_labs_counts_use_the_chosen_adapted_model_until_switched_back(client_for, store_path, tmp_path):
    from bloodcell.store.database import open_store
    from bloodcell.store.models import AuditEntry

    client, job, _ = adapted_by_sam(client_for, store_path, tmp_path)
    service_model = Path(client.app.state.service.classifier.source).name
    status = client.get("/v1/lab/adaptation?lab=").json()
    assert status["classifier"] is None and status["service_model"] == Path(service_model).stem
    tia = _sign_in(client, "tia")
    assert _choose(client, tia, job["model"]).status_code == 403  # a technician may not
    sam = _sign_in(client, "sam")
    assert _choose(client, "forged", job["model"]).status_code == 403
    machine = client_for()
    assert _choose(machine, None, job["model"]).status_code == 401
    assert client.post("/v1/lab/classifier", headers={"X-API-Key": KEY, "X-CSRF-Token": sam},
                       json={"lab": "", "model": job["model"], "extra": 1}).status_code == 422
    unknown = _choose(client, sam, "../../etc/passwd")
    assert unknown.status_code == 404 and "is not a model adapted for this lab" in unknown.json()["message"]
    assert _choose(client, sam, job["model"], lab="north").status_code == 404  # another lab's model

    chosen = _choose(client, sam, job["model"])
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["classifier"]["model"] == job["model"] and chosen.json()["classifier"]["by"] == "sam"
    assert client.get("/v1/lab/adaptation?lab=").json()["classifier"]["sha256"] == job["model_sha256"]
    assert client.get("/health").json()["count_model"] == Path(job["model"]).stem
    tia = _sign_in(client, "tia")
    counted = _count(client, tia, "A-1", 1)
    assert counted.status_code == 200, counted.text
    assert client.get("/v1/samples/A-1").json()["classifier"] == {"name": job["model"], "sha256": job["model_sha256"]}

    sam = _sign_in(client, "sam")
    back = _choose(client, sam, None)
    assert back.status_code == 200 and back.json()["classifier"] is None
    assert "count_model" not in client.get("/health").json()
    counted = _count(client, _sign_in(client, "tia"), "A-2", 2)
    assert counted.status_code == 200
    assert client.get("/v1/samples/A-2").json()["classifier"]["name"] == service_model

    store = open_store(store_path)
    with store.session() as session:
        uses = session.query(AuditEntry).filter(AuditEntry.action == "use_classifier").order_by(AuditEntry.id).all()
        assert [(e.actor, e.after["classifier"] and e.after["classifier"]["model"]) for e in uses] == [
            ("sam", job["model"]), ("sam", None)]
    store.close()
    trail = client.get("/v1/lab/audit?lab=").json()  # the lab's own trail over HTTP, oldest first
    assert [(e["actor"], e["action"]) for e in trail] == [
        ("sam", "adapt_started"), ("sam", "adapt_done"), ("sam", "use_classifier"), ("sam", "use_classifier")]
    assert trail[1]["after"]["model"] == job["model"] and trail[2]["after"]["classifier"]["by"] == "sam"
    assert client.get("/v1/lab/audit?lab=north").json() == []
    assert client_for().get("/v1/lab/audit?lab=").status_code == 401  # neither signed in nor the API key


def test_a_chosen_model_changed_on_disk_is_refused_never_used(client_for, store_path, tmp_path):
    client, job, _ = adapted_by_sam(client_for, store_path, tmp_path)
    sam = _sign_in(client, "sam")
    assert _choose(client, sam, job["model"]).status_code == 200
    path = tmp_path / "models" / job["model"]
    path.write_bytes(path.read_bytes()[:-1] + b" ")
    restarted = client_for()  # a new server: nothing loaded yet
    refused = _count(restarted, _sign_in(restarted, "tia"), "A-3", 3)
    assert refused.status_code == 409 and "was changed in the models folder" in refused.json()["message"]
    assert restarted.get("/v1/samples/A-3").status_code == 404
    again = _choose(restarted, _sign_in(restarted, "sam"), job["model"])
    assert again.status_code == 409
    assert _choose(restarted, _sign_in(restarted, "ada"), None).status_code == 200  # an admin switches back
    assert _count(restarted, _sign_in(restarted, "tia"), "A-3", 3).status_code == 200


def test_a_loaded_model_changed_on_disk_is_refused_by_the_running_server_and_let_go_when_unused(client_for,
                                                                                                store_path, tmp_path):
    import os

    client, job, _ = adapted_by_sam(client_for, store_path, tmp_path)
    models = client.app.state.service.lab_models
    assert _choose(client, _sign_in(client, "sam"), job["model"]).status_code == 200
    assert _count(client, _sign_in(client, "tia"), "A-5", 1).status_code == 200  # loaded and kept by this server
    assert len(models._loaded) == 1
    assert _choose(client, _sign_in(client, "sam"), None).status_code == 200
    assert models._loaded == {}  # no lab counts with it any more: let go

    assert _choose(client, _sign_in(client, "sam"), job["model"]).status_code == 200
    tia = _sign_in(client, "tia")
    assert _count(client, tia, "A-6", 2).status_code == 200
    path = tmp_path / "models" / job["model"]
    stat = path.stat()
    path.write_bytes(path.read_bytes()[:-1] + b" ")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    refused = _count(client, tia, "A-7", 3)  # the same running server, the model already loaded
    assert refused.status_code == 409 and "was changed in the models folder" in refused.json()["message"]
    assert models._loaded == {} and client.get("/v1/samples/A-7").status_code == 404


def test_a_named_labs_counts_use_its_own_choice_and_other_labs_keep_theirs(client_for, store_path, tmp_path):
    import shutil

    from bloodcell.store.adapt_jobs import finish_job, start_job
    from bloodcell.store.database import open_store
    from bloodcell.store.users import Person

    client, job, _ = adapted_by_sam(client_for, store_path, tmp_path)
    north = tmp_path / "models" / "north-adapted.safetensors"
    shutil.copyfile(tmp_path / "models" / job["model"], north)  # as if adapted from lab north's bank
    store = open_store(store_path)
    started = start_job(store, "north", Person("sam", "supervisor"), north.name)
    finish_job(store, started.id, message="done", figures={"cells": {}}, sha256=job["model_sha256"])
    store.close()
    assert _choose(client, _sign_in(client, "sam"), north.name, lab="north").status_code == 200

    tia = _sign_in(client, "tia")
    counted = client.post("/v1/count", data={"sample_id": "N-1", "lab": " north "},
                          headers={"X-CSRF-Token": tia, "X-API-Key": KEY},
                          files=[("files", ("a.png", smear_png(wbc=1, shade=4), "image/png"))])
    assert counted.status_code == 200, counted.text
    kept = client.get("/v1/samples/N-1").json()
    assert kept["lab"] == "north" and kept["classifier"]["name"] == north.name

    def add_to_n1(lab=None):
        fields = {"sample_id": "N-1", "add_to_sample": "true", **({"lab": lab} if lab is not None else {})}
        return client.post("/v1/count", data=fields, headers={"X-CSRF-Token": tia, "X-API-Key": KEY},
                           files=[("files", ("b.png", smear_png(wbc=1, shade=6), "image/png"))])

    added = add_to_n1()  # without repeating the lab: typed with the kept sample's lab's model
    assert added.status_code == 200, added.text
    assert len(client.get("/v1/samples/N-1").json()["photos"]) == 2
    other = add_to_n1("south")
    assert other.status_code == 409 and "kept under lab 'north'" in other.json()["message"]
    assert _count(client, tia, "A-4", 5).status_code == 200  # the samples without a lab name: the service's model
    assert client.get("/v1/samples/A-4").json()["classifier"]["name"] == Path(client.app.state.service.classifier.source).name
    assert client.post("/v1/count", data={"lab": "x" * 201}, headers={"X-API-Key": KEY},
                       files=[("files", ("a.png", smear_png(wbc=1), "image/png"))]).status_code == 422


def test_every_lab_field_naming_a_lab_anew_refuses_a_name_the_rule_refuses_with_its_sentence(client_for, tmp_path):
    """One rule (smear/lab_name.py) for the fields that name a lab anew (a count's `lab`, starting an adapting job,
    choosing a lab's classifier): a name whose audit target would not fit the store's column on PostgreSQL, or with
    a control character, a line separator, is a 422 with the rule, and nothing is started."""
    from bloodcell.smear.lab_name import MAX_LAB

    client = client_for()
    sam = _sign_in(client, "sam")
    for lab in ("x" * (MAX_LAB + 1), "north\nsouth", "tab\there", "nul\x00here", "line\u2028here"):
        answers = [
            client.post("/v1/lab/adaptation", headers={"X-CSRF-Token": sam}, json={"lab": lab}),
            _choose(client, sam, None, lab=lab),
            client.post("/v1/count", data={"lab": lab}, headers={"X-API-Key": KEY},
                        files=[("files", ("a.png", smear_png(wbc=1), "image/png"))]),
        ]
        for answer in answers:
            assert answer.status_code == 422, answer.text
            message = answer.json()["message"]
            assert f"cannot be used: use at most {MAX_LAB} characters, none of them a control" in message and "\n" not in message
    assert client.get("/v1/lab/adaptation?lab=").json()["job"] is None
    assert client.get("/v1/lab/audit", params={"lab": " north "}).status_code == 200  # spaces around it dropped
    assert client.get("/v1/lab/adaptation", params={"lab": "x" * MAX_LAB}).status_code == 200


def test_a_lab_named_before_the_rule_is_still_shown_its_bank_and_its_trail(client_for, store_path, tmp_path):
    """A store holding a 200-character lab name (accepted before the rule): the sample page's cell bank and the
    lab's trail answer it (nothing can start a job under it: why_not says so); a name no store holds is a 422, and a
    NUL, which PostgreSQL cannot hold, is no such lab rather than a driver error."""
    import hashlib

    from sqlalchemy import update

    from bloodcell.store.audit import record
    from bloodcell.store.database import open_store
    from bloodcell.store.models import Sample
    from bloodcell.store.samples import record_count

    from store_helpers import counted_doc

    old = "Laboratoire " + "x" * 188
    kept = open_store(store_path)
    with kept.session() as session:
        record_count(session, kept.photos, counted_doc(tmp_path / "photos", "O-1"), "tia", lab="placeholder")
        session.flush()
        session.execute(update(Sample).where(Sample.sample_id == "O-1").values(lab=old))
    kept.close()
    client = client_for()
    _sign_in(client, "sam")
    assert client.get("/v1/samples/O-1").json()["lab"] == old
    bank = client.get("/v1/lab/adaptation", params={"lab": old})
    assert bank.status_code == 200, bank.text
    assert bank.json()["lab"] == old and bank.json()["job"] is None and bank.json()["can_adapt"] is False
    assert "cannot be used: use at most 196 characters" in bank.json()["why_not"]
    audit = client.get("/v1/lab/audit", params={"lab": f" {old} "})
    assert audit.status_code == 200 and audit.json() == []
    kept = open_store(store_path)  # an entry audited before the rule, under the name's SHA-256 stand-in
    with kept.session() as session:
        record(session, "sam", "adapt_started", f"lab-sha256:{hashlib.sha256(old.encode()).hexdigest()}", None,
               {"job": 7})
    kept.close()
    audit = client.get("/v1/lab/audit", params={"lab": old})
    assert [(e["actor"], e["action"], e["after"]) for e in audit.json()] == [("sam", "adapt_started", {"job": 7})]
    for lab in ("nul\x00here", "tab\there"):
        assert client.get("/v1/lab/adaptation", params={"lab": lab}).json()["counts"]["neutrophil"] == 0
        assert client.get("/v1/lab/audit", params={"lab": lab}).json() == []
    for path in ("/v1/lab/adaptation", "/v1/lab/audit"):
        refused = client.get(path, params={"lab": "x" * 201})
        assert refused.status_code == 422 and "a lab's name in the store has at most 200 characters" in \
            refused.json()["message"]

"""A lab's adapting jobs in the store (issue 26 item 4): one running per lab across processes (two engines on one
database, as two servers), a job whose server stopped is failed once its heartbeat is stale and never shown running
forever, a live heartbeat keeps it running, and every start, end and failure is audited; the classifier each lab
counts with is chosen among its finished jobs' models and switched back, audited."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from bloodcell.errors import ConfigError
from bloodcell.smear.lab_name import MAX_LAB
from bloodcell.store.adapt_jobs import STOPPED, beat, finish_job, job_state, latest_job, start_job
from bloodcell.store.audit import lab_trail
from bloodcell.store.database import open_store
from bloodcell.store.errors import ConflictError, NotFoundError, RoleError
from bloodcell.store.lab_classifiers import adapted_model, lab_classifier, use_classifier
from bloodcell.store.models import AdaptationJob, AuditEntry, Sample, utcnow


def _lab_audit(store, lab: str) -> list[AuditEntry]:
    with store.session() as session:
        return lab_trail(session, lab)


def test_one_running_job_per_lab_holds_across_two_servers_of_one_database(store_spec, store, people):
    other = open_store(store_spec)  # a second process's engine and connections
    try:
        results, barrier = [], threading.Barrier(4)

        def start(on, name, model):
            barrier.wait()
            try:
                results.append(start_job(on, "north", people[name], model).id)
            except ConflictError as exc:
                results.append(str(exc))

        threads = [threading.Thread(target=start, args=(on, name, f"m{k}.safetensors"))
                   for k, (on, name) in enumerate([(store, "sam"), (other, "ada"), (store, "ada"), (other, "sam")])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        started = [r for r in results if isinstance(r, int)]
        refused = [r for r in results if isinstance(r, str)]
        assert len(started) == 1 and len(refused) == 3, results
        assert all(r.endswith("wait for that job to finish") and "started adapting this lab's classifier at" in r
                   for r in refused)
        assert start_job(other, "south", people["sam"], "s.safetensors").status == "running"  # another lab may
        finish_job(store, started[0], message="the stored photo of cell 3 was changed on disk")
        again = start_job(other, "north", people["sam"], "n2.safetensors")  # a finished job frees its lab
        assert again.status == "running" and again.running_lab == "north"
    finally:
        other.close()
    with pytest.raises(RoleError):
        start_job(store, "east", people["tia"], "t.safetensors")


def test_a_job_whose_server_stopped_is_failed_and_audited_and_a_beating_one_runs_on(store, people):
    job = start_job(store, "north", people["sam"], "north-adapted.safetensors")
    live = start_job(store, "south", people["ada"], "south-adapted.safetensors")
    with store.session() as session:  # the server of "north" stopped 2 minutes ago; "south"'s beat just now
        session.execute(update(AdaptationJob).values(heartbeat_at=utcnow() - timedelta(seconds=120)))
    beat(store, live.id)
    with store.session() as session:
        stopped, running = latest_job(session, "north"), latest_job(session, "south")
        assert job_state(stopped)["state"] == "failed" and stopped.message == STOPPED and stopped.running_lab is None
        assert running.status == "running"
    assert start_job(store, "north", people["ada"], "north-2.safetensors").status == "running"
    failed = [e for e in _lab_audit(store, "north") if e.action == "adapt_failed"]
    assert len(failed) == 1 and failed[0].actor == "bloodcell service"
    assert failed[0].after["message"] == STOPPED and failed[0].after["by"] == "sam" and failed[0].at is not None
    late = finish_job(store, job.id, message="done", figures={"cv_accuracy": 0.9}, sha256="ab" * 32)
    with store.session() as session:  # the stopped job's late ending does not overwrite what was recorded
        kept = session.get(AdaptationJob, job.id)
        assert late is None and kept.status == "failed" and kept.message == STOPPED and kept.model_sha256 is None
        assert latest_job(session, "north").status == "running"  # the newer job is untouched
    assert [e.action for e in _lab_audit(store, "north")].count("adapt_done") == 0
    finish_job(store, live.id, message="too few cells")
    ended = [e for e in _lab_audit(store, "south") if e.action == "adapt_failed"]
    assert len(ended) == 1 and ended[0].actor == "ada" and ended[0].after["message"] == "too few cells"
    assert [e.action for e in _lab_audit(store, "south")] == ["adapt_started", "adapt_failed"]


def test_a_lab_counts_with_a_model_of_its_finished_jobs_and_switches_back_audited(store, people):
    job = start_job(store, "north", people["sam"], "north-adapted.safetensors")
    with store.session() as session, pytest.raises(NotFoundError):
        adapted_model(session, "north", "north-adapted.safetensors")  # still running: not a model yet
    finish_job(store, job.id, message="done", figures={"cv_accuracy": 0.9}, sha256="ab" * 32)
    with store.session() as session:
        with pytest.raises(NotFoundError):
            adapted_model(session, "south", "north-adapted.safetensors")  # another lab's model
        assert adapted_model(session, "north", "north-adapted.safetensors").model_sha256 == "ab" * 32
        with pytest.raises(RoleError):
            use_classifier(session, "north", ("north-adapted.safetensors", "ab" * 32), people["tia"])
    with store.session() as session:
        chosen = use_classifier(session, "north", ("north-adapted.safetensors", "ab" * 32), people["sam"])
    assert chosen["model"] == "north-adapted.safetensors" and chosen["by"] == "sam"
    with store.session() as session:
        assert lab_classifier(session, "north").model_sha256 == "ab" * 32 and lab_classifier(session, "") is None
        assert use_classifier(session, "north", None, people["ada"]) is None
    with store.session() as session:
        assert lab_classifier(session, "north") is None
    uses = [e for e in _lab_audit(store, "north") if e.action == "use_classifier"]
    assert [(e.actor, e.before["classifier"] and e.before["classifier"]["model"],
             e.after["classifier"] and e.after["classifier"]["model"]) for e in uses] == [
        ("sam", None, "north-adapted.safetensors"), ("ada", "north-adapted.safetensors", None)]


def test_samples_lab_audit_prints_the_labs_own_trail(store, store_spec, people):
    import json

    from typer.testing import CliRunner

    from bloodcell.cli.main import app

    job = start_job(store, "north", people["sam"], "north-adapted.safetensors")
    finish_job(store, job.id, message="done", figures={"cv_accuracy": 0.9}, sha256="ab" * 32)
    start_job(store, "south", people["ada"], "south-adapted.safetensors")
    result = CliRunner().invoke(app, ["samples", "lab-audit", "north", "--store", store_spec, "--format", "json"])
    assert result.exit_code == 0, result.output
    entries = json.loads(result.output)
    assert [(e["actor"], e["action"], e["target"]) for e in entries] == [
        ("sam", "adapt_started", "lab:north"), ("sam", "adapt_done", "lab:north")]
    table = CliRunner().invoke(app, ["samples", "lab-audit", "south", "--store", store_spec])
    assert table.exit_code == 0 and "\tada\tadapt_started\tlab:south\t" in table.output
    empty = CliRunner().invoke(app, ["samples", "lab-audit", "west", "--store", store_spec])
    assert empty.exit_code == 0 and empty.output.startswith("nothing recorded for lab 'west' yet")


def test_a_stopped_job_and_its_late_ending_end_it_once_whichever_comes_first(store, people):
    from bloodcell.store import adapt_jobs

    job = start_job(store, "north", people["sam"], "north-adapted.safetensors")
    with store.session() as session:
        session.execute(update(AdaptationJob).values(heartbeat_at=utcnow() - timedelta(seconds=120)))
    assert finish_job(store, job.id, message="done", figures={"cv_accuracy": 0.9}, sha256="ab" * 32) is not None
    with store.session() as session:  # a stale heartbeat read after the job ended: left as it ended
        session.execute(update(AdaptationJob).values(running_lab="north"))
        adapt_jobs.fail_stopped(session, "north", stale_s=0)
    with store.session() as session:
        assert session.get(AdaptationJob, job.id).status == "done"
    assert [e.action for e in _lab_audit(store, "north")] == ["adapt_started", "adapt_done"]

    long_lab = "x" * MAX_LAB  # as long as a lab name may be: its trail is its own
    other = "x" * (MAX_LAB - 1) + "y"
    for lab in (long_lab, other):
        start_job(store, lab, people["sam"], f"{lab[-1]}.safetensors")
    with store.session() as session:
        assert [len(lab_trail(session, lab)) for lab in (long_lab, other)] == [1, 1]


@pytest.mark.parametrize("lab", ["x" * (MAX_LAB + 1), "é" * (MAX_LAB + 3), "north\tlab", "north\nsouth", "a\x00b",
                                 "north\u2028south"])
def test_a_lab_name_the_rule_refuses_reaches_no_column_of_the_store(store, people, tmp_path, lab):
    """On PostgreSQL a name whose audit target ('lab:' and the name) is over 200 characters failed the insert."""
    from store_helpers import counted_doc

    from bloodcell.store.samples import record_count

    with pytest.raises(ConfigError, match=r"^the lab name .* cannot be used: use at most 196 characters, none of them a control"):
        start_job(store, lab, people["sam"], "m.safetensors")
    with pytest.raises(ConfigError, match="cannot be used"), store.session() as session:
        use_classifier(session, lab, None, people["sam"])
    with pytest.raises(ConfigError, match="cannot be used"), store.session() as session:
        record_count(session, store.photos, counted_doc(tmp_path / "photos", "L-1"), "tia", lab=lab)
    with store.session() as session:
        assert session.query(AdaptationJob).count() == 0 and session.query(Sample).count() == 0
        assert not [e for e in session.query(AuditEntry) if e.target.startswith(("lab", "sample"))]


@pytest.mark.parametrize("lab", ["Лаб " + "x" * (MAX_LAB - 4), "آزمایشگاه می\u200cخواهم", "Labo\u00a0Saint-Louis",
                                 "Labo\u202f: nord"])
def test_a_lab_name_the_rule_allows_is_kept_as_written_in_every_column_it_reaches(store, people, tmp_path, lab):
    """The longest name fits; a no-break space or a zero-width non-joiner, once refused as "control characters"
    (str.isprintable), is part of real names and kept."""
    from store_helpers import counted_doc

    from bloodcell.store.samples import find, record_count

    job = start_job(store, lab, people["sam"], "m.safetensors")
    finish_job(store, job.id, message="done", figures={"cv_accuracy": 0.9}, sha256="ab" * 32)
    with store.session() as session:
        use_classifier(session, lab, ("m.safetensors", "ab" * 32), people["sam"])
        record_count(session, store.photos, counted_doc(tmp_path / "photos", "L-1"), "tia", lab=lab)
    with store.session() as session:
        assert find(session, "L-1").lab == lab and lab_classifier(session, lab).model_name == "m.safetensors"
        assert [e.action for e in lab_trail(session, lab)] == ["adapt_started", "adapt_done", "use_classifier"]
        assert {e.target for e in lab_trail(session, lab)} == {f"lab:{lab}"}


OLD_LAB = "Laboratoire " + "x" * 188  # 200 characters: accepted before the lab-name rule, kept in existing stores


def _kept_before_the_rule(store, tmp_path, silent_s: float = 0) -> int:
    """A sample and a running adapting job of :data:`OLD_LAB`, written as the store held them before the rule
    (directly: the rule refuses the name now); the job's server last beat ``silent_s`` seconds ago."""
    from store_helpers import counted_doc

    from bloodcell.store.samples import record_count

    with store.session() as session:
        record_count(session, store.photos, counted_doc(tmp_path / "photos", "O-1"), "tia", lab="placeholder")
        session.flush()
        session.execute(update(Sample).where(Sample.sample_id == "O-1").values(lab=OLD_LAB))
        then = utcnow() - timedelta(seconds=silent_s)
        job = AdaptationJob(lab=OLD_LAB, running_lab=OLD_LAB, started_by="sam", started_at=then, heartbeat_at=then,
                            status="running", model_name="old.safetensors")
        session.add(job)
        session.flush()
        return job.id


def test_a_lab_name_kept_before_the_rule_is_still_read_and_its_jobs_end_audited(store, people, tmp_path):
    """Listing, the bank, the lab's trail and ending its existing jobs accept any name the store holds; only what
    names it anew (a job started, a classifier chosen, a sample counted under it) follows the rule."""
    from store_helpers import counted_doc

    from bloodcell.store.cell_bank import bank_summary
    from bloodcell.store.samples import find, record_count

    assert len(OLD_LAB) == 200
    job = _kept_before_the_rule(store, tmp_path)
    ended = finish_job(store, job, message="done", figures={"cv_accuracy": 0.9}, sha256="ab" * 32)
    assert ended is not None and ended.status == "done"
    with store.session() as session:
        assert find(session, "O-1").lab == OLD_LAB
        assert bank_summary(session, OLD_LAB, ["neutrophil"])["counts"] == {"neutrophil": 0}
        assert latest_job(session, OLD_LAB).id == job and lab_classifier(session, OLD_LAB) is None
        assert [(e.actor, e.action) for e in lab_trail(session, OLD_LAB)] == [("sam", "adapt_done")]
    with pytest.raises(ConfigError, match="cannot be used"):
        start_job(store, OLD_LAB, people["sam"], "m.safetensors")
    with pytest.raises(ConfigError, match="cannot be used"), store.session() as session:
        use_classifier(session, OLD_LAB, None, people["sam"])
    with pytest.raises(ConfigError, match="cannot be used"), store.session() as session:
        record_count(session, store.photos, counted_doc(tmp_path / "photos", "O-2"), "tia", lab=OLD_LAB)


def test_a_stopped_job_of_a_lab_named_before_the_rule_is_failed_audited(store, people, tmp_path):
    job = _kept_before_the_rule(store, tmp_path, silent_s=120)
    with store.session() as session:
        stopped = latest_job(session, OLD_LAB)
        assert stopped.id == job and stopped.status == "failed" and stopped.message == STOPPED
    with store.session() as session:
        assert [(e.actor, e.action) for e in lab_trail(session, OLD_LAB)] == [("bloodcell service", "adapt_failed")]


def test_a_name_with_nul_is_no_lab_the_store_holds_rather_than_a_driver_error(store, people):
    """PostgreSQL's driver refuses a NUL in a query: a lookup by such a name finds nothing, on either database."""
    from bloodcell.store.cell_bank import bank_summary

    with store.session() as session:
        assert lab_trail(session, "a\x00b") == [] and latest_job(session, "a\x00b") is None
        assert lab_classifier(session, "a\x00b") is None
        assert bank_summary(session, "a\x00b", ["neutrophil"])["counts"] == {"neutrophil": 0}


def test_a_labs_trail_holds_its_entries_written_under_the_old_sha256_stand_in(store, store_spec, people):
    """Before the rule a name too long for "lab:NAME" to fit the column was audited as "lab-sha256:<its SHA-256>":
    samples lab-audit (and GET /v1/lab/audit, by the same lab_trail) still list those entries as the lab's."""
    import hashlib
    import json

    from typer.testing import CliRunner

    from bloodcell.cli.main import app
    from bloodcell.store.audit import record

    stand_in = f"lab-sha256:{hashlib.sha256(OLD_LAB.encode()).hexdigest()}"
    other = f"lab-sha256:{hashlib.sha256(OLD_LAB[:-1].encode()).hexdigest()}"
    with store.session() as session:
        record(session, "sam", "adapt_started", stand_in, None, {"job": 1})
        record(session, "sam", "adapt_started", other, None, {"job": 2})  # another long name's: not this lab's
        record(session, "ada", "use_classifier", stand_in, {"classifier": None}, {"classifier": None})
    with store.session() as session:
        assert [(e.actor, e.action, e.target) for e in lab_trail(session, OLD_LAB)] == [
            ("sam", "adapt_started", stand_in), ("ada", "use_classifier", stand_in)]
    listed = CliRunner().invoke(app, ["samples", "lab-audit", OLD_LAB, "--store", store_spec, "--format", "json"])
    assert listed.exit_code == 0, listed.output
    assert [(e["actor"], e["after"]) for e in json.loads(listed.output)] == [("sam", {"job": 1}),
                                                                            ("ada", {"classifier": None})]

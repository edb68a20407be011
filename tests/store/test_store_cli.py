"""The store's commands end to end: first admin, users, `count --store`, list, show, audit, sign-off, reopen, export."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from bloodcell.cli.main import app
from bloodcell.store.errors import AuthError, ReadOnlyError, RoleError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hardening"))
from hardening_helpers import save_tiny  # noqa: E402

runner = CliRunner()


def _smear(path: Path, shade: int) -> None:
    image = Image.new("RGB", (320, 240), (200, 202, 205 - shade))
    draw = ImageDraw.Draw(image)
    for i in range(6):
        x, y = 40 + 60 * (i % 5), 40 + 60 * (i // 5)
        draw.ellipse([x - 22, y - 22, x + 22, y + 22], fill=(205, 150, 140))
    draw.ellipse([230, 150, 290, 210], fill=(210, 180, 210))
    draw.ellipse([245, 165, 275, 195], fill=(110, 70, 190))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _run(*args, stdin: str = ""):
    return runner.invoke(app, [str(a) for a in args], input=stdin)


@pytest.fixture()
def lab(store_spec, tmp_path):
    """A store with an admin, a supervisor and a technician, and two samples counted into it."""
    assert _run("users", "add", "ada", "--role", "admin", "--store", store_spec, "--password-stdin",
                stdin="admin-password-1\n").exit_code == 0
    for name, role, password in (("sam", "supervisor", "supervisor-pass-1"), ("tia", "technician", "technician-pass-1")):
        result = _run("users", "add", name, "--role", role, "--store", store_spec, "--admin", "ada",
                      "--password-stdin", stdin=f"admin-password-1\n{password}\n")
        assert result.exit_code == 0, result.output
    _smear(tmp_path / "photos" / "A-1" / "one.png", 0)
    _smear(tmp_path / "photos" / "A-1" / "two.png", 4)
    _smear(tmp_path / "photos" / "A-2" / "three.png", 8)
    checkpoint = save_tiny(tmp_path / "tiny.safetensors")
    result = _run("count", tmp_path / "photos", "--output", tmp_path / "out", "--detector", "classical",
                  "--model", checkpoint, "--store", store_spec)
    assert result.exit_code == 0, result.output
    return store_spec


def test_count_with_a_store_records_each_sample_and_keeps_its_files(lab, tmp_path):
    assert (tmp_path / "out" / "samples.csv").is_file() and (tmp_path / "out" / "A-1" / "counts.json").is_file()
    rows = json.loads(_run("samples", "list", "--store", lab, "--format", "json").output)
    assert sorted((r["sample_id"], len(r["photos"]), r["status"]) for r in rows) == [("A-1", 2, "counted"),
                                                                                      ("A-2", 1, "counted")]
    table = _run("samples", "list", "--store", lab).output
    assert "\t1 photo\t" in table and "\t2 photos\t" in table and "1 photos" not in table
    assert " 1 white cells" not in table
    counts = json.loads((tmp_path / "out" / "A-1" / "counts.json").read_text())["sample"]["counts"]
    shown = json.loads(_run("samples", "show", "A-1", "--store", lab, "--format", "json").output)
    assert shown["counts"] == counts and shown["detector"] == {"name": "classical", "sha256": None}
    assert shown["classifier"]["name"] == "tiny.safetensors" and len(shown["classifier"]["sha256"]) == 64
    assert "count" in shown["timings"]


def test_counting_a_kept_sample_id_again_is_refused_before_counting(lab, tmp_path):
    result = _run("count", tmp_path / "photos" / "A-1", "--output", tmp_path / "again", "--detector", "classical",
                  "--store", lab)
    assert result.exit_code != 0 and "already holds sample 'A-1'" in str(result.exception)
    assert not (tmp_path / "again" / "counts.json").exists()


def test_resuming_a_count_keeps_the_finished_samples_once_and_records_the_rest(lab, tmp_path):
    _smear(tmp_path / "photos" / "A-3" / "four.png", 12)
    result = _run("count", tmp_path / "photos", "--output", tmp_path / "out", "--detector", "classical",
                  "--model", tmp_path / "tiny.safetensors", "--store", lab, "--resume")
    assert result.exit_code == 0, result.output
    rows = json.loads(_run("samples", "list", "--store", lab, "--format", "json").output)
    assert sorted(r["sample_id"] for r in rows) == ["A-1", "A-2", "A-3"]
    audit = _run("samples", "audit", "A-1", "--store", lab, "--format", "json").output
    assert sum(entry["action"] == "count" for entry in json.loads(audit)) == 1


def test_sign_off_needs_a_supervisor_a_review_and_the_right_password(lab):
    result = _run("samples", "sign", "A-1", "--user", "sam", "--store", lab, "--password-stdin",
                  stdin="supervisor-pass-1\n")
    assert isinstance(result.exception, ReadOnlyError)
    assert _run("samples", "finish", "A-1", "--user", "tia", "--store", lab, "--password-stdin",
                stdin="technician-pass-1\n").exit_code == 0
    result = _run("samples", "sign", "A-1", "--user", "tia", "--store", lab, "--password-stdin",
                  stdin="technician-pass-1\n")
    assert isinstance(result.exception, RoleError)
    result = _run("samples", "sign", "A-1", "--user", "sam", "--store", lab, "--password-stdin", stdin="guess\n")
    assert isinstance(result.exception, AuthError) and str(result.exception) == "wrong user name or password"
    result = _run("samples", "sign", "A-1", "--user", "sam", "--store", lab, "--password-stdin",
                  stdin="supervisor-pass-1\n")
    assert result.exit_code == 0 and "signed by sam" in result.output
    result = _run("samples", "reopen", "A-1", "--reason", "eosinophils \u2014 \u00fcnclear?", "--user", "sam", "--store", lab,
                  "--password-stdin", stdin="supervisor-pass-1\n")
    assert result.exit_code == 0
    audit = json.loads(_run("samples", "audit", "A-1", "--store", lab, "--format", "json").output)
    assert [(e["actor"], e["action"]) for e in audit][1:] == [("tia", "review_done"), ("sam", "sign"),
                                                              ("sam", "reopen")]
    assert audit[0]["action"] == "count" and audit[0]["actor"].endswith("(system account)")
    assert audit[-1]["after"]["reason"] == "eosinophils \u2014 \u00fcnclear?"
    table = _run("samples", "audit", "A-1", "--store", lab).output
    assert '"reason": "eosinophils \u2014 \u00fcnclear?"' in table and "\\u2014" not in table


def test_exports_write_a_numeric_csv_and_a_fhir_bundle(lab, tmp_path):
    assert _run("samples", "export", "A-1", "--format", "csv", "--output", tmp_path / "a.csv", "--store",
                lab).exit_code == 0
    row = next(csv.DictReader((tmp_path / "a.csv").open()))
    assert int(row["count_WBC"]) >= 0 and "neutrophil_percent" in row and "neutrophil_count" in row
    result = _run("samples", "export", "A-1", "--format", "fhir", "--output", tmp_path / "a.json", "--store", lab)
    assert result.exit_code == 0 and "(preliminary)" in result.output
    assert json.loads((tmp_path / "a.json").read_text())["entry"][0]["resource"]["status"] == "preliminary"


@pytest.mark.parametrize("command", [["samples", "export", "A-1", "--format", "csv"],
                                     ["samples", "export", "A-1", "--format", "fhir"], ["samples", "report", "A-1"]])
def test_an_export_never_replaces_an_existing_file_without_overwrite(lab, tmp_path, monkeypatch, capsys, command):
    from bloodcell.cli import main as cli_main

    earlier = tmp_path / {"csv": "a.csv", "fhir": "a.json"}.get(command[-1], "a.html")
    earlier.write_text("a lab's earlier export\n")
    before = sorted(tmp_path.iterdir())
    monkeypatch.setattr(sys, "argv", ["bloodcell", *command, "--output", str(earlier), "--store", lab])
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == f"Error: {earlier} exists; choose another --output or pass --overwrite"
    assert earlier.read_text() == "a lab's earlier export\n" and sorted(tmp_path.iterdir()) == before
    result = _run(*command, "--output", earlier, "--store", lab, "--overwrite")
    assert result.exit_code == 0, result.output
    assert "A-1" in earlier.read_text()


def test_users_list_and_disable(lab):
    listed = json.loads(_run("users", "list", "--store", lab, "--format", "json").output)
    assert [(u["name"], u["role"], u["active"]) for u in listed] == [("ada", "admin", True), ("sam", "supervisor", True),
                                                                     ("tia", "technician", True)]
    assert "password" not in json.dumps(listed)
    assert _run("users", "disable", "tia", "--admin", "ada", "--store", lab, "--password-stdin",
                stdin="admin-password-1\n").exit_code == 0
    result = _run("samples", "finish", "A-2", "--user", "tia", "--store", lab, "--password-stdin",
                  stdin="technician-pass-1\n")
    assert isinstance(result.exception, AuthError) and "disabled" in str(result.exception)


def test_a_second_user_without_an_admin_is_refused(lab):
    result = _run("users", "add", "eve", "--role", "admin", "--store", lab, "--password-stdin",
                  stdin="intruder-password\nintruder-password\n")
    assert result.exit_code != 0 and "sign in as an admin" in str(result.exception)


def test_the_command_says_one_sentence_for_a_foreign_file(tmp_path):
    foreign = tmp_path / "photo.jpg"
    foreign.write_bytes(b"\xff\xd8\xff" + bytes(200))
    result = subprocess.run([sys.executable, "-m", "bloodcell", "samples", "list", "--store", str(foreign)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "is not a bloodcell store" in result.stderr
    assert "Traceback" not in result.stderr
    assert foreign.read_bytes() == b"\xff\xd8\xff" + bytes(200)


@pytest.mark.parametrize("command", [
    ["samples", "list"], ["samples", "show", "A-1"], ["samples", "audit", "A-1"], ["samples", "lab-audit", "L"],
    ["samples", "export", "A-1", "--format", "csv", "--output", "{tmp}/a.csv"],
    ["samples", "report", "A-1", "--output", "{tmp}/a.html"],
    ["samples", "finish", "A-1", "--user", "tia", "--password-stdin"],
    ["samples", "sign", "A-1", "--user", "sam", "--password-stdin"],
    ["samples", "reopen", "A-1", "--reason", "why", "--user", "sam", "--password-stdin"],
    ["users", "list"], ["users", "disable", "tia", "--admin", "ada", "--password-stdin"],
    ["users", "add", "bob", "--role", "technician", "--admin", "ada", "--password-stdin"]])
def test_a_command_on_existing_samples_refuses_a_missing_store_and_makes_none(tmp_path, command):
    missing = tmp_path / "notastore.sqlite"
    result = _run(*(a.format(tmp=tmp_path) for a in command), "--store", missing,
                  stdin="admin-password-1\ntechnician-pass-1\n")
    assert result.exit_code != 0 and str(result.exception).startswith(f"no sample store at {missing}: check the path")
    assert not missing.exists() and not list(tmp_path.iterdir())


def test_an_empty_database_is_no_store_for_a_command_on_existing_samples(tmp_path):
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    result = _run("samples", "list", "--store", empty)
    assert result.exit_code != 0 and str(result.exception).startswith(f"no sample store at {empty}: the database is "
                                                                      "empty; check the path")


def test_the_first_admin_makes_a_new_store(tmp_path):
    new = tmp_path / "new.sqlite"
    assert _run("users", "add", "ada", "--role", "admin", "--store", new, "--password-stdin",
                stdin="admin-password-1\nadmin-password-1\n").exit_code == 0
    assert new.is_file() and "ada\tadmin\tactive" in _run("users", "list", "--store", new).output


def test_password_guessing_on_the_command_line_counts_towards_the_same_wait(store_spec):
    from bloodcell.store.errors import ThrottledError

    assert _run("users", "add", "ada", "--role", "admin", "--store", store_spec, "--password-stdin",
                stdin="admin-password-1\n").exit_code == 0
    for _ in range(5):
        result = _run("users", "list", "--store", store_spec)  # reading needs no password
        assert result.exit_code == 0
        result = _run("users", "disable", "eve", "--admin", "ada", "--store", store_spec, "--password-stdin",
                      stdin="guess-password\n")
        assert isinstance(result.exception, AuthError) and not isinstance(result.exception, ThrottledError)
    result = _run("users", "disable", "eve", "--admin", "ada", "--store", store_spec, "--password-stdin",
                  stdin="admin-password-1\n")
    assert isinstance(result.exception, ThrottledError) and str(result.exception).startswith(
        "too many failed sign-ins with this user name or from this computer: try again in ")

"""``bloodcell serve`` as a user runs it: a real process, JSON access log on stderr, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from service_helpers import cell_png, free_port

CLI = [sys.executable, "-c", "from bloodcell.cli.main import main; main()"]


def test_serve_with_a_missing_model_fails_with_one_sentence(tmp_path):
    missing = tmp_path / "nope.safetensors"
    done = subprocess.run([*CLI, "serve", "--model", str(missing), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "nope.safetensors" in done.stderr and "model" in done.stderr
    assert done.stderr.startswith("Error:") and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_serve_process_answers_and_logs_json_lines_to_stderr(tmp_path):
    import torch

    from bloodcell.checkpoint import CheckpointMeta, save_checkpoint
    from bloodcell.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, class_names=["a", "b", "c"], input_size=32)
    checkpoint = save_checkpoint(tmp_path / "r18.safetensors", model, CheckpointMeta("resnet18", model.data_config))
    port = free_port()
    env = {**os.environ, "BLOODCELL_API_KEY": "k3y"}
    server = subprocess.Popen([*CLI, "serve", "--model", str(checkpoint), "--port", str(port), "--threads", "1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        files = {"files": ("c.png", cell_png(), "image/png")}
        assert httpx.post(url + "/v1/classify", files=files).status_code == 401
        ok = httpx.post(url + "/v1/classify", files=files, headers={"X-API-Key": "k3y"})
        assert ok.status_code == 200 and ok.json()["results"][0]["label"] in {"a", "b", "c"}
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    classify = [r for r in records if r["path"] == "/v1/classify"]
    assert [r["status"] for r in classify] == [401, 200]
    assert all(r["client"].startswith("127.0.0.1:") and r["duration_ms"] > 0 for r in classify)


def test_serve_resolves_its_settings_once_from_flags_and_the_api_key_variable(monkeypatch):
    import torch
    import uvicorn
    from typer.testing import CliRunner

    import bloodcell.service.app as service_app
    from bloodcell.cli.main import app
    from bloodcell.service.settings import Limits

    built, ran, threads = [], [], []
    monkeypatch.setattr(service_app, "create_app", lambda settings, **kw: built.append((settings, kw)) or "the-app")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.append((app, kw)))
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    flags = ["serve", "--model", "pbc11", "--engine", "onnx", "--refer-below", "0.3", "--threads", "3", "--port", "8123",
             "--detector", "classical",
             "--max-in-flight", "2", "--max-waiting", "5", "--timeout", "7", "--body-timeout", "4",
             "--max-upload-mb", "1", "--max-files", "6", "--max-megapixels", "2", "--max-request-megapixels", "5"]
    result = CliRunner().invoke(app, flags, env={"BLOODCELL_API_KEY": "k3y"})
    assert result.exit_code == 0, result.output
    (settings, kwargs), = built
    assert kwargs == {}
    assert (settings.model, settings.engine, settings.threads, settings.refer_below) == ("pbc11", "onnx", 3, 0.3)
    assert settings.api_key == "k3y" and settings.detector == "classical"
    assert settings.limits == Limits(max_upload_bytes=1024 * 1024, max_pixels=2_000_000, max_request_pixels=5_000_000,
                                     max_files=6, body_timeout_s=4.0, timeout_s=7.0, max_in_flight=2, max_waiting=5)
    assert threads == [3]
    (served, options), = ran
    assert served == "the-app" and options["port"] == 8123 and "workers" not in options


def test_serve_defaults_are_the_settings_defaults(monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    import bloodcell.service.app as service_app
    from bloodcell.cli.main import app
    from bloodcell.service.settings import ServiceSettings

    built = []
    monkeypatch.setattr(service_app, "create_app", lambda settings, **kw: built.append(settings))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    env = {k: v for k, v in os.environ.items() if k != "BLOODCELL_API_KEY"}
    result = CliRunner().invoke(app, ["serve"], env={**env, "BLOODCELL_API_KEY": ""})
    assert result.exit_code == 0, result.output
    assert built == [ServiceSettings()]
    assert "--workers" not in CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output


def test_serve_refuses_a_missing_store_before_loading_the_model_and_makes_none(monkeypatch, tmp_path):
    import uvicorn
    from typer.testing import CliRunner

    import bloodcell.service.app as service_app
    from bloodcell.cli.main import app

    built = []
    monkeypatch.setattr(service_app, "create_app", lambda settings, **kw: built.append(settings))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    missing = tmp_path / "lab-typo.sqlite"
    result = CliRunner().invoke(app, ["serve", "--store", str(missing), "--port", str(free_port())])
    assert result.exit_code != 0 and built == []
    sentence = str(result.exception)
    assert sentence.startswith(f"no sample store at {missing}: check the path") and "\n" not in sentence
    assert "bloodcell users add NAME --role admin --store STORE" in sentence
    assert not missing.exists() and not list(tmp_path.iterdir())


def test_serve_opens_a_store_its_first_admin_made(monkeypatch, tmp_path):
    import uvicorn
    from typer.testing import CliRunner

    import bloodcell.service.app as service_app
    from bloodcell.cli.main import app

    built = []
    monkeypatch.setattr(service_app, "create_app", lambda settings, **kw: built.append(settings))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    store = tmp_path / "lab.sqlite"
    made = CliRunner().invoke(app, ["users", "add", "ada", "--role", "admin", "--store", str(store),
                                    "--password-stdin"], input="admin-password-1\nadmin-password-1\n")
    assert made.exit_code == 0, made.output
    result = CliRunner().invoke(app, ["serve", "--store", str(store), "--port", str(free_port())])
    assert result.exit_code == 0, result.output
    assert [settings.store for settings in built] == [str(store)]

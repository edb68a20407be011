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
    assert "nope.safetensors" in done.stderr and "checkpoint" in done.stderr


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

"""HTTP API behaviour: results, limits, hostile uploads, API key, queue, timeout, logs, metrics."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import threading
import zlib

import bloodcell
import httpx
import numpy as np
import pytest
from PIL import Image

from bloodcell.errors import ConfigError
from bloodcell.service.limits import Limits

from service_helpers import SERVICE_CLASSES, cell_png


def _files(*items):
    return [("files", item) for item in items]


def _good():
    return ("cell.png", cell_png(), "image/png")


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose valid IHDR claims ``width`` x ``height`` pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def _tiff16() -> bytes:
    gradient = (np.linspace(0, 65535, 40 * 40).reshape(40, 40)).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(gradient).save(buffer, format="TIFF")
    assert Image.open(io.BytesIO(buffer.getvalue())).mode.startswith("I;16")
    return buffer.getvalue()


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(cell_png())).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_classify_returns_one_result_per_image_with_valid_probabilities(client):
    response = client.post("/v1/classify", files=_files(_good(), ("second.jpg", _jpeg(), "image/jpeg")))
    assert response.status_code == 200
    body = response.json()
    assert [r["filename"] for r in body["results"]] == ["cell.png", "second.jpg"]
    for result in body["results"]:
        assert result["error"] is None
        assert result["label"] in SERVICE_CLASSES
        assert len(result["top_k"]) == 3
        probs = [t["probability"] for t in result["top_k"]]
        assert probs == sorted(probs, reverse=True)
        assert result["confidence"] == pytest.approx(probs[0])
        assert result["label"] == result["top_k"][0]["label"]
        # refer_below defaults to 0.6 and an untrained 4-class model is never that sure
        assert result["referred"] is True and "low confidence" in result["reason"]


def test_classify_explain_returns_a_png_overlay(client):
    response = client.post("/v1/classify?explain=true&top_k=2", files=_files(_good()))
    assert response.status_code == 200
    result = response.json()["results"][0]
    assert len(result["top_k"]) == 2
    overlay = Image.open(io.BytesIO(base64.b64decode(result["gradcam_png"])))
    assert overlay.format == "PNG" and overlay.width > 0


def test_bad_file_in_a_batch_is_reported_and_the_others_are_classified(client):
    response = client.post("/v1/classify", files=_files(_good(), ("notes.jpg", b"just text", "image/jpeg")))
    assert response.status_code == 200
    good, bad = response.json()["results"]
    assert good["label"] in SERVICE_CLASSES and good["error"] is None
    assert bad["label"] is None and "not a supported image" in bad["error"] and "notes.jpg" in bad["error"]


HOSTILE = {
    "empty": (("empty.png", b"", "image/png"), 400, "empty_file"),
    "random_bytes": (("noise.png", np.random.default_rng(1).bytes(4096), "image/png"), 415, "unsupported_media_type"),
    "text_named_jpg": (("cell.jpg", b"I am a text file, not a JPEG.\n" * 20, "image/jpeg"), 415, "unsupported_media_type"),
    "jpeg_cut_in_header": (("cut.jpg", _jpeg()[:300], "image/jpeg"), 422, "corrupt_image"),
    "jpeg_cut_in_data": (("half.jpg", _jpeg()[: len(_jpeg()) * 2 // 3], "image/jpeg"), 422, "corrupt_image"),
    "png_50000x50000": (("bomb.png", _png_claiming(50000, 50000), "image/png"), 413, "image_too_large"),
    "gif_not_accepted": (("anim.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/gif"), 415, "unsupported_media_type"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_upload_gets_a_clear_4xx_and_the_server_keeps_serving(client, case):
    upload, status, code = HOSTILE[case]
    response = client.post("/v1/classify", files=_files(upload))
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert upload[0] in body["message"] and len(body["message"]) < 300
    follow = client.post("/v1/classify", files=_files(_good()))
    assert follow.status_code == 200 and follow.json()["results"][0]["label"] in SERVICE_CLASSES


def test_16_bit_tiff_is_converted_and_classified(client):
    response = client.post("/v1/classify", files=_files(("deep.tif", _tiff16(), "image/tiff")))
    assert response.status_code == 200
    assert response.json()["results"][0]["label"] in SERVICE_CLASSES


def test_pixel_limit_is_configurable(make_client):
    client = make_client(limits=Limits(max_pixels=40 * 40))
    response = client.post("/v1/classify", files=_files(_good()))  # 48 x 48
    assert response.status_code == 413 and "48x48" in response.json()["message"]


def test_huge_body_is_refused_by_declared_and_by_streamed_length(make_client):
    client = make_client(limits=Limits(max_upload_bytes=256 * 1024))
    big = ("big.png", b"\x89PNG" + b"\x00" * (400 * 1024), "image/png")
    declared = client.post("/v1/classify", files=_files(big))
    assert declared.status_code == 413 and declared.json()["error"] == "payload_too_large"

    def chunks():  # no Content-Length: the limit must hold on the streamed byte count
        for _ in range(40):
            yield b"x" * (16 * 1024)

    streamed = client.post("/v1/classify", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=zz"})
    assert streamed.status_code == 413 and streamed.json()["error"] == "payload_too_large"
    assert client.post("/v1/classify", files=_files(_good())).status_code == 200


def test_too_many_files_is_413(make_client):
    client = make_client(limits=Limits(max_files=2))
    response = client.post("/v1/classify", files=_files(_good(), _good(), _good()))
    assert response.status_code == 413 and response.json()["error"] == "too_many_files"


def test_missing_files_field_is_422_json(client):
    response = client.post("/v1/classify", data={"other": "x"})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request" and "files" in response.json()["message"]


def test_api_key_protects_v1_and_metrics_but_not_health_or_page(make_client):
    client = make_client(api_key="s3cret")
    assert client.post("/v1/classify", files=_files(_good())).status_code == 401
    assert client.get("/v1/models", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/metrics").status_code == 401
    assert client.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
    ok = client.post("/v1/classify", files=_files(_good()), headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    for path in ("/health", "/", "/static/app.js", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path


class _GatedClassifier:
    """Wraps the real classifier; ``predict`` waits until the test opens the gate."""

    def __init__(self, inner):
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, *args, **kwargs):
        self.entered.set()
        self.gate.wait(timeout=10)
        return self.inner.predict(*args, **kwargs)


def test_full_queue_answers_503_with_retry_after_and_recovers(tiny_classifier):
    from bloodcell.service.app import create_app

    gated = _GatedClassifier(tiny_classifier)
    app = create_app(classifier=gated, limits=Limits(max_in_flight=1, max_waiting=1, retry_after_s=3), access_log=io.StringIO())
    files = _files(_good())

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            running = asyncio.create_task(http.post("/v1/classify", files=files))
            await asyncio.to_thread(gated.entered.wait, 5)
            waiting = asyncio.create_task(http.post("/v1/classify", files=files))
            await asyncio.sleep(0.1)
            refused = await http.post("/v1/classify", files=files)
            metrics = (await http.get("/metrics")).text
            gated.gate.set()
            return refused, await running, await waiting, metrics

    refused, first, second, metrics = asyncio.run(scenario())
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "3"
    assert refused.json()["error"] == "busy"
    assert first.status_code == 200 and second.status_code == 200
    assert "bloodcell_in_flight 1.0" in metrics and "bloodcell_queue_depth 1.0" in metrics


def test_slow_job_gets_504_and_the_server_recovers(tiny_classifier, make_client):
    gated = _GatedClassifier(tiny_classifier)
    client = make_client(classifier=gated, limits=Limits(timeout_s=0.3))
    response = client.post("/v1/classify", files=_files(_good()))
    assert response.status_code == 504 and response.json()["error"] == "timeout"
    gated.gate.set()
    assert client.post("/v1/classify", files=_files(_good())).status_code == 200


def test_access_log_is_json_lines_with_request_id(client, access_log):
    client.post("/v1/classify", files=_files(("x.png", b"", "image/png")), headers={"X-Request-ID": "abc-123"})
    response = client.get("/health")
    records = [json.loads(line) for line in access_log.getvalue().splitlines()]
    assert [r["path"] for r in records] == ["/v1/classify", "/health"]
    first, second = records
    assert first["status"] == 400 and first["request_id"] == "abc-123" and first["method"] == "POST"
    assert second["request_id"] == response.headers["X-Request-ID"] and second["duration_ms"] >= 0
    assert set(first) == {"time", "method", "path", "status", "duration_ms", "client", "request_id"}


def test_metrics_count_requests_errors_and_latency(client):
    client.post("/v1/classify", files=_files(_good()))
    client.post("/v1/classify", files=_files(("t.jpg", b"text", "image/jpeg")))
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert 'bloodcell_requests_total{endpoint="/v1/classify",method="POST",status="200"} 1.0' in text
    assert 'bloodcell_requests_total{endpoint="/v1/classify",method="POST",status="415"} 1.0' in text
    assert 'bloodcell_requests_total{endpoint="other",method="GET",status="404"} 1.0' in text
    assert 'bloodcell_errors_total{code="unsupported_media_type",endpoint="/v1/classify"} 1.0' in text
    assert 'bloodcell_request_duration_seconds_count{endpoint="/v1/classify"} 2.0' in text
    assert 'bloodcell_images_total{endpoint="/v1/classify"} 1.0' in text


def test_models_and_health_describe_the_loaded_checkpoint(client):
    models = client.get("/v1/models").json()["models"]
    assert models[0]["class_names"] == list(SERVICE_CLASSES)
    assert models[0]["input_size"] == 32 and models[0]["gradcam"] is True
    assert client.get("/health").json() == {"status": "ok", "version": bloodcell.__version__, "model": "tiny"}


def test_docs_and_page_need_no_cdn(client):
    docs = client.get("/docs").text
    assert "cdn" not in docs.lower() and "/static-offline-docs/swagger-ui-bundle.js" in docs
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    page = client.get("/")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text and client.get(asset).status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")


def test_count_returns_counts_json_structure_with_annotated_png(make_client):
    calls = []

    def fake_counter(images, names):
        calls.append((len(images), names))
        return {
            "images": [
                {"path": n, "counts": {"RBC": 10, "WBC": 1, "Platelets": 3}, "wbc_types": {"neutrophil": 1},
                 "boxes": [{"x0": 1, "y0": 2, "x1": 5, "y1": 6, "label": "WBC"}], "annotated": Image.new("RGB", (8, 8))}
                for n in names
            ],
            "sample": {"counts": {"RBC": 10 * len(names)}},
        }

    client = make_client(count_smears=fake_counter)
    response = client.post("/v1/count", files=_files(("smear.png", cell_png(size=64), "image/png"), ("bad.png", b"", "image/png")))
    assert response.status_code == 200
    good, bad = response.json()["images"]
    assert calls == [(1, ["smear.png"])]
    assert good["counts"] == {"RBC": 10, "WBC": 1, "Platelets": 3} and good["wbc_types"] == {"neutrophil": 1}
    assert Image.open(io.BytesIO(base64.b64decode(good["annotated_png"]))).size == (8, 8)
    assert bad["error"] and "empty" in bad["error"]
    assert response.json()["sample"] == {"counts": {"RBC": 10}}


def test_limits_from_env_parse_and_reject_bad_values():
    limits = Limits.from_env({"BLOODCELL_TIMEOUT_S": "2.5", "BLOODCELL_MAX_FILES": "4"})
    assert limits.timeout_s == 2.5 and limits.max_files == 4 and limits.max_in_flight == Limits().max_in_flight
    with pytest.raises(ConfigError, match="BLOODCELL_MAX_FILES"):
        Limits.from_env({"BLOODCELL_MAX_FILES": "many"})
    with pytest.raises(ConfigError, match="max_in_flight"):
        Limits.from_env({"BLOODCELL_MAX_IN_FLIGHT": "0"})

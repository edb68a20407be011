"""HTTP API behaviour: results, limits, hostile uploads, API key, queue, timeout, logs, metrics."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import struct
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image
from service_helpers import SERVICE_CLASSES, LiveServer, cell_png

import bloodcell
from bloodcell.errors import ConfigError
from bloodcell.inference.predictor import DEFAULT_REFER_BELOW
from bloodcell.service.settings import Limits, ServiceSettings


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



def _field_png(size: int = 160) -> bytes:
    """A synthetic field with three well-separated stained cells, not a single-cell image."""
    image = np.full((size, size, 3), (230, 200, 210), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for cy, cx in ((40, 40), (40, 120), (120, 80)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 18 ** 2] = (110, 50, 140)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_classify_passes_on_the_several_cells_note(client):
    response = client.post("/v1/classify", files=_files(_good(), ("field.png", _field_png(), "image/png")))
    single, field = response.json()["results"]
    assert single["note"] is None
    assert field["label"] is not None and field["note"].startswith("3 white cells in this image")

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
    settings = ServiceSettings(limits=Limits(max_in_flight=1, max_waiting=1, retry_after_s=3))
    app = create_app(settings, classifier=gated, access_log=io.StringIO())
    files = _files(_good())

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
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
    assert models[0]["refer_below"] == DEFAULT_REFER_BELOW
    assert client.get("/health").json() == {"status": "ok", "version": bloodcell.__version__, "model": "tiny",
                                            "detector": "smear-detector", "refer_below": DEFAULT_REFER_BELOW}


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

    def fake_counter(image, classifier=None, refer_below=None, **options):
        calls.append(image.size)
        return {"counts": {"RBC": 10, "WBC": 1, "Platelets": 3}, "wbc_types": {"neutrophil": 1},
                "boxes": [{"x1": 1, "y1": 2, "x2": 5, "y2": 6, "label": "WBC"}], "annotated": Image.new("RGB", (8, 8))}

    client = make_client(count_image=fake_counter)
    response = client.post("/v1/count", files=_files(("smear.png", cell_png(size=64), "image/png"), ("bad.png", b"", "image/png")))
    assert response.status_code == 200
    good, bad = response.json()["images"]
    assert calls == [(64, 64)]
    assert good["counts"] == {"RBC": 10, "WBC": 1, "Platelets": 3} and good["wbc_types"] == {"neutrophil": 1}
    assert Image.open(io.BytesIO(base64.b64decode(good["annotated_png"]))).size == (8, 8)
    assert bad["error"] and "empty" in bad["error"]
    sample = response.json()["sample"]
    assert sample["counts"]["RBC"] == 10 and sample["wbc_types"] == {"neutrophil": 1} and sample["images"] == 1
    report = response.json()["report"]
    assert report["counts"][0] == {"cell": "Red cells", "count": 10} and report["skipped"] == 1


def _referring_counter(calls):
    """A stand-in for ``bloodcell.smear.counting.count_image``: one WBC box per photo, typed and referred like it."""

    def count_image(image, classifier=None, refer_below=None, **options):
        calls.append({"refer_below": refer_below, **options})
        pred = classifier.predict([image], top_k=1, refer_below=refer_below)[0]
        box = {"label": "WBC", "x1": 0, "y1": 0, "x2": image.width, "y2": image.height,
               "wbc_type": pred.label, "confidence": pred.confidence}
        if pred.referred:
            box["referred"] = True
        return {"counts": {"RBC": 0, "WBC": 1, "Platelets": 0}, "wbc_types": {pred.label: 1},
                "boxes": [box], "referred": [box] if pred.referred else []}

    return count_image


@pytest.mark.parametrize("refer_below", [None, 0.0, 0.99])
def test_count_refers_white_cells_below_the_served_threshold(make_client, refer_below):
    calls = []
    settings = {} if refer_below is None else {"refer_below": refer_below}
    client = make_client(count_image=_referring_counter(calls), **settings)
    photos = _files(("a.png", cell_png(seed=1, size=64), "image/png"), ("b.png", cell_png(seed=2, size=64), "image/png"))
    response = client.post("/v1/count", files=photos)
    assert response.status_code == 200, response.text
    threshold = DEFAULT_REFER_BELOW if refer_below is None else refer_below
    assert [call["refer_below"] for call in calls] == [threshold, threshold]
    boxes = [image["boxes"][0] for image in response.json()["images"]]
    # an untrained 4-class model is never 99 % sure, and always more than 0 % sure
    expected = threshold > max(box["confidence"] for box in boxes)
    assert all(box.get("referred", False) is expected for box in boxes)
    sample = response.json()["sample"]
    assert sample["images"] == 2 and sample["counts"]["WBC"] == 2 and "typer" in sample["wbc_typing"]
    assert sample["wbc_referred"] == (2 if expected else 0)


def _big_png(tmp_path, side: int = 4000) -> bytes:
    """A side x side constant-colour PNG: a few KB on disk, side*side pixels once decoded."""
    path = tmp_path / f"flat{side}.png"
    Image.new("RGB", (side, side), (230, 200, 210)).save(path, optimize=True)
    return path.read_bytes()


class _CountingClassifier:
    def __init__(self, inner):
        self.inner = inner
        self.predicted = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, images, *args, **kwargs):
        self.predicted += len(images)
        return self.inner.predict(images, *args, **kwargs)


def test_many_large_images_in_one_request_are_refused_before_any_decoding(make_client, tiny_classifier, tmp_path):
    flat = _big_png(tmp_path)
    assert len(flat) < 200_000  # 16 Mpx each, under the per-image limit; 8 of them are 128 Mpx in all
    counting = _CountingClassifier(tiny_classifier)
    counted = []
    client = make_client(classifier=counting, count_image=lambda image, **kw: counted.append(image))
    files = _files(*[(f"flat{i}.png", flat, "image/png") for i in range(8)])
    for path in ("/v1/classify", "/v1/count"):
        start = time.monotonic()
        response = client.post(path, files=files)
        assert response.status_code == 413, response.text
        body = response.json()
        assert body["error"] == "request_too_large"
        assert "128000000 pixels" in body["message"] and str(Limits().max_request_pixels) in body["message"]
        assert body["message"].count(". ") == 0 and len(body["message"]) < 200
        assert time.monotonic() - start < 5
    assert counting.predicted == 0 and counted == []
    assert client.post("/v1/classify", files=_files(_good())).status_code == 200


def test_request_pixel_limit_counts_usable_files_only(make_client):
    client = make_client(limits=Limits(max_request_pixels=3 * 48 * 48))
    three = client.post("/v1/classify", files=_files(_good(), _good(), _good(), ("bad.png", b"", "image/png")))
    assert three.status_code == 200 and [r["error"] is None for r in three.json()["results"]] == [True, True, True, False]
    four = client.post("/v1/classify", files=_files(_good(), _good(), _good(), _good()))
    assert four.status_code == 413 and four.json()["error"] == "request_too_large"


def _stalled_upload(url_port: int, trickle_s: float | None, wait_s: float) -> tuple[bytes, float, bool]:
    """Send a multipart request whose body never completes (or trickles in a byte at a time).

    Returns what the server answered, when the connection ended, and whether it was reset
    (a trickling client may write after the server closed, and the reset can swallow the answer).
    """
    boundary = "zz"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"c.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + cell_png()[:40]
    request = (f"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
               f"Content-Length: 100000\r\n\r\n").encode() + head
    answer = b""
    with socket.create_connection(("127.0.0.1", url_port), timeout=wait_s) as sock:
        start = time.monotonic()
        sock.sendall(request)
        sock.setblocking(False)
        while time.monotonic() < start + wait_s:
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                if trickle_s is not None and not answer:
                    sock.send(b"x")
                time.sleep(trickle_s or 0.05)
                continue
            except ConnectionResetError:
                return answer, time.monotonic() - start, True
            if not chunk:
                break  # closed by the server
            answer += chunk
        return answer, time.monotonic() - start, False


@pytest.mark.parametrize("trickle_s", [None, 0.1], ids=["stalled", "trickling"])
def test_an_upload_that_stops_or_trickles_is_cut_after_the_body_timeout(tiny_classifier, trickle_s):
    from bloodcell.service.app import create_app

    settings = ServiceSettings(limits=Limits(body_timeout_s=1.0))
    with LiveServer(create_app(settings, classifier=tiny_classifier, access_log=io.StringIO())) as server:
        answer, elapsed, reset = _stalled_upload(server.port, trickle_s, wait_s=15)
        assert 0.9 < elapsed < 10, "the connection stayed open"
        if not (reset and not answer):
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b'"error":"body_timeout"' in answer and b"1 s limit" in answer
        assert trickle_s is not None or not reset  # a silent client always gets the 408 and a clean close
        assert httpx.post(server.url + "/v1/classify", files=_files(_good())).status_code == 200


class _StuckClassifier:
    """Wraps the real classifier; its first ``stuck_calls`` predict calls block until ``release`` is set."""

    def __init__(self, inner, stuck_calls: int = 1):
        self.inner = inner
        self.stuck_calls = stuck_calls
        self.calls = 0
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, *args, **kwargs):
        with self._lock:
            self.calls += 1
            stuck = self.calls <= self.stuck_calls
        if stuck:
            self.release.wait(timeout=20)
        return self.inner.predict(*args, **kwargs)


def _metric(client, name: str) -> float:
    line = next(line for line in client.get("/metrics").text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


def test_a_timed_out_job_frees_its_slot_and_stops_at_its_next_batch(tiny_classifier, make_client):
    from bloodcell.service.app import JOB_BATCH

    stuck = _StuckClassifier(tiny_classifier)
    client = make_client(classifier=stuck, limits=Limits(timeout_s=0.5, max_in_flight=1))
    try:
        many = _files(*[(f"c{i}.png", cell_png(seed=i), "image/png") for i in range(2 * JOB_BATCH + 1)])
        abandoned = client.post("/v1/classify", files=many)
        assert abandoned.status_code == 504 and abandoned.json()["error"] == "timeout"
        # the only slot is free again although the abandoned job is still stuck in its first batch
        assert _metric(client, "bloodcell_abandoned_jobs") == 1.0 and _metric(client, "bloodcell_in_flight") == 0.0
        follow = client.post("/v1/classify", files=_files(_good()))
        assert follow.status_code == 200
    finally:
        stuck.release.set()
    deadline = time.monotonic() + 10
    while _metric(client, "bloodcell_abandoned_jobs") != 0.0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _metric(client, "bloodcell_abandoned_jobs") == 0.0
    assert stuck.calls == 2  # the abandoned job's first batch and the follow-up: its other batches never ran


def test_abandoned_work_is_bounded_a_second_stuck_job_keeps_its_slot(tiny_classifier, make_client):
    stuck = _StuckClassifier(tiny_classifier, stuck_calls=2)
    client = make_client(classifier=stuck, limits=Limits(timeout_s=0.5, max_in_flight=1))
    try:
        assert client.post("/v1/classify", files=_files(_good())).status_code == 504  # abandoned, slot freed
        assert client.post("/v1/classify", files=_files(_good())).status_code == 504  # bound reached: keeps its slot
        assert _metric(client, "bloodcell_abandoned_jobs") == 1.0 and _metric(client, "bloodcell_in_flight") == 1.0
        assert client.post("/v1/classify", files=_files(_good())).status_code == 504  # waited for the held slot
        assert stuck.calls == 2
    finally:
        stuck.release.set()
    deadline = time.monotonic() + 10
    while _metric(client, "bloodcell_in_flight") != 0.0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.post("/v1/classify", files=_files(_good())).status_code == 200
    assert _metric(client, "bloodcell_abandoned_jobs") == 0.0


def test_settings_reject_bad_values():
    assert Limits().max_request_pixels >= Limits().max_pixels
    with pytest.raises(ConfigError, match="max_in_flight"):
        Limits(max_in_flight=0)
    with pytest.raises(ConfigError, match="body_timeout_s"):
        Limits(body_timeout_s=-1)
    with pytest.raises(ConfigError, match="max_files"):
        Limits(max_files="many")
    assert Limits(max_waiting=0).max_waiting == 0
    with pytest.raises(ConfigError, match="engine"):
        ServiceSettings(engine="tensorflow")
    with pytest.raises(ConfigError, match="refer_below"):
        ServiceSettings(refer_below=1.5)
    assert ServiceSettings().refer_below == DEFAULT_REFER_BELOW and ServiceSettings(api_key="").api_key is None
    assert "s3cret" not in repr(ServiceSettings(api_key="s3cret"))


def test_classify_options_as_form_fields_named_as_the_cli_options(client):
    # `curl -F explain=true -F top_k=2 -F files=@cell.png`: the form fields are honoured, as the query parameters are
    response = client.post("/v1/classify", files=_files(_good()), data={"explain": "true", "top_k": "2", "tta": "true"})
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert len(result["top_k"]) == 2 and result["gradcam_png"]
    plain = client.post("/v1/classify", files=_files(_good())).json()["results"][0]
    assert len(plain["top_k"]) == 3 and plain["gradcam_png"] is None


@pytest.mark.parametrize(("route", "fields", "unknown"), [
    ("/v1/classify", {"explian": "true"}, "'explian'"),
    ("/v1/classify", {"top-k": "2", "refer_below": "0.9"}, "'refer_below', 'top-k'"),
    ("/v1/count", {"sampleid": "S-17"}, "'sampleid'"),
])
def test_an_unknown_form_field_is_refused_with_one_sentence(client, route, fields, unknown):
    response = client.post(route, files=_files(_good()), data=fields)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "unknown_field"
    assert body["message"].startswith(f"unknown form field{'s' if ',' in unknown else ''} {unknown}; this endpoint takes files")
    assert "\n" not in body["message"]


def test_an_over_large_image_has_the_same_sentence_in_the_service_and_the_cli(client, tmp_path):
    from bloodcell.data.images import read_image
    from bloodcell.errors import ImageError

    data = _png_claiming(20_000, 20_000)  # 400 megapixels: past Pillow's own decompression-bomb limit
    answer = client.post("/v1/classify", files=_files(("big.png", data, "image/png"))).json()
    path = tmp_path / "big.png"
    path.write_bytes(data)
    with pytest.raises(ImageError) as raised:
        read_image(path, max_pixels=40_000_000)
    assert "decompression" not in str(raised.value).lower() and "DOS" not in str(raised.value)
    service_message = answer["results"][0]["error"] if "results" in answer else answer["message"]
    assert service_message == "big.png: image has too many pixels (limit 40000000)"
    assert str(raised.value) == f"{path}: image has too many pixels (limit 40000000)"


def test_one_count_answer_has_one_count_of_referred_cells(make_client):
    """Issue 25: a white cell the detector doubts (score under 0.5) but the classifier types surely was in the
    report's ``referred`` (and the review list) but not in the sample's ``wbc_referred``."""

    def doubtful_cell(image, classifier=None, refer_below=None, **options):
        box = {"label": "WBC", "score": 0.3, "x1": 10.0, "y1": 10.0, "x2": 50.0, "y2": 50.0,
               "wbc_type": "neutrophil", "confidence": 0.99}
        return {"counts": {"RBC": 0, "WBC": 1, "Platelets": 0}, "wbc_types": {"neutrophil": 1}, "boxes": [box],
                "referred": []}

    client = make_client(count_image=doubtful_cell)
    response = client.post("/v1/count", files=_files(("smear.png", cell_png(size=64), "image/png")))
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["review"]) == 1 and "not sure" in body["review"][0]["reason"]
    assert body["sample"]["wbc_referred"] == body["report"]["referred"] == 1

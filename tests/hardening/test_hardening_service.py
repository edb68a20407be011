"""Hardening of the service (issue 30): Host and origin checks, CORS, /v1/review amplification, decoding memory."""

from __future__ import annotations

import io
import json
import os

import pytest
from fastapi.testclient import TestClient
from hardening_helpers import cell_png, png16, save_tiny
from typer.testing import CliRunner

from bloodcell.service.settings import Limits, ServiceSettings

PHOTO_ID = "0123456789abcdef"


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from bloodcell.inference.predictor import load

    return load(save_tiny(tmp_path_factory.mktemp("svc") / "tiny.safetensors"))


@pytest.fixture()
def make(classifier):
    """``make(base_url=..., **settings)`` -> a started TestClient of a fresh app."""
    from bloodcell.service.app import create_app

    clients = []

    def build(base_url="http://localhost", **settings):
        client = TestClient(create_app(ServiceSettings(**settings), classifier=classifier, access_log=io.StringIO()),
                            base_url=base_url, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture()
def cell(tmp_path):
    return cell_png(tmp_path / "c.png").read_bytes()


def _classify(client, cell, **headers):
    return client.post("/v1/classify", files=[("files", ("c.png", cell, "image/png"))], headers=headers)


@pytest.mark.parametrize("base_url, allowed, status", [
    ("http://localhost:8000", {}, 200),
    ("http://127.0.0.1:8000", {}, 200),
    ("http://[::1]:8000", {}, 200),
    ("http://attacker.example:8000", {}, 400),  # DNS rebinding: the page's own name, pointed at the lab PC
    ("http://lab-pc.local", {"allowed_hosts": ("lab-pc.local",)}, 200),
    ("http://a.lab.org", {"allowed_hosts": ("*.lab.org",)}, 200),
    ("http://lab.org.attacker.example", {"allowed_hosts": ("*.lab.org",)}, 400),
])
def test_the_host_header_must_be_an_allowed_one(make, base_url, allowed, status):
    response = make(base_url=base_url, **allowed).get("/health")
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"] == "host_not_allowed"
        assert "--allowed-host" in response.json()["message"]


def test_a_post_from_another_sites_page_is_refused_and_the_same_origin_runs(make, cell):
    client = make(base_url="http://localhost:8000")
    foreign = _classify(client, cell, Origin="http://attacker.example")
    assert foreign.status_code == 403 and foreign.json()["error"] == "cross_origin", foreign.text
    assert _classify(client, cell, Origin="null").status_code == 403
    assert _classify(client, cell, **{"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert _classify(client, cell, Origin="http://localhost:8000").status_code == 200
    assert _classify(client, cell).status_code == 200  # curl and scripts send no Origin
    assert "access-control-allow-origin" not in client.get("/health", headers={"Origin": "http://x.example"}).headers


def test_a_cors_origin_may_call_the_api_with_its_key(make, cell):
    client = make(cors_origins=("https://lims.lab.org",), api_key="k")
    preflight = client.options("/v1/classify", headers={
        "Origin": "https://lims.lab.org", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "https://lims.lab.org"
    answer = _classify(client, cell, Origin="https://lims.lab.org", **{"X-API-Key": "k"})
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "https://lims.lab.org"
    assert _classify(client, cell, Origin="https://other.example", **{"X-API-Key": "k"}).status_code == 403


@pytest.fixture()
def serve(monkeypatch):
    """``serve(*flags)``: run ``bloodcell serve`` without serving; (its result, the settings it built or None)."""
    import uvicorn

    import bloodcell.service.app as service_app
    from bloodcell.cli.main import app

    built = []
    monkeypatch.setattr(service_app, "create_app", lambda settings, **kw: built.append(settings))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    monkeypatch.setattr("bloodcell.cli.serve.check_port", lambda host, port: None)  # 10.0.0.7 is not this machine's
    env = {k: v for k, v in os.environ.items() if k != "BLOODCELL_API_KEY"}

    def run(*flags, key="k"):
        built.clear()
        result = CliRunner().invoke(app, ["serve", *flags], env={**env, "BLOODCELL_API_KEY": key})
        return result, (built[0] if built else None)
    return run


def test_serve_allows_the_bound_address_and_given_hosts_and_origins(serve):
    result, settings = serve("--host", "10.0.0.7", "--allowed-host", "lab-pc.local", "--cors-origin", "https://lims.lab.org")
    assert result.exit_code == 0, result.output
    assert settings.allowed_hosts == ("localhost", "127.0.0.1", "::1", "10.0.0.7", "lab-pc.local")
    assert settings.cors_origins == ("https://lims.lab.org",)
    bad, _ = serve("--cors-origin", "lims.lab.org")
    assert bad.exit_code == 1 and "scheme://host" in str(bad.exception)


def test_serve_sets_the_decoding_review_and_response_budgets(serve):
    result, settings = serve("--max-decoding-mb", "100", "--max-review-boxes", "500", "--max-response-mb", "2.5", key="")
    assert result.exit_code == 0, result.output
    limits = settings.limits
    assert (limits.max_decoding_bytes, limits.max_review_boxes, limits.max_response_bytes) == (
        100 * 2**20, 500, int(2.5 * 2**20))
    zero, _ = serve("--max-review-boxes", "0", key="")
    assert zero.exit_code == 2 and "--max-review-boxes" in zero.output


def _state(boxes: int, width: int = 640, height: int = 480) -> dict:
    box = {"label": "RBC", "x1": 1.0, "y1": 1.0, "x2": 20.0, "y2": 20.0, "score": 0.9}
    photo = {"photo_id": PHOTO_ID, "filename": "a.png", "width": width, "height": height,
             "counts": {"RBC": boxes}, "wbc_types": {}, "boxes": [box] * boxes}
    return {"photos": [photo]}


def _review(client, review: dict, **headers):
    return client.post("/v1/review", files=[("review", ("r.json", json.dumps(review), "application/json"))],
                       headers=headers)


def test_review_boxes_are_bounded_before_the_request_is_built(make, monkeypatch):
    from bloodcell.service import schemas

    client = make(limits=Limits(max_review_boxes=100))
    assert _review(client, {"states": [_state(100)], "reviewed": False}).status_code == 200
    monkeypatch.setattr(schemas.ReviewRequest, "model_validate", lambda *a, **k: pytest.fail("validated first"))
    many = _review(client, {"states": [_state(60), _state(41)], "reviewed": False})
    assert many.status_code == 413 and many.json()["error"] == "too_many_boxes", many.text
    assert "101 boxes, more than the limit of 100" in many.json()["message"]


def test_the_review_answer_is_bounded_by_the_response_budget(make):
    small = make(limits=Limits(max_response_bytes=50_000))
    assert _review(small, {"states": [_state(10)], "reviewed": False}).status_code == 200
    answer = _review(small, {"states": [_state(400)], "reviewed": False})
    assert answer.status_code == 413 and answer.json()["error"] == "response_too_large", answer.text
    assert "MB limit" in answer.json()["message"]


def test_review_needs_the_key_when_one_is_set(make):
    client = make(api_key="secret")
    assert _review(client, {"states": [_state(1)], "reviewed": False}).status_code == 401
    assert _review(client, {"states": [_state(1)], "reviewed": False}, **{"X-API-Key": "secret"}).status_code == 200


def test_a_16_bit_40_megapixel_png_is_refused_before_it_is_decoded(make, monkeypatch):
    import bloodcell.service.app as service_app

    data = png16(6400, 6250)  # exactly the 40-megapixel limit
    assert len(data) < 1_000_000
    monkeypatch.setattr(service_app, "read_image", lambda *a, **k: pytest.fail("decoded"))
    answer = make().post("/v1/count", files=[("files", ("deep.png", data, "image/png"))])
    assert answer.status_code == 413 and answer.json()["error"] == "image_too_large", answer.text
    message = answer.json()["message"]
    assert message.startswith("deep.png: a 6400x6250 I;16 image needs about") and "MB to decode" in message
    assert message.count(". ") == 0  # one sentence


def test_8_bit_images_at_the_pixel_limit_stay_within_the_decoding_budget():
    from bloodcell.data.images import decoding_bytes

    limits = Limits()
    side = int(limits.max_pixels ** 0.5)
    assert decoding_bytes("RGB", side, side) <= limits.max_decoding_bytes
    assert decoding_bytes("L", side, side) <= limits.max_decoding_bytes
    assert decoding_bytes("I;16", side, side) > limits.max_decoding_bytes


def test_count_and_classify_answers_are_bounded_by_the_response_budget(classifier, cell):
    from bloodcell.service.app import create_app

    def many_boxes(image, classifier=None, **options):
        boxes = [{"label": "RBC", "x1": 1, "y1": 1, "x2": 9, "y2": 9, "score": 0.9}] * 2000
        return {"counts": {"RBC": 2000, "WBC": 0, "Platelets": 0}, "wbc_types": {}, "boxes": boxes}

    app = create_app(ServiceSettings(limits=Limits(max_response_bytes=20_000)), classifier=classifier,
                     count_image=many_boxes, access_log=io.StringIO())
    with TestClient(app, base_url="http://localhost") as client:
        counted = client.post("/v1/count", files=[("files", ("s.png", cell, "image/png"))])
        assert counted.status_code == 413 and counted.json()["error"] == "response_too_large", counted.text
        assert "send fewer or smaller photos per request" in counted.json()["message"]
        files = [("files", (f"c{i}.png", cell, "image/png")) for i in range(32)]
        assert client.post("/v1/classify", files=files[:1]).status_code == 200
        classified = client.post("/v1/classify", files=files, params={"explain": True})
        assert classified.status_code == 413 and classified.json()["error"] == "response_too_large"

"""Download with resume, checksum and extraction against a local HTTP server (no network)."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import tarfile
import threading
import zipfile

import pytest
from datafakes import cell, jpeg_bytes

from bloodcell.data.fetch import download, extract, fetch_dataset
from bloodcell.data.registry import DatasetInfo, DownloadFile
from bloodcell.errors import DataError


class RangeHandler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    ranges: list[str | None] = []

    def do_GET(self):  # noqa: N802 - http.server API
        data = self.files.get(self.path.split("?")[0])
        if data is None:
            self.send_error(404)
            return
        header = self.headers.get("Range")
        self.ranges.append(header)
        start = int(header.split("=")[1].rstrip("-")) if header else 0
        self.send_response(206 if header else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    RangeHandler.files, RangeHandler.ranges = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", RangeHandler
    httpd.shutdown()
    httpd.server_close()


def _zip_of_tree() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for cls in ("alpha", "beta"):
            for k in range(3):
                zf.writestr(f"Blood-master/{cls}/{cls}_{k}.jpg", jpeg_bytes(cell(k + (10 if cls == "beta" else 0))))
    return buffer.getvalue()


def test_resume_uses_http_range_and_verifies(server, tmp_path):
    url, handler = server
    payload = bytes(range(256)) * 400
    handler.files["/blob.bin"] = payload
    dest = tmp_path / "blob.bin"
    (tmp_path / "blob.bin.part").write_bytes(payload[:30000])
    sha = hashlib.sha256(payload).hexdigest()
    assert download(f"{url}/blob.bin", dest, f"sha256:{sha}").read_bytes() == payload
    assert handler.ranges == ["bytes=30000-"]
    assert not (tmp_path / "blob.bin.part").exists()
    download(f"{url}/blob.bin", dest, f"sha256:{sha}")  # already there and valid: no request
    assert len(handler.ranges) == 1


def test_checksum_mismatch_deletes_the_file(server, tmp_path):
    url, handler = server
    handler.files["/x.npz"] = b"tampered"
    with pytest.raises(DataError, match="failed its md5 check"):
        download(f"{url}/x.npz", tmp_path / "x.npz", "md5:" + "0" * 32)
    assert not (tmp_path / "x.npz").exists()


def test_fetch_extracts_zip_and_finds_the_layout(server, tmp_path):
    url, handler = server
    data = _zip_of_tree()
    handler.files["/tree.zip"] = data
    info = DatasetInfo(
        name="toy",
        description="toy",
        layout="classes",
        class_names=("alpha", "beta"),
        files=(DownloadFile(f"{url}/tree.zip", "tree.zip", "sha256:" + hashlib.sha256(data).hexdigest(), extract=True),),
        folder_names=("toy", "Blood-master"),
    )
    root = fetch_dataset(info, tmp_path)
    assert root == tmp_path / "toy" / "Blood-master"
    assert len(list((root / "beta").glob("*.jpg"))) == 3
    assert not (tmp_path / "toy" / "downloads").exists()


def test_tar_extraction_and_path_traversal_guard(tmp_path):
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tf:
        info = tarfile.TarInfo("set/a/one.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    extract(good, tmp_path / "out")
    assert (tmp_path / "out" / "set" / "a" / "one.txt").read_bytes() == b"abc"
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(DataError, match="outside"):
        extract(evil, tmp_path / "out2")
    assert not (tmp_path / "escape.txt").exists()


def test_offline_failure_is_one_sentence_with_url_and_folder(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/bloodmnist.npz"
    with pytest.raises(DataError) as err:
        download(url, tmp_path / "bloodmnist" / "bloodmnist.npz", timeout=5)
    message = str(err.value)
    assert url in message and str(tmp_path / "bloodmnist") in message
    assert message.count(". ") == 0 and "\n" not in message


def test_local_only_dataset_cannot_be_fetched(tmp_path):
    with pytest.raises(DataError, match="local only"):
        fetch_dataset("pbc-originals-sample", tmp_path)

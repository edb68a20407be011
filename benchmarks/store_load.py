"""Load test of the sample store: samples counted into it, then concurrent reviewers deciding over HTTP.

1. ``--samples`` samples of ``--photos`` synthetic smear photos each are counted into a new store
   (``bloodcell count``'s workflow, the classical detector, the bundled classifier), timed.
2. ``bloodcell serve --store`` runs on 127.0.0.1; ``--clients`` reviewers sign in (one technician
   each) and make ``--decisions`` relabels between them, all on the same ``--hot`` samples so that
   they collide: each reads the sample, posts its decision with the version it read, and on 409
   reads again and retries. Every POST's latency is recorded.
3. No lost update: every accepted decision is in the store once (a decisions row and an audit
   entry) and raised its sample's version by exactly one. Any 5xx fails the run (exit 1).

The store is a new SQLite file, or ``--store postgresql://...`` (an empty database: nothing is dropped).

    python benchmarks/store_load.py [--store URL] [--out benchmarks/results/store_load-sqlite.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_load import HOST, free_port, wait_ready  # noqa: E402

from bloodcell.inference.predictor import load  # noqa: E402
from bloodcell.provenance import git_commit, now  # noqa: E402
from bloodcell.store.database import open_store  # noqa: E402
from bloodcell.store.models import Decision, Sample  # noqa: E402
from bloodcell.store.users import add_user, user_count  # noqa: E402
from bloodcell.workflows.count import Sample as PhotoSample, count_samples  # noqa: E402

CLASSES = ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil")
PASSWORD = "benchmark-password"


def smear_png(seed: int) -> bytes:
    """A synthetic 640x480 smear photo: 12 red cells and 3 white cells, a shade that differs per photo."""
    rng = random.Random(seed)
    image = Image.new("RGB", (640, 480), (200, 202, 205 - seed % 40))
    draw = ImageDraw.Draw(image)
    for i in range(12):
        x, y = 60 + 110 * (i % 5) + rng.randint(-8, 8), 60 + 110 * (i // 5) + rng.randint(-8, 8)
        draw.ellipse([x - 38, y - 38, x + 38, y + 38], fill=(205, 150, 140))
    for k in range(3):
        x, y = 560, 400 - 150 * k
        draw.ellipse([x - 50, y - 50, x + 50, y + 50], fill=(210, 180, 210))
        draw.ellipse([x - 28, y - 28, x + 28, y + 28], fill=(110, 70, 190))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_samples(root: Path, samples: int, photos: int) -> list[PhotoSample]:
    made = []
    for s in range(samples):
        folder = root / f"LOAD-{s:03d}"
        folder.mkdir(parents=True)
        paths = []
        for p in range(photos):
            path = folder / f"photo{p}.png"
            path.write_bytes(smear_png(s * photos + p))
            paths.append(path)
        made.append(PhotoSample(folder.name, paths))
    return made


def reviewer(url: str, name: str, hot: list[str], decisions: int, seed: int, out: dict, lock: threading.Lock) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=30) as client:
        signed = client.post("/v1/session", json={"name": name, "password": PASSWORD})
        signed.raise_for_status()
        headers = {"X-CSRF-Token": signed.json()["csrf_token"]}
        for _ in range(decisions):
            sample_id = rng.choice(hot)
            while True:
                state = client.get(f"/v1/samples/{sample_id}").json()
                cell = rng.choice([c["id"] for c in state["cells"] if c["label"] == "WBC" and not c["removed"]])
                started = time.perf_counter()
                response = client.post(f"/v1/samples/{sample_id}/decisions", headers=headers,
                                       json={"cell_id": cell, "action": "relabel", "cell_class": rng.choice(CLASSES),
                                             "version": state["version"]})
                elapsed = time.perf_counter() - started
                with lock:
                    out["latencies"].append(elapsed)
                    out["statuses"][response.status_code] += 1
                    if response.status_code == 200:
                        out["accepted"][sample_id] += 1
                if response.status_code != 409:
                    break


def _redacted(argv: list[str]) -> list[str]:
    """The arguments with any database password hidden (the command is kept in the result file)."""
    return [make_url(a).render_as_string(hide_password=True) if "://" in a else a for a in argv]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="postgresql:// URL of an empty database (default: a new SQLite file)")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--photos", type=int, default=5)
    parser.add_argument("--decisions", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--hot", type=int, default=3, help="samples the reviewers all work on (collisions)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "store_load-sqlite.json")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="store-load-"))
    spec = args.store or str(work / "store.sqlite")
    os.environ.setdefault("BLOODCELL_PHOTOS", str(work / "photos"))
    store = open_store(spec)
    with store.session() as session:
        if user_count(session):
            raise SystemExit(f"{store.where}: the benchmark needs an empty store")
        admin = add_user(session, "bench-admin", "admin", PASSWORD, None)
        for c in range(args.clients):
            add_user(session, f"reviewer{c}", "technician", PASSWORD, admin)
    samples = make_samples(work / "samples", args.samples, args.photos)
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    count_samples(samples, work / "counts", load(None), detector="classical", store=store, actor="benchmark")
    count_seconds = time.perf_counter() - started
    with store.session() as session:
        versions_before = {s.sample_id: s.version for s in session.query(Sample)}

    port = free_port()
    url = f"http://{HOST}:{port}"
    env = {**os.environ, "BLOODCELL_NO_PROGRESS": "1"}
    env.pop("BLOODCELL_API_KEY", None)
    server = subprocess.Popen([sys.executable, "-c", "from bloodcell.cli.main import main; main()", "serve", "--host",
                               HOST, "--port", str(port), "--store", spec], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hot = [s.sample_id for s in samples[: args.hot]]
    out = {"latencies": [], "statuses": Counter(), "accepted": Counter()}
    lock = threading.Lock()
    try:
        wait_ready(url, server)
        share = [args.decisions // args.clients + (c < args.decisions % args.clients) for c in range(args.clients)]
        threads = [threading.Thread(target=reviewer, args=(url, f"reviewer{c}", hot, share[c], c, out, lock))
                   for c in range(args.clients)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        review_seconds = time.perf_counter() - began
    finally:
        server.terminate()
        server.wait(timeout=30)

    with store.session() as session:
        versions = {s.sample_id: s.version for s in session.query(Sample)}
        kept = Counter(sample_id for (sample_id,) in session.query(Sample.sample_id).join(
            Decision, Decision.sample_pk == Sample.id))
    lost = {s: {"accepted": out["accepted"][s], "kept": kept[s], "version_rise": versions[s] - versions_before[s]}
            for s in hot if not out["accepted"][s] == kept[s] == versions[s] - versions_before[s]}
    ms = np.array(out["latencies"]) * 1000
    server_errors = {str(k): v for k, v in out["statuses"].items() if k >= 500}
    result = {
        "command": "python benchmarks/store_load.py " + shlex.join(_redacted(argv if argv is not None else sys.argv[1:])),
        "commit": git_commit(), "date": now(),
        "store": "postgresql" if "://" in spec else "sqlite",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_1_5_15_min_before": load_before},
        "count": {"samples": args.samples, "photos_per_sample": args.photos, "detector": "classical",
                  "classifier": "bundled default", "seconds": round(count_seconds, 2),
                  "seconds_per_photo": round(count_seconds / (args.samples * args.photos), 3)},
        "review": {"clients": args.clients, "accepted_decisions": sum(out["accepted"].values()),
                   "hot_samples": args.hot, "posts": len(ms),
                   "status_counts": {str(k): v for k, v in sorted(out["statuses"].items())},
                   "seconds": round(review_seconds, 2),
                   "decision_ms": {"p50": round(float(np.percentile(ms, 50)), 1),
                                   "p95": round(float(np.percentile(ms, 95)), 1),
                                   "max": round(float(ms.max()), 1)}},
        "lost_updates": lost,
        "server_errors": server_errors,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["review"], indent=2))
    return 1 if lost or server_errors or sum(out["accepted"].values()) != args.decisions else 0


if __name__ == "__main__":
    sys.exit(main())

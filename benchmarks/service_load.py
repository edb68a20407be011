"""Load test of ``bloodcell serve`` on loopback: latency percentiles, throughput, status codes.

Starts the real server (``bloodcell serve``, one process) on 127.0.0.1 with the given model,
sends a fixed number of ``POST /v1/classify`` requests (one image each) from an httpx async
client at a fixed concurrency, and writes a JSON result with the command that produced it.
The only 5xx allowed are deliberate 503s (queue full); anything else fails the run (exit 1).

Throughput depends mostly on the server's ``--max-in-flight`` (jobs at once, default 1) times
``--threads`` (torch threads per job, default: torch's own, all cores): ``--threads 1`` with
one job in flight uses one core.

    python benchmarks/service_load.py --model pbc8 --requests 2000 --concurrency 16 --threads 1
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

HOST = "127.0.0.1"  # loopback only, never a remote target


def synthetic_cell_jpeg(size: int = 360, seed: int = 0) -> bytes:
    """A PBC-sized synthetic stained cell (pink background, purple nucleus) as JPEG bytes."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), (232, 205, 210), np.float32) + rng.normal(0, 5, (size, size, 3))
    yy, xx = np.mgrid[:size, :size]
    image[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 5) ** 2] = (110, 50, 140)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    command = [
        sys.executable, "-c", "from bloodcell.cli.main import main; main()", "serve",
        "--host", HOST, "--port", str(port), "--engine", args.engine,
        "--max-in-flight", str(args.max_in_flight), "--max-waiting", str(args.max_waiting),
    ]
    if args.model:
        command += ["--model", args.model]
    if args.threads:
        command += ["--threads", str(args.threads)]
    env = {**os.environ, "BLOODCELL_NO_PROGRESS": "1"}
    env.pop("BLOODCELL_API_KEY", None)
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(url: str, server: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode} before it was ready")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"the server was not ready after {timeout:g} s")


async def run_load(url: str, image: bytes, requests: int, concurrency: int) -> tuple[list[float], Counter, float]:
    latencies: list[float] = []
    statuses: Counter = Counter()
    remaining = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            for _ in remaining:
                start = time.perf_counter()
                try:
                    response = await client.post("/v1/classify", files={"files": ("cell.jpg", image, "image/jpeg")})
                    statuses[response.status_code] += 1
                except httpx.HTTPError as exc:
                    statuses[f"transport:{type(exc).__name__}"] += 1
                latencies.append(time.perf_counter() - start)

        begin = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - begin
    return latencies, statuses, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="bundled model name or checkpoint path (default: the bundled model)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--engine", default="torch", choices=("torch", "onnx"))
    parser.add_argument("--max-in-flight", type=int, default=1)
    parser.add_argument("--max-waiting", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per inference job (default: torch's own)")
    parser.add_argument("--image", type=Path, default=None, help="image to send (default: a synthetic 360x360 cell JPEG)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "service_load.json")
    args = parser.parse_args(argv)

    image = args.image.read_bytes() if args.image else synthetic_cell_jpeg()
    load_before = [round(x, 2) for x in os.getloadavg()]  # other work on the machine skews every figure
    port = free_port()
    url = f"http://{HOST}:{port}"
    server = start_server(args, port)
    try:
        wait_ready(url, server)
        asyncio.run(run_load(url, image, min(50, args.requests), args.concurrency))  # warm-up, not recorded
        latencies, statuses, elapsed = asyncio.run(run_load(url, image, args.requests, args.concurrency))
    finally:
        server.terminate()
        server.wait(timeout=30)

    ok = np.array(latencies) * 1000
    unexpected = {str(k): v for k, v in statuses.items() if not (isinstance(k, int) and (k < 500 or k == 503))}
    result = {
        "command": "python benchmarks/service_load.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": args.model or "bundled default",
        "server": {"engine": args.engine, "max_in_flight": args.max_in_flight, "max_waiting": args.max_waiting,
                   "threads": args.threads, "host": HOST},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_1_5_15_min_before": load_before},
        "image_bytes": len(image),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "status_counts": {str(k): v for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))},
        "unexpected_errors": unexpected,
        "latency_ms": {f"p{q}": round(float(np.percentile(ok, q)), 2) for q in (50, 95, 99)} | {"max": round(float(ok.max()), 2)},
        "throughput_rps": round(args.requests / elapsed, 2),
        "duration_s": round(elapsed, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())

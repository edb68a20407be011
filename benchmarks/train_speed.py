"""Training speed of `bloodcell train` on this machine: training images/s for three models.

Each case is one short ``fit`` (2 epochs by default) on a stratified subset of the real PBC
training split; the decoded-image cache is built when the datasets are created, outside the
timed loop. The figure is the training throughput of the last epoch (forward, backward,
optimizer step, augmentation and data loading; validation excluded). Models at their input
sizes: efficientnet_lite0@128 (pretrained), resnet18@64, asghar2023-cnn@100; for
efficientnet_lite0 it also compares DataLoader workers 0/1 and channels-last on/off.

    python benchmarks/train_speed.py [--manifest pbc-seed0] [--images 256] [--threads 1]

Writes benchmarks/results/train_speed.json with the command, the git commit and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "train_speed.json"

CASES = [
    {"model": "efficientnet_lite0", "input_size": 128, "pretrained": True, "workers": 0, "channels_last": True},
    {"model": "efficientnet_lite0", "input_size": 128, "pretrained": True, "workers": 1, "channels_last": True},
    {"model": "efficientnet_lite0", "input_size": 128, "pretrained": True, "workers": 0, "channels_last": False},
    {"model": "resnet18", "input_size": 64, "pretrained": False, "workers": 0, "channels_last": True},
    {"model": "asghar2023-cnn", "input_size": 100, "pretrained": False, "workers": 0, "channels_last": True},
]


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _dirty() -> bool:
    """True when the working tree has changes not in the commit (the figures then describe those)."""
    try:
        status = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return False
    return bool(status.strip())


def _run(case: dict, args, work: Path, index: int) -> dict:
    import torch

    from bloodcell.train import TrainConfig
    from bloodcell.workflows.train import run_training

    config = TrainConfig(
        model=case["model"], manifest=str(args.manifest), out=str(work / f"run-{index}"),
        pretrained=case["pretrained"], input_size=case["input_size"], epochs=args.epochs, batch_size=args.batch_size,
        augment="flips", threads=args.threads, workers=case["workers"], channels_last=case["channels_last"],
        cache=True, cache_dir=str(work / "cache"), limit_train=args.images, limit_val=32, seed=0,
    )
    torch.set_num_threads(args.threads)  # the library leaves threads to its caller, as the CLI does
    result = run_training(config)
    last = result.history[-1]
    return {
        **case,
        "images_per_epoch": round(last["images_per_s"] * last["seconds"]),
        "train_seconds_last_epoch": round(last["seconds"], 2),
        "images_per_second": round(last["images_per_s"], 2),
        "images_per_second_per_epoch": [round(row["images_per_s"], 2) for row in result.history],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=Path("pbc-seed0"))
    parser.add_argument("--images", type=int, default=256, help="training images per epoch (stratified subset)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("BLOODCELL_NO_PROGRESS", "1")
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="bloodcell-train-speed-") as tmp:
        for index, case in enumerate(CASES):
            results.append(_run(case, args, Path(tmp), index))
            print(json.dumps(results[-1]), flush=True)
    import torch

    doc = {
        "command": "python benchmarks/train_speed.py " + " ".join(sys.argv[1:]),
        "commit": _commit(),
        "uncommitted_changes": _dirty(),
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "images": args.images,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "note": "images_per_second is the training throughput of the last epoch, cache built beforehand",
        "results": results,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()

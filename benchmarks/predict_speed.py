"""Inference speed of `bloodcell predict` on this machine: images/s for torch and ONNX engines.

Measures, in one run and with the same thread count, the bundled model (when present; torch,
ONNX fp32 and ONNX static int8 calibrated on the PBC manifest's validation split), a timm
``resnet50`` at 224x224 and the ``khalil2022-vgg16`` reproduction (random weights are fine
for speed). Each model is timed end to end through ``Classifier.predict`` on real PBC files
(decode + preprocess + model + OOD guard when calibrated), after one warm-up pass, and
also on the model call alone (``model_images_per_second``, preprocessed batches) and, for a
model with a calibrated guard, end to end without it. Each figure is the median of
``--repeats`` passes. The end-to-end passes also give the process's CPU time per image
(``cpu_ms_per_image``, all threads), and the speed-ups are given from it as well: on a shared
machine, the load can change between one model's passes and the next model's, which moves
images/s far more than CPU time.

    python benchmarks/predict_speed.py [--images 512] [--threads 2] [--batch-size 32] [--repeats 3]
        [--engines torch onnx int8] [--models pbc8 resnet50 vgg16]

``--engines``/``--models`` time a part (on a busy machine: ``--engines onnx --models pbc8 resnet50`` gives the
ratio that matters, ONNX end to end against ResNet50 in the same run). The load average before and after
and the process's nice value are recorded, since other work on the machine slows every figure.

Writes benchmarks/results/predict_speed.json with the command and the git commit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "predict_speed.json"


def _pbc_files(limit: int) -> list[Path]:
    from bloodcell.data.images import image_files
    from bloodcell.data.locate import data_home

    folder = data_home() / "pbc"
    files = image_files(folder)
    if not files:
        sys.exit(f"no PBC images under {folder}; set BLOODCELL_DATA")
    step = max(1, len(files) // limit)
    return files[::step][:limit]


def _random_checkpoint(name: str, folder: Path, input_size: int | None) -> Path:
    from bloodcell.checkpoint import CheckpointMeta, save_checkpoint
    from bloodcell.data.taxonomy import get_taxonomy
    from bloodcell.models import create_model

    classes = get_taxonomy("pbc8").class_names
    model = create_model(name, num_classes=len(classes), class_names=classes, input_size=input_size)
    return save_checkpoint(folder / f"{name}.safetensors", model, CheckpointMeta(model_name=name, data_config=model.data_config))


def _rates(run, images: int, repeats: int, cpu: list[float] | None = None) -> list[float]:
    """Images/s of ``repeats`` timed calls of ``run`` (each handles ``images`` images); with ``cpu``, also appends
    each call's CPU time per image in ms (all of this process's threads) to it."""
    rates = []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        rates.append(round(images / (time.perf_counter() - start), 2))
        if cpu is not None:
            cpu.append(round((time.process_time() - start_cpu) / images * 1000, 3))
    return rates


def _time(checkpoint: Path, engine: str, files: list[Path], threads: int, batch_size: int, repeats: int) -> dict:
    """End-to-end and model-only images/s; each figure is the median of ``repeats`` timed passes."""
    from bloodcell.data.images import read_image
    from bloodcell.inference.predictor import load

    classifier = load(checkpoint, engine=engine, num_threads=threads)
    paths = [str(p) for p in files]
    results = classifier.predict(paths, batch_size=batch_size)  # warm-up: also brings the files into the page cache
    cpu: list[float] = []
    end_to_end = _rates(lambda: classifier.predict(paths, batch_size=batch_size), len(paths), repeats, cpu)
    guarded = classifier.guard is not None
    without_guard = None
    if guarded:  # the same runs without the out-of-distribution guard, to show what it costs
        without_guard = _rates(lambda: classifier.predict(paths, batch_size=batch_size, guard=False), len(paths), repeats)
    batch = classifier.preprocess([read_image(p) for p in paths[:batch_size]])
    rounds = max(1, len(paths) // batch_size)

    def model_only():  # as predict runs the model: batches in parallel when the engine allows it
        if getattr(classifier.backend, "concurrent", False):
            with ThreadPoolExecutor(classifier.workers) as pool:
                list(pool.map(lambda _: classifier.backend.run(batch), range(rounds)))
        else:
            for _ in range(rounds):
                classifier.backend.run(batch)

    model = _rates(model_only, rounds * len(batch), repeats)
    return {
        "engine": engine,
        "model_images_per_second": statistics.median(model),
        "images": len(paths),
        "errors": sum(r.error is not None for r in results),
        "images_per_second": statistics.median(end_to_end),
        "images_per_second_runs": end_to_end,
        "cpu_ms_per_image": statistics.median(cpu),
        "input_size": classifier.data_config.input_size,
        "ood_guard": guarded,
        "images_per_second_without_ood_guard": statistics.median(without_guard) if guarded else None,
    }


def _speedups(runs: list[dict], figure: str = "images_per_second", inverse: bool = False) -> dict[str, float]:
    """End-to-end images/s of each bundled-model engine over resnet50 at 224 on each engine (with ``inverse``, the
    ratio of resnet50's ``figure`` to the bundled model's: for CPU time per image)."""
    bundled = {r["engine"]: r[figure] for r in runs if r["model"].startswith("pbc8")}
    resnet = {r["engine"]: r[figure] for r in runs if r["model"].startswith("resnet50")}
    return {f"pbc8 {mine} / resnet50 {theirs}": round(b / a if inverse else a / b, 2)
            for mine, a in bundled.items() for theirs, b in resnet.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per figure; the median is reported")
    parser.add_argument("--engines", nargs="+", choices=("torch", "onnx", "int8"), default=["torch", "onnx", "int8"],
                        help="engines to time (int8: the bundled model's static int8 ONNX export)")
    parser.add_argument("--models", nargs="+", choices=("pbc8", "resnet50", "vgg16"),
                        default=["pbc8", "resnet50", "vgg16"])
    args = parser.parse_args()
    load_before = [round(v, 2) for v in os.getloadavg()]

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("BLOODCELL_NO_PROGRESS", "1")
    from bloodcell.evaluation.evaluate import git_commit
    from bloodcell.weights import WEIGHTS_DIR

    files = _pbc_files(args.images)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        models = []
        bundled = WEIGHTS_DIR / "pbc8.safetensors"
        if bundled.is_file() and "pbc8" in args.models:
            models.append(("pbc8 (bundled)", bundled))
        if "resnet50" in args.models:
            models.append(("resnet50 (timm, 224, random init)", _random_checkpoint("resnet50", Path(tmp), 224)))
        if "vgg16" in args.models:
            models.append(("khalil2022-vgg16 (random init)", _random_checkpoint("khalil2022-vgg16", Path(tmp), None)))
        for label, checkpoint in models:
            for engine in [e for e in ("torch", "onnx") if e in args.engines]:
                run = {"model": label, **_time(checkpoint, engine, files, args.threads, args.batch_size, args.repeats)}
                print(json.dumps(run))
                runs.append(run)
            if checkpoint == bundled and "int8" in args.engines:
                from bloodcell.inference.onnx import export_onnx
                from bloodcell.workflows.calibrate import int8_calibration_batches

                batches = int8_calibration_batches(bundled, "pbc-seed0")
                int8 = export_onnx(bundled, Path(tmp) / "pbc8-int8.onnx", int8=True, calibration=batches)
                run = {"model": label, **_time(int8, "onnx", files, args.threads, args.batch_size, args.repeats),
                       "engine": "onnx int8 (static QDQ)"}
                print(json.dumps(run))
                runs.append(run)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": git_commit() or "unknown",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
                    "torch": torch.__version__, "nice": os.nice(0),
                    "load_average_1_5_15_min": {"before": load_before,
                                                "after": [round(v, 2) for v in os.getloadavg()]}},
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "runs": runs,
        "speedup_vs_resnet50_224": _speedups(runs),
        # the same from CPU time per image, which other work on the machine changes less than wall-clock time
        "speedup_vs_resnet50_224_cpu_time": _speedups(runs, "cpu_ms_per_image", inverse=True),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()

"""Inference speed of `bloodcell predict` on this machine: images/s for torch and ONNX engines.

Measures, in one run and with the same thread count, the bundled model (when present; torch,
ONNX fp32, and its static int8 ONNX as bundled, ``pbc8-int8``), a timm
``resnet50`` at 224x224 and the ``khalil2022-vgg16`` reproduction (random weights are fine
for speed). Each model is timed end to end through ``Classifier.predict`` on real PBC files
(decode + preprocess + model + OOD guard when calibrated), after one warm-up pass, and
also on the model call alone (``model_images_per_second``, preprocessed batches) and, for a
model with a calibrated guard, end to end without it. Each figure is the median of
``--repeats`` passes. The end-to-end passes also give the process's CPU time per image
(``cpu_ms_per_image``, all threads), and the speed-ups are given from it as well.
Torch's own threads are set for each pass as ``bloodcell predict`` sets them (``--threads`` on the torch engine,
one on ONNX: ``bloodcell.inference.predictor.torch_threads``).

The end-to-end passes are taken in rounds: each round times one pass of every model and engine, one after
the other, so that all of them meet the same machine (on this shared VM the speed of a core drifts by 10-20 %
within minutes, with or without other jobs); the speed-ups are the median over rounds of each round's ratio
(``speedup_vs_resnet50_224``), with each round's ratio kept (``..._rounds``).

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
from functools import partial
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


def _rates(run, images: int, repeats: int) -> list[float]:
    """Images/s of ``repeats`` timed calls of ``run`` (each handles ``images`` images)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(round(images / (time.perf_counter() - start), 2))
    return rates


def _timed_pass(run, images: int) -> tuple[float, float]:
    """(images/s, CPU time per image in ms, all of this process's threads) of one call of ``run``."""
    start, start_cpu = time.perf_counter(), time.process_time()
    run()
    return round(images / (time.perf_counter() - start), 2), round((time.process_time() - start_cpu) / images * 1000, 3)


def _prepare(checkpoint: Path, engine: str, files: list[Path], threads: int, batch_size: int,
             repeats: int) -> tuple[dict, dict]:
    """Load a model, warm it up and time the model call alone; returns the run's figures so far and its passes."""
    import torch

    from bloodcell.data.images import read_image
    from bloodcell.inference.predictor import load, torch_threads

    classifier = load(checkpoint, engine=engine, num_threads=threads)
    paths = [str(p) for p in files]
    results = classifier.predict(paths, batch_size=batch_size)  # warm-up: also brings the files into the page cache
    batch = classifier.preprocess([read_image(p) for p in paths[:batch_size]])
    rounds = max(1, len(paths) // batch_size)

    def model_only():  # as predict runs the model: batches in parallel when the engine allows it
        if getattr(classifier.backend, "concurrent", False):
            with ThreadPoolExecutor(classifier.workers) as pool:
                list(pool.map(lambda _: classifier.backend.run(batch), range(rounds)))
        else:
            for _ in range(rounds):
                classifier.backend.run(batch)

    guarded = classifier.guard is not None
    own_threads = torch_threads(engine, threads)

    def predict(**options):  # torch's threads as `bloodcell predict` sets them for this engine
        torch.set_num_threads(own_threads)
        return classifier.predict(paths, batch_size=batch_size, **options)

    passes = {"end_to_end": predict}
    if guarded:  # the same passes without the out-of-distribution guard, to show what it costs
        passes["without_guard"] = partial(predict, guard=False)
    return {
        "engine": engine,
        "model_images_per_second": statistics.median(_rates(model_only, rounds * len(batch), repeats)),
        "images": len(paths),
        "errors": sum(r.error is not None for r in results),
        "input_size": classifier.data_config.input_size,
        "ood_guard": guarded,
    }, passes


def _time_rounds(runs: list[tuple[dict, dict]], repeats: int) -> None:
    """Fill each run's end-to-end figures from ``repeats`` rounds, each timing one pass of every run in turn."""
    for run, _ in runs:
        run.update(images_per_second_runs=[], cpu_ms_per_image_runs=[])
    without: dict[int, list[float]] = {}
    for _ in range(repeats):
        for index, (run, passes) in enumerate(runs):
            rate, cpu = _timed_pass(passes["end_to_end"], run["images"])
            run["images_per_second_runs"].append(rate)
            run["cpu_ms_per_image_runs"].append(cpu)
            if "without_guard" in passes:
                without.setdefault(index, []).append(_timed_pass(passes["without_guard"], run["images"])[0])
    for index, (run, _) in enumerate(runs):
        run["images_per_second"] = statistics.median(run["images_per_second_runs"])
        run["cpu_ms_per_image"] = statistics.median(run["cpu_ms_per_image_runs"])
        run["images_per_second_without_ood_guard"] = statistics.median(without[index]) if index in without else None


def _speedups(runs: list[dict], figure: str = "images_per_second_runs", inverse: bool = False) -> dict:
    """Per pair of a bundled-model engine and a resnet50-at-224 engine: the median over rounds of the bundled model's
    end-to-end images/s over resnet50's in the same round (with ``inverse``, resnet50's ``figure`` over the bundled
    model's: for CPU time per image), and each round's ratio."""
    bundled = {r["engine"]: r[figure] for r in runs if r["model"].startswith("pbc8")}
    resnet = {r["engine"]: r[figure] for r in runs if r["model"].startswith("resnet50")}
    ratios = {f"pbc8 {mine} / resnet50 {theirs}":
              [round(b / a if inverse else a / b, 2) for a, b in zip(mine_runs, theirs_runs)]
              for mine, mine_runs in bundled.items() for theirs, theirs_runs in resnet.items()}
    return {pair: statistics.median(rounds) for pair, rounds in ratios.items()}, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed passes per figure (end to end: rounds of one pass of every model); the median is reported")
    parser.add_argument("--engines", nargs="+", choices=("torch", "onnx", "int8"), default=["torch", "onnx", "int8"],
                        help="engines to time (int8: the bundled pbc8-int8, the bundled model's static int8 ONNX export)")
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
    prepared = []
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
                run, passes = _prepare(checkpoint, engine, files, args.threads, args.batch_size, args.repeats)
                prepared.append(({"model": label, **run}, passes))
            if checkpoint == bundled and "int8" in args.engines:
                int8 = WEIGHTS_DIR / "pbc8-int8.onnx"
                if not int8.is_file():
                    sys.exit(f"{int8} is missing: the int8 engine times the bundled pbc8-int8")
                run, passes = _prepare(int8, "onnx", files, args.threads, args.batch_size, args.repeats)
                prepared.append(({"model": label, **run, "engine": "onnx int8 (bundled pbc8-int8)"}, passes))
        _time_rounds(prepared, args.repeats)
    runs = [run for run, _ in prepared]
    for run in runs:
        print(json.dumps(run))
    speedups, speedup_rounds = _speedups(runs)
    cpu_speedups, cpu_speedup_rounds = _speedups(runs, "cpu_ms_per_image_runs", inverse=True)
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
        "speedup_vs_resnet50_224": speedups,
        "speedup_vs_resnet50_224_rounds": speedup_rounds,
        # the same from CPU time per image
        "speedup_vs_resnet50_224_cpu_time": cpu_speedups,
        "speedup_vs_resnet50_224_cpu_time_rounds": cpu_speedup_rounds,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()

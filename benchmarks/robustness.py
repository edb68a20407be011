"""Robustness of a checkpoint to other labs' images: magnification, stain, camera, file format.

Scores the checkpoint on (1) a stratified subset of the manifest's TEST split (``--split val``
scores the validation split instead, for choosing between candidates), (2) the same
images under each deterministic perturbation of ``bloodcell.evaluation.perturbations.PERTURBATIONS``
(applied to the decoded image before the model's preprocessing), (3) the untouched PBC
originals (``pbc_originals_sample``, each labelled as its manifest row) of that split's images,
plain and with TTA, and (4) white cells cropped from BCCD smears (another microscope and stain)
with 1.3x and 2x the box as context. Labels are the model's: pbc8's classes or pbc11's finer ones;
a pbc11 model is not scored on BCCD, whose types are pbc8 classes.

    python benchmarks/robustness.py --model CKPT --manifest pbc-seed0 [--limit 800]
        [--out benchmarks/results/robustness-NAME.json] [--threads 1]

Data comes from ``BLOODCELL_DATA`` (or --data-root). Writes the JSON with the command, the
checkpoint's and manifest's sha256, the git commit and the date, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def print_table(result: dict) -> None:
    """A compact Rich table: one row per section."""
    from rich.console import Console
    from rich.table import Table

    split = result.get("split", "test")
    clean = result[f"{split}_split"]["clean"]["accuracy"]
    table = Table(title=f"Robustness of {Path(result['checkpoint']).name}")
    for column in ("section", "N", "accuracy", "Δ vs clean", "macro-F1", "changed", "s"):
        table.add_column(column, justify="left" if column == "section" else "right", no_wrap=column == "section")

    def row(name: str, s: dict, delta: bool = True) -> None:
        table.add_row(name, str(s["n"]), _pct(s["accuracy"]),
                      f"{100 * (s['accuracy'] - clean):+.1f}" if delta else "",
                      _pct(s["macro_f1"]), str(s.get("changed_predictions", "")), f"{s['seconds']:.1f}")

    for name, section in result[f"{split}_split"].items():
        row(f"{split} {name}", section, delta=name != "clean")
    if result["originals"]:
        row(f"PBC originals of the {split} split", result["originals"])
        row("  the same with --tta", result["originals"]["tta"])
    for name, section in (result["cross_lab"] or {}).items():
        row(name, section)
    Console().print(table)
    for name, section in (result["cross_lab"] or {}).items():
        recall = ", ".join(f"{k} {_pct(v)}" for k, v in section["recall"].items())
        Console().print(f"[bold]{name}[/] recall: {recall}")
        for true, predicted in section["predicted_as"].items():
            Console().print(f"  {true} -> " + ", ".join(f"{k} {v}" for k, v in predicted.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint (.safetensors)")
    parser.add_argument("--manifest", required=True, help="manifest CSV whose test split is scored")
    parser.add_argument("--limit", type=int, default=800, help="stratified subset size (0 = all)")
    parser.add_argument("--split", default="test", choices=("test", "val"),
                        help="split to score: test for the record, val for choosing between candidates")
    parser.add_argument("--data-root", default=None, help="datasets folder (default: BLOODCELL_DATA)")
    parser.add_argument("--originals", default=None, help="root/<class>/<image> folder of untouched originals")
    parser.add_argument("--no-bccd", action="store_true", help="skip the BCCD white cells (scored when the dataset is found and the model has pbc8's classes)")
    parser.add_argument("--out", default=None, help="result JSON (default benchmarks/results/robustness-<model>.json)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    import torch

    from bloodcell.data.locate import data_home, find_dataset_root
    from bloodcell.errors import BloodcellError
    from bloodcell.log import configure
    from bloodcell.workflows.robustness import run_robustness

    configure()
    torch.set_num_threads(args.threads)
    try:
        originals = Path(args.originals) if args.originals else data_home(args.data_root) / "pbc_originals_sample"
        bccd = not args.no_bccd and find_dataset_root("bccd", args.data_root) is not None
        start = time.perf_counter()
        result = run_robustness(
            args.model, args.manifest, limit=args.limit or None, split=args.split, data_root=args.data_root,
            originals=originals if originals.is_dir() else None, bccd=bccd, batch_size=args.batch_size,
        )
    except BloodcellError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result["command"] = shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else \
        shlex.join(["benchmarks/robustness.py", *argv])
    result["threads"] = args.threads
    result["total_seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"robustness-{Path(args.model).parent.name or Path(args.model).stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    print_table(result)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How well a classifier types the main white cell of BCCD's held-out smears (another lab), optionally
recorded in the checkpoint so that `bloodcell count` reports it with every differential.

    python benchmarks/bccd_wbc_typing.py CKPT [--record] [--tta] [--out RESULT.json]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="bundled name or .safetensors")
    parser.add_argument("--record", action="store_true", help="store the held-out accuracy in the checkpoint")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bccd_wbc_typing.json"))
    args = parser.parse_args(argv)
    import torch

    from bloodcell.provenance import git_commit, machine, now
    from bloodcell.workflows.typing_records import measure_typing, record_typing

    torch.set_num_threads(args.threads)
    scores = measure_typing(args.checkpoint, args.data_root, tta=args.tta)
    if args.record:
        record_typing(args.checkpoint, scores)
    result = {"command": shlex.join(["python", "benchmarks/bccd_wbc_typing.py", *(argv or sys.argv[1:])]),
              "commit": git_commit(), "date": now(), "machine": machine(), "checkpoint": Path(args.checkpoint).name,
              "recorded": args.record, **scores}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"held-out BCCD smears: {scores['direct_accuracy_held_out']:.1%} of {scores['held_out']} typed right "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

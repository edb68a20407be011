"""Copy what ``bloodcell reproduce`` produced into ``results/reproduction/`` for committing.

``bloodcell reproduce all --output RUNS --report`` trains for many hours and resumes after each stop;
its folder (runs, checkpoints, the data it built) stays outside the repository. This keeps the part
worth committing, and can run while trainings are still going:

- each finished ``RUNS/NAME/reproduction.json`` as ``results/reproduction/NAME.json``;
- each training's learning curve so far (``metrics.csv``, ``curves.png``) as
  ``results/reproduction/curves/NAME-PROTOCOL.{csv,png}``, finished or not;
- ``reproductions.md`` and ``report.html`` made again from the finished ones.

    python benchmarks/collect_reproductions.py RUNS
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from bloodcell.workflows.reproduce import RESULT_FILE, write_report_page, write_summary

RESULTS = Path(__file__).resolve().parent / "results" / "reproduction"


def collect(runs: Path, results: Path = RESULTS) -> list[str]:
    """Copy ``runs``' finished records and every training's curve into ``results``; the names copied."""
    (results / "curves").mkdir(parents=True, exist_ok=True)
    done = []
    for record in sorted(runs.glob(f"*/{RESULT_FILE}")):
        name = record.parent.name
        shutil.copyfile(record, results / f"{name}.json")
        done.append(name)
    for metrics in sorted(runs.glob("*/*/run/metrics.csv")):
        name, protocol = metrics.parts[-4], metrics.parts[-3]
        shutil.copyfile(metrics, results / "curves" / f"{name}-{protocol}.csv")
        if (metrics.parent / "curves.png").is_file():
            shutil.copyfile(metrics.parent / "curves.png", results / "curves" / f"{name}-{protocol}.png")
    # the summary pages are made where the runs are (the figures are read from there), then copied
    for page in (write_summary(runs), write_report_page(runs)):
        shutil.copyfile(page, results / page.name)
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the --output folder of 'bloodcell reproduce'")
    args = parser.parse_args()
    done = collect(args.runs)
    print(json.dumps({"finished": done, "results": str(RESULTS)}, indent=2))


if __name__ == "__main__":
    main()

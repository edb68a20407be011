"""Start-up cost of the ``bloodcell`` command: wall time and peak memory of every ``--help``, of usage
errors and of ``models list`` (none of them may import torch; target: under 0.5 s and 150 MB each).

Each run is a fresh ``python -m bloodcell ...`` process started by a small wrapper process, so that the
wrapper's ``resource.getrusage(RUSAGE_CHILDREN)`` gives the peak resident memory (``ru_maxrss``) and the
CPU time (user + system) of that one run. Median wall and CPU time and largest peak memory over --repeats
runs per command line. On a shared machine the wall time also holds the time spent waiting for a core
(the load average is recorded); the CPU time is what the command itself costs.

    python benchmarks/cli_start.py [--repeats 5] [--out RESULT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"seconds": 0.5, "peak_rss_mb": 150.0}
#: Command lines that must be refused at parsing (exit code 2), before any work.
USAGE_ERRORS = (["predict"], ["count", "--no-such-option"], ["train", "--epochs", "many"])
ONE_RUN = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"code": code, "seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                  "peak_rss_mb": usage.ru_maxrss / 1024}))
"""


def command_lines() -> list[list[str]]:
    """``--help`` of the top level, of every command and every sub-command; the usage errors; ``models list``."""
    from bloodcell.cli.main import COMMANDS, load_command

    lines = [["--help"]]
    for name in COMMANDS:
        lines.append([name, "--help"])
        command = load_command(name)
        if hasattr(command, "list_commands"):
            lines += [[name, sub, "--help"] for sub in command.list_commands(None)]
    return lines + [list(args) for args in USAGE_ERRORS] + [["models", "list"]]


def measure(args: list[str], repeats: int) -> dict:
    env = {**os.environ, "BLOODCELL_NO_PROGRESS": "1", "COLUMNS": "100"}
    runs = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", ONE_RUN, sys.executable, "-m", "bloodcell", *args],
                              capture_output=True, text=True, env=env, check=True)
        runs.append(json.loads(done.stdout))
    seconds = statistics.median(r["seconds"] for r in runs)
    cpu = statistics.median(r["cpu_seconds"] for r in runs)
    peak = max(r["peak_rss_mb"] for r in runs)
    return {"args": shlex.join(["bloodcell", *args]), "exit_code": runs[0]["code"], "median_seconds": round(seconds, 3),
            "median_cpu_seconds": round(cpu, 3), "peak_rss_mb": round(peak, 1),
            "within_targets": seconds < TARGETS["seconds"] and peak < TARGETS["peak_rss_mb"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command line (median time, largest memory)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "cli_start.json"))
    args = parser.parse_args(argv)
    from bloodcell.provenance import git_commit, machine, now

    rows = [measure(line, args.repeats) for line in command_lines()]
    bad_codes = [r["args"] for r in rows if r["exit_code"] != (2 if r["args"].split()[1:] in map(list, USAGE_ERRORS) else 0)]
    result = {"command": shlex.join(["python", "benchmarks/cli_start.py", *(argv if argv is not None else sys.argv[1:])]),
              "commit": git_commit(), "date": now(), "machine": machine(), "repeats": args.repeats,
              "targets": TARGETS, "slowest_seconds": max(r["median_seconds"] for r in rows),
              "slowest_cpu_seconds": max(r["median_cpu_seconds"] for r in rows),
              "largest_peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
              "all_within_targets": all(r["within_targets"] for r in rows), "unexpected_exit_codes": bad_codes,
              "runs": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(rows)} command lines: slowest {result['slowest_seconds']} s ({result['slowest_cpu_seconds']} s of CPU), "
          f"largest {result['largest_peak_rss_mb']} MB, "
          f"all within targets: {result['all_within_targets']} -> {args.out}")
    return 1 if bad_codes else 0


if __name__ == "__main__":
    sys.exit(main())

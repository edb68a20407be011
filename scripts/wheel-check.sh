#!/usr/bin/env bash
# The wheel works anywhere: build it, install it into a fresh virtual environment outside the repository and
# run the README's `evaluate` (on 16 images) and `reproduce --help` from another folder.
#
# Usage: scripts/wheel-check.sh [BASE_VENV]   (default: the repository's .venv that `make install` builds)
#
# The fresh environment gets the wheel and nothing else of bloodcell; its dependencies (6.6 GB, torch with
# its CUDA libraries) are not installed a second time but read from BASE_VENV's site-packages through a
# path file. A path file adds that one folder to sys.path without running the path files inside it, so the
# base's editable install of bloodcell (a path file naming the source tree) stays inactive: bloodcell, its
# modules and its data can only come from the wheel, and the check fails if the wheel lacks any of them.
# `pip check` then confirms that the wheel's declared requirements are met by what is installed.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
base="${1:-$repo/.venv}"
if [ ! -x "$base/bin/python" ]; then
  echo "wheel-check: no Python environment at $base (run 'make install' first, or pass BASE_VENV)" >&2
  exit 1
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/bloodcell-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
step() { echo "wheel-check [$((SECONDS - start)) s]: $*"; }

step "building the wheel from the tracked files"
mkdir "$work/source"
git -C "$repo" ls-files -z | tar -C "$repo" --null --ignore-failed-read -T - -cf - | tar -C "$work/source" -xf -
"$base/bin/python" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$work/dist" "$work/source"
wheel=("$work"/dist/bloodcell-*.whl)

step "installing $(basename "${wheel[0]}") into a fresh environment"
"$base/bin/python" -m venv --without-pip "$work/venv"  # pip too comes from the base (no older copy shadowing it)
site="$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
"$base/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))' > "$site/bloodcell-dependencies.pth"
"$work/venv/bin/python" -m pip install --quiet --no-deps --no-index "${wheel[0]}"
"$work/venv/bin/python" -m pip check

mkdir "$work/elsewhere"
cd "$work/elsewhere"
unset PYTHONPATH
"$work/venv/bin/python" - "$site" "$repo" "$(cat "$site/bloodcell-dependencies.pth")" <<'EOF'
import sys
from pathlib import Path

import bloodcell

site, repo, deps = (Path(arg).resolve() for arg in sys.argv[1:4])
assert Path(bloodcell.__file__).resolve().is_relative_to(site), f"bloodcell imported from {bloodcell.__file__}"
others = [p for p in sys.path if p and (Path(p) / "bloodcell").is_dir() and Path(p).resolve() != site]
assert not others, f"another bloodcell is on sys.path: {others}"
# the base environment may live inside the repository (.venv): only its site-packages may be on the path
inside = [p for p in sys.path if p and Path(p).resolve().is_relative_to(repo) and Path(p).resolve() != deps]
assert not inside, f"the source tree is on sys.path: {inside}"
EOF

step "bloodcell evaluate --model pbc8 --manifest pbc-seed0 --limit 16 (from $PWD)"
"$work/venv/bin/bloodcell" evaluate --model pbc8 --manifest pbc-seed0 --limit 16 --n-boot 100 --output report
test -s report/metrics.json && test -s report/report.html

step "bloodcell reproduce --help"
"$work/venv/bin/bloodcell" reproduce --help > reproduce-help.txt
grep -q "pbc-seed0" reproduce-help.txt

step "passed"

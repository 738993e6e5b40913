#!/usr/bin/env bash
# Builds the lm-eval runtime for tests/integration/test_lmeval.py:
#   bash .ci/env/lmeval.sh DIR   ->   EVOPRESS_LMEVAL_PYTHON=DIR/bin/python
# A fresh virtual environment from the package registry, nothing cached, with this repository
# installed (not editable: the test then sees the package data a user's wheel carries) and its
# `eval` extra, so that `evopress eval --tasks` runs there as a user runs it.
set -euo pipefail
DIR=${1:?usage: $0 DIR}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
TORCH_VERSION=2.13.0   # served as the CPU build here; any other spec pulls gigabytes of CUDA wheels

# Fresh every time, but never over a folder that is not an environment (DIR is wiped).
if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ] && [ ! -f "$DIR/pyvenv.cfg" ]; then
    echo "lmeval env: $DIR exists and is not a virtual environment: give a new path" >&2
    exit 2
fi
python3 -m venv --clear "$DIR"
PIP=("$DIR/bin/python" -m pip --no-cache-dir --disable-pip-version-check -qq)  # -qq: errors only
echo "lmeval env: pip"
"${PIP[@]}" install --upgrade pip
echo "lmeval env: torch $TORCH_VERSION (CPU)"
"${PIP[@]}" install "torch==$TORCH_VERSION"
# The constraint keeps lm-eval's own torch requirement (through accelerate and peft) from replacing
# the CPU build: if a range excluded this torch, pip would fail here instead of pulling CUDA wheels.
echo "torch==$TORCH_VERSION" > "$DIR/constraints.txt"
# Built from a copy, so that setuptools' build/ and egg-info folders never land in the work tree.
SRC=$(mktemp -d)
trap 'rm -rf "$SRC"' EXIT
cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/src" "$SRC/"
echo "lmeval env: evopress[eval] from $REPO"
"${PIP[@]}" install -c "$DIR/constraints.txt" "$SRC[eval]"

"$DIR/bin/python" -m pip list --format=freeze --disable-pip-version-check 2>/dev/null | grep -iE '^(torch|lm[_-]eval|transformers|datasets|evopress)=' || true
"$DIR/bin/python" - "$TORCH_VERSION" <<'PY'
import sys
from importlib.metadata import distributions

import lm_eval
import torch

# The CPU build and no CUDA runtime beside it: a CUDA wheel here means the pin did not hold.
assert torch.__version__.split("+")[0] == sys.argv[1] and torch.version.cuda is None, torch.__version__
names = {d.metadata["Name"].lower() for d in distributions()}
cuda = sorted(n for n in names if (n.startswith("nvidia-") and n != "nvidia-ml-py") or n == "triton")
assert not cuda, f"CUDA packages were installed: {cuda}"
from evopress.tasks import folder_tasks, suite_dir  # the shipped suite came with the package

print("lmeval env: ready: lm-eval", lm_eval.__version__, "| torch", torch.__version__,
      "| zoo suite:", ", ".join(folder_tasks(suite_dir("zoo"))))
PY

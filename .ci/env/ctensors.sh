#!/usr/bin/env bash
# Builds the compressed-tensors runtime for tests/integration/test_compressed.py:
#   bash .ci/env/ctensors.sh DIR   ->   EVOPRESS_CTENSORS_PYTHON=DIR/bin/python
# A fresh virtual environment from the package registry, nothing cached: the newest transformers
# and compressed-tensors, and this repository installed (not editable: the test sees what a
# user's wheel carries) with pytest, so that the unit tests needing compressed-tensors run there
# too. The oldest supported transformers (pyproject's lower bound) goes into DIR/transformers-oldest
# with the dependencies it pins (huggingface-hub < 2, ...; not torch, which it does not require): a
# script that puts that folder first on sys.path loads with that release and this torch.
set -euo pipefail
DIR=${1:?usage: $0 DIR}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CT_SPEC=${CT_SPEC:-compressed-tensors}   # the newest release
TORCH_VERSION=2.13.0   # served as the CPU build here; any other spec pulls gigabytes of CUDA wheels

# Fresh every time, but never over a folder that is not an environment (DIR is wiped).
if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ] && [ ! -f "$DIR/pyvenv.cfg" ]; then
    echo "ctensors env: $DIR exists and is not a virtual environment: give a new path" >&2
    exit 2
fi
python3 -m venv --clear "$DIR"
PIP=("$DIR/bin/python" -m pip --no-cache-dir --disable-pip-version-check -qq)  # -qq: errors only
echo "ctensors env: pip"
"${PIP[@]}" install --upgrade pip
echo "ctensors env: torch $TORCH_VERSION (CPU)"
"${PIP[@]}" install "torch==$TORCH_VERSION"
# The constraint keeps compressed-tensors' own torch requirement from replacing the CPU build.
echo "torch==$TORCH_VERSION" > "$DIR/constraints.txt"
# Built from a copy, so that setuptools' build/ and egg-info folders never land in the work tree.
SRC=$(mktemp -d)
trap 'rm -rf "$SRC"' EXIT
cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/src" "$SRC/"
echo "ctensors env: evopress[dev] from $REPO and $CT_SPEC"
"${PIP[@]}" install -c "$DIR/constraints.txt" "$SRC[dev]" "$CT_SPEC"
OLDEST=$(python3 -c "import re, tomllib; deps = tomllib.load(open('$REPO/pyproject.toml', 'rb'))['project']['dependencies']; print(next(re.search(r'>=([0-9.]+)', d).group(1) for d in deps if d.startswith('transformers')))")
echo "ctensors env: transformers $OLDEST beside it, in $DIR/transformers-oldest"
"${PIP[@]}" install --target "$DIR/transformers-oldest" "transformers==$OLDEST"

"$DIR/bin/python" -m pip list --format=freeze --disable-pip-version-check 2>/dev/null | grep -iE '^(torch|compressed[_-]tensors|transformers|evopress)=' || true
"$DIR/bin/python" - "$TORCH_VERSION" "$DIR/transformers-oldest" "$OLDEST" <<'PY'
import subprocess, sys
from importlib.metadata import distributions

import compressed_tensors
import torch
import transformers
from packaging.version import Version

# The CPU build and no CUDA runtime beside it: a CUDA wheel here means the pin did not hold.
assert torch.__version__.split("+")[0] == sys.argv[1] and torch.version.cuda is None, torch.__version__
names = {d.metadata["Name"].lower() for d in distributions()}
cuda = sorted(n for n in names if (n.startswith("nvidia-") and n != "nvidia-ml-py") or n == "triton")
assert not cuda, f"CUDA packages were installed: {cuda}"
import evopress.export.compressed  # noqa: F401  the exporter came with the package

oldest = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {sys.argv[2]!r}); "
                         "import transformers; print(transformers.__version__)"],
                        capture_output=True, text=True, check=True).stdout.strip()
assert Version(oldest) == Version(sys.argv[3]), (oldest, sys.argv[3])
print("ctensors env: ready: compressed-tensors", compressed_tensors.__version__, "| transformers",
      transformers.__version__, "and", oldest, "| torch", torch.__version__)
PY

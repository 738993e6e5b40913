#!/usr/bin/env bash
# Builds the GPTQModel runtime for tests/integration/test_gptqmodel.py:
#   bash .ci/env/gptqmodel.sh DIR   ->   EVOPRESS_GPTQMODEL_PYTHON=DIR/bin/python
# A fresh virtual environment from the package registry, nothing cached. evopress itself is not
# installed: the test hands the environment only files (the exported model, token ids).
set -euo pipefail
DIR=${1:?usage: $0 DIR}
GPTQMODEL_SPEC=${GPTQMODEL_SPEC:-gptqmodel==7.*}   # the current release line
# optimum too: stock transformers loads GPTQ checkpoints only through it (and GPTQModel), and the
# test records what that path does with a mixed-bit export.
OPTIMUM_SPEC=${OPTIMUM_SPEC:-optimum==2.*}
TORCH_VERSION=2.13.0   # served as the CPU build here; any other spec pulls gigabytes of CUDA wheels

# Fresh every time, but never over a folder that is not an environment (DIR is wiped).
if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ] && [ ! -f "$DIR/pyvenv.cfg" ]; then
    echo "gptqmodel env: $DIR exists and is not a virtual environment: give a new path" >&2
    exit 2
fi
python3 -m venv --clear "$DIR"
PIP=("$DIR/bin/python" -m pip --no-cache-dir --disable-pip-version-check -qq)  # -qq: errors only
echo "gptqmodel env: pip"
"${PIP[@]}" install --upgrade pip
echo "gptqmodel env: torch $TORCH_VERSION (CPU)"
"${PIP[@]}" install "torch==$TORCH_VERSION"
# The constraint keeps GPTQModel's own torch requirement from replacing the CPU build: if its
# range excludes this torch, pip fails here instead of pulling a CUDA build.
echo "torch==$TORCH_VERSION" > "$DIR/constraints.txt"
# The wheel builds no CUDA extension here (no CUDA toolkit); GPTQModel compiles its CPU kernels
# on first use, or falls back to plain torch ones.
echo "gptqmodel env: $GPTQMODEL_SPEC, $OPTIMUM_SPEC"
"${PIP[@]}" install -c "$DIR/constraints.txt" "$GPTQMODEL_SPEC" "$OPTIMUM_SPEC"

"$DIR/bin/python" -m pip list --format=freeze --disable-pip-version-check 2>/dev/null \
    | grep -iE '^(torch|gptqmodel|transformers|optimum|safetensors)=' || true
"$DIR/bin/python" - "$TORCH_VERSION" <<'PY'
import sys
from importlib.metadata import distributions

import torch

# The CPU build and no CUDA runtime beside it: a CUDA wheel here means the pin did not hold.
assert torch.__version__.split("+")[0] == sys.argv[1] and torch.version.cuda is None, torch.__version__
names = {d.metadata["Name"].lower() for d in distributions()}
cuda = sorted(n for n in names if (n.startswith("nvidia-") and n != "nvidia-ml-py") or n == "triton")
assert not cuda, f"CUDA packages were installed: {cuda}"
import gptqmodel
import optimum.gptq  # noqa: F401  transformers' GPTQ path
import transformers
from importlib.metadata import version

print("gptqmodel env: ready: gptqmodel", gptqmodel.__version__, "| optimum", version("optimum"),
      "| transformers", transformers.__version__, "| torch", torch.__version__)
PY

#!/usr/bin/env bash
# Builds the llm-compressor runtime for tests/integration/test_llmcompressor.py:
#   bash .ci/env/llmcompressor.sh DIR   ->   EVOPRESS_LLMCOMPRESSOR_PYTHON=DIR/bin/python
# A fresh virtual environment from the package registry, nothing cached. evopress itself is not
# installed: the test hands the environment only files (model, recipe, token ids).
set -euo pipefail
DIR=${1:?usage: $0 DIR}
LLMC_SPEC=${LLMC_SPEC:-llmcompressor==0.14.*}   # the current release line
TORCH_VERSION=2.13.0   # served as the CPU build here; any other spec pulls gigabytes of CUDA wheels

# Fresh every time, but never over a folder that is not an environment (DIR is wiped).
if [ -e "$DIR" ] && [ ! -f "$DIR/pyvenv.cfg" ]; then
    echo "$DIR exists and is not a virtual environment: give a new path" >&2
    exit 2
fi
python3 -m venv --clear "$DIR"
PIP=("$DIR/bin/python" -m pip --no-cache-dir --disable-pip-version-check)
"${PIP[@]}" install --quiet --upgrade pip
"${PIP[@]}" install --quiet "torch==$TORCH_VERSION"
# The constraint keeps llm-compressor's own torch requirement from replacing the CPU build: if its
# range excludes this torch, pip fails here instead of pulling a CUDA build.
echo "torch==$TORCH_VERSION" > "$DIR/constraints.txt"
"${PIP[@]}" install --quiet -c "$DIR/constraints.txt" "$LLMC_SPEC"

"${PIP[@]}" list --format=freeze | grep -iE '^(torch|llmcompressor|compressed-tensors|transformers|datasets)=' || true
"$DIR/bin/python" - "$TORCH_VERSION" <<'PY'
import sys, torch, llmcompressor
# The CPU build and no CUDA runtime beside it: a CUDA wheel here means the pin did not hold.
# (nvidia-ml-py, which llm-compressor requires, is only the NVML bindings, a few hundred kB.)
assert torch.__version__.split("+")[0] == sys.argv[1] and torch.version.cuda is None, torch.__version__
from importlib.metadata import distributions
names = {d.metadata["Name"].lower() for d in distributions()}
cuda = sorted(n for n in names if (n.startswith("nvidia-") and n != "nvidia-ml-py") or n == "triton")
assert not cuda, f"CUDA packages were installed: {cuda}"
print("llmcompressor", llmcompressor.__version__, "on torch", torch.__version__)
PY

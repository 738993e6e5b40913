#!/usr/bin/env bash
# Builds the llama.cpp runtime for tests/integration/test_gguf.py and the GGUF unit tests:
#   bash .ci/env/llamacpp.sh DIR   ->   EVOPRESS_LLAMACPP_PYTHON=DIR/bin/python
# A fresh virtual environment from the package registry, nothing cached: llama-cpp-python, which
# the registry serves as a source distribution only, so llama.cpp is compiled here (about 15
# minutes on 2 cores; started first by .ci/run, so it builds while the unit tier runs), and this
# repository with its gguf extra and pytest (not editable: the tests see what a user's wheel
# carries). The GGUF level family quantizes with the library this build makes.
set -euo pipefail
DIR=${1:?usage: $0 DIR}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
LLAMACPP_SPEC=${LLAMACPP_SPEC:-llama-cpp-python==0.3.*}
TORCH_VERSION=2.13.0   # served as the CPU build here; any other spec pulls gigabytes of CUDA wheels

# Fresh every time, but never over a folder that is not an environment (DIR is wiped).
if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ] && [ ! -f "$DIR/pyvenv.cfg" ]; then
    echo "llamacpp env: $DIR exists and is not a virtual environment: give a new path" >&2
    exit 2
fi
python3 -m venv --clear "$DIR"
PIP=("$DIR/bin/python" -m pip --no-cache-dir --disable-pip-version-check -qq)  # -qq: errors only
echo "llamacpp env: pip"
"${PIP[@]}" install --upgrade pip
# Only the library: no server, tools, tests or multimodal code, which would double the build.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
echo "llamacpp env: $LLAMACPP_SPEC (compiles llama.cpp)"
"${PIP[@]}" install "$LLAMACPP_SPEC"
echo "llamacpp env: torch $TORCH_VERSION (CPU)"
"${PIP[@]}" install "torch==$TORCH_VERSION"
echo "torch==$TORCH_VERSION" > "$DIR/constraints.txt"
SRC=$(mktemp -d)
trap 'rm -rf "$SRC"' EXIT
cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/src" "$SRC/"
echo "llamacpp env: evopress[dev,gguf] from $REPO"
"${PIP[@]}" install -c "$DIR/constraints.txt" "$SRC[dev,gguf]"

"$DIR/bin/python" -m pip list --format=freeze --disable-pip-version-check 2>/dev/null \
    | grep -iE '^(torch|llama[_-]cpp[_-]python|gguf|transformers|evopress)=' || true
"$DIR/bin/python" - "$TORCH_VERSION" <<'PY'
import sys
from importlib.metadata import distributions, version

import torch

assert torch.__version__.split("+")[0] == sys.argv[1] and torch.version.cuda is None, torch.__version__
names = {d.metadata["Name"].lower() for d in distributions()}
cuda = sorted(n for n in names if (n.startswith("nvidia-") and n != "nvidia-ml-py") or n == "triton")
assert not cuda, f"CUDA packages were installed: {cuda}"
import llama_cpp  # noqa: F401  the compiled library loads

print("llamacpp env: ready: llama-cpp-python", version("llama_cpp_python"), "| gguf", version("gguf"),
      "| torch", torch.__version__)
PY

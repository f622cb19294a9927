#!/usr/bin/env bash
# Set up .venv with the dev extra and run the test suite (GPU/TensorRT tests skip with a reason
# where there is no GPU; slow tests are opt-in with `-m slow`). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${GENMASK_SKIP_SETUP:-0}" = "1" ] || bash scripts/setup.sh dev
exec .venv/bin/python -m pytest -q "$@"

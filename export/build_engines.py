#!/usr/bin/env python
"""Build GenMask engines: ONNX fp32/fp16/int8 (+ TensorRT plans where available) and a manifest.

    python export/build_engines.py                       # demo checkpoint -> engines/demo
    python export/build_engines.py --checkpoint DIR --out engines/mine --precisions fp16,int8

All logic lives in genmask_sdk (cli/build.py parses the arguments, each family's export/ folder builds); see --help.
"""

import sys

from genmask_sdk.cli.build import main

if __name__ == "__main__":
    sys.exit(main())

"""Family-agnostic export machinery (torch + onnx; never imports a family): ONNX I/O and graph
signatures (``onnx_io``), the fp16 (``fp16``), Q/DQ (``qdq``, ``modelopt_calib``, ``quantize``),
dynamic-int8 (``quantize_dynamic``) and ONNX Runtime fusion (``ort_fusions``) passes, TensorRT plans
(``tensorrt_build``, ``tensorrt_steps``), all-or-nothing builds (``staging``), manifest writing
(``manifest``) and fidelity checks (``fidelity``).

Each family's build recipe uses these from its own ``export/`` folder:
``genmask_sdk.families.genmask.export.build.build_engines`` and
``genmask_sdk.families.gen2seg.export.build.build_gen2seg_engines`` (both also ``genmask_sdk.build_engines`` /
``genmask_sdk.build_gen2seg_engines``); the command line is ``genmask build`` / ``python export/build_engines.py``.
"""

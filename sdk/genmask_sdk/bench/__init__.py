"""Benchmark building blocks used by ``benchmarks/latency.py`` and ``benchmarks/accuracy.py``.

* ``stats``   — timing loops and p50/p90/p99 summaries;
* ``flops``   — analytic FLOP counts of each stage from a ``GenMaskConfig`` (formulas in docstrings);
* ``system``  — hardware and tool versions, GEMM peak, host/device peak memory;
* ``targets`` — the backends a benchmark can run (PyTorch eager / torch.compile, ONNX Runtime,
  TensorRT) behind one stage interface, each either opened or skipped with its reason;
* ``latency`` / ``accuracy`` — the two benchmarks (the scripts only parse arguments);
* ``report``  — JSON + Markdown + PNG outputs.

Everything here imports torch lazily where it can, so ``--help`` stays fast.
"""

"""Saving, checking and describing ONNX files, with external data for models over 2 GB.

A graph is one ``<name>.onnx`` file, plus ``<name>.onnx.data`` (every weight, one file) when its
weights exceed ``EXTERNAL_DATA_THRESHOLD`` bytes: protobuf cannot serialise a message of 2 GiB or
more, so large graphs must keep weights outside the ``.onnx`` (notes/trt_practice.md §3). The data
file is referenced by its bare file name, so the pair can be moved together to any directory.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import ModelProto

from genmask_sdk.runtime.base import TensorSpec
from genmask_sdk.errors import ExportError
from genmask_sdk.export.graph_specs import (  # noqa: F401  (re-exported)
    DEFAULT_OPSET,
    EXTERNAL_DATA_THRESHOLD,
    SUPPORTED_OPSETS,
    GraphSignature,
)


_ELEM_DTYPES = {
    onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16", onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.BOOL: "bool", onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT64: "int64",
}  # fmt: skip


def data_file_name(onnx_path: str | Path) -> str:
    """``dit.fp32.onnx`` -> ``dit.fp32.onnx.data``: where external weights go."""
    return Path(onnx_path).name + ".data"


def save_onnx(model: ModelProto, path: str | Path, external_data: bool) -> Path:
    """Write ``model`` to ``path``; with ``external_data`` all weights go to ``<path>.data``.

    Existing files at both paths are removed first (onnx appends to an existing data file).
    ``model`` may be larger than 2 GB only with ``external_data=True``.
    """
    path = Path(path)
    data = path.with_name(data_file_name(path))
    path.unlink(missing_ok=True)
    data.unlink(missing_ok=True)
    if external_data:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=data.name, size_threshold=1024)
    else:
        onnx.save(model, str(path))
    return path


def check_onnx(path: str | Path, onnxruntime_ops: bool = False) -> None:
    """``onnx.checker`` on the file (by path, so external data and > 2 GB models work).

    ``onnxruntime_ops``: the graph may hold ONNX Runtime's own ops (the CPU set's fused kernels;
    ``SimplifiedLayerNormalization`` sits in the default domain, unknown to the checker): then the
    check is that ONNX Runtime's CPU provider loads it, graph optimisations off."""
    if not onnxruntime_ops:
        onnx.checker.check_model(str(path))
        return
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def external_data_files(path: str | Path) -> list[str]:
    """File names (relative to the .onnx directory) holding this graph's external weights."""
    model = onnx.load(str(path), load_external_data=False)
    files: set[str] = set()
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            files.update(e.value for e in tensor.external_data if e.key == "location")
    return sorted(files)


def _all_tensors(model: ModelProto):
    yield from model.graph.initializer
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                yield attribute.t


def io_specs(path: str | Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an ONNX file as TensorSpecs (symbolic dims become ``None``)."""
    model = onnx.load(str(path), load_external_data=False)
    return [_spec(v) for v in model.graph.input], [_spec(v) for v in model.graph.output]


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return TensorSpec(value.name, _ELEM_DTYPES.get(tensor.elem_type, str(tensor.elem_type)), dims)


def op_counts(path: str | Path) -> dict[str, int]:
    """How many nodes of each op type the graph has (top level)."""
    model = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def module_bytes(module) -> int:
    """Bytes of parameters and buffers (what the graph's initialisers will hold, roughly)."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def check_signature(path: str | Path, sig: GraphSignature, stage: str) -> None:
    """Raise ExportError unless the file's inputs/outputs have the signature's names, dtypes and
    static sizes, with symbolic (dynamic) axes exactly where the signature has ``None``."""
    inputs, outputs = io_specs(path)
    for want, got in ((sig.inputs, inputs), (sig.outputs, outputs)):
        if [s.name for s in want] != [s.name for s in got]:
            raise ExportError(f"{stage}: graph I/O {[s.name for s in got]} differ from {[s.name for s in want]}.")
        for w, g in zip(want, got):
            if w.dtype != g.dtype or w.shape != g.shape:
                raise ExportError(f"{stage}: {g.name} is {g.dtype}{list(g.shape)}, expected {w.dtype}{list(w.shape)} "
                                  "(None = dynamic axis).")

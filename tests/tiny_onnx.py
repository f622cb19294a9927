"""Tiny ONNX graphs for runner and builder tests, with a numpy reference.

Graph ``affine_and_mask`` (opset 17, dynamic batch N):
    x: float32 [N, 3], mask: bool [N]
    y = x @ W + b          -> float32 [N, 4]
    m = float(mask) * 2    -> float32 [N]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

W = np.arange(12, dtype=np.float32).reshape(3, 4) / 10.0
B = np.array([0.5, -1.0, 2.0, 0.0], dtype=np.float32)


def make_affine_and_mask_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["y"]),
        helper.make_node("Cast", ["mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["mask_f", "two"], ["m"]),
    ]
    graph = helper.make_graph(
        nodes,
        "affine_and_mask",
        inputs=[
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["N"]),
        ],
        outputs=[
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("m", TensorProto.FLOAT, ["N"]),
        ],
        initializer=[
            numpy_helper.from_array(W, "W"),
            numpy_helper.from_array(B, "b"),
            numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    return model


def save_affine_and_mask(path: Path, external_data: bool = False) -> Path:
    """Write the model; with ``external_data`` the weights go to ``<name>.data`` beside it."""
    model = make_affine_and_mask_model()
    if external_data:
        onnx.save(
            model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
            location=path.name + ".data", size_threshold=0,
        )  # fmt: skip
    else:
        onnx.save(model, str(path))
    return path


def reference(x: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x @ W + B, "m": mask.astype(np.float32) * 2.0}


def random_feeds(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((batch, 3)).astype(np.float32),
        "mask": rng.random(batch) > 0.5,
    }

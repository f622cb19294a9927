"""What a build asks of its graphs, without importing onnx or torch (so a no-op rebuild decides
without them): opsets, the external-data threshold, and each graph's signature (inputs and outputs,
``None`` for a dynamic axis). ``onnx_io.check_signature`` checks a file against a signature."""

from __future__ import annotations

from dataclasses import dataclass

from genmask_sdk.runtime.base import TensorSpec

DEFAULT_OPSET = 18


#: Weights above this many bytes go to ``<file>.data`` (protobuf's hard limit is 2 GiB; keep margin).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


#: Opsets a build may ask for (20 is the highest TensorRT 10.3 / JetPack 6 parses).
SUPPORTED_OPSETS = range(17, 21)


@dataclass(frozen=True)
class GraphSignature:
    """Inputs and outputs of one stage's graph; ``None`` marks a dynamic axis."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

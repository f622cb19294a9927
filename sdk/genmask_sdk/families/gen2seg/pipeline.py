"""The gen2seg engine pipeline without torch: host pre/post-processing around the graphs
(``EngineColorizer``; ``engines.open_colorizer(directory)`` opens one from an engines directory).

numpy + ONNX Runtime, or TensorRT + cuda-python for the plan sets (never torch, diffusers or
transformers; tests/test_gen2seg_export.py runs it with those imports blocked). The engines directory is written by
``genmask_sdk.families.gen2seg.export.build.build_gen2seg_engines``; its manifest (``family: "gen2seg"``)
names the graphs of each precision set and the host-side processing, which this module follows:

SD variant (graphs ``vae_encoder`` -> ``unet`` -> ``vae_decoder``, fixed S×S, batch dynamic)::

    uint8 (H, W, 3) -> /255 -> ×2−1 -> resize so the long side is S (floor division, bilinear with
    antialias: ``imaging.resize``, the filter of torch's ``interpolate(antialias=True)``)
    -> replicate-pad right/bottom to S×S -> graphs -> crop the padding -> min–max over the crop
    ``(x + |min|) / (|max| + |min|) · 255`` -> gamma (config, 1 = none) -> uint8 (truncation)
    -> PIL LANCZOS back to (H, W)

  Upstream pads only to a multiple of 8; the engines take one fixed S×S shape (static graphs are
  what TensorRT and the fp16 checks want), so a non-square image sees replicate padding up to S×S
  and its colours can differ from upstream's by the network's response to that padding. The
  min–max is taken over the cropped content (upstream: over the ≤ 7 padded rows/columns too).

MAE variant (graph ``mae``: normalised pixels (B, 3, S, S) -> unpatchified raw colours)::

    uint8 -> PIL resize to S×S (bicubic, aspect ratio not kept, as upstream) -> /255 -> ImageNet
    mean/std -> graph -> per image ((x + |min|) / (|max| + |min| + 1e-5))^γ · 255 (γ = 0.7)
    -> uint8 -> LANCZOS back

Every file is checked against the manifest (schema, containment, sha256) when the colorizer is
opened, and each loaded graph's inputs/outputs against its record.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from genmask_sdk import __version__
from genmask_sdk.errors import (
    ArtifactMismatchError,
    ConfigError,
    InputTypeError,
    InvalidInputError,
    InvalidStateError,
)
from genmask_sdk.runtime.imaging import MAX_PIXELS, resize

FAMILY = "gen2seg"
#: Graphs of each variant, in the order they run.
STAGES: dict[str, tuple[str, ...]] = {"sd": ("vae_encoder", "unet", "vae_decoder"), "mae": ("mae",)}
#: (input name, output name) of each graph.
GRAPH_IO: dict[str, tuple[str, str]] = {"vae_encoder": ("pixels", "latent"), "unet": ("latent", "x0"),
                                        "vae_decoder": ("x0", "image"), "mae": ("pixels", "image")}
BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt", "torch")
PRECISIONS = ("fp32", "fp16", "int8")
RUNTIMES = ("onnx", "openvino", "tensorrt")


# ------------------------------------------------------------------------------ host processing
def long_side_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) with the longer edge = ``long_side`` and floor division (as upstream's Marigold processor)."""
    longest = max(height, width)
    size = (height * long_side // longest, width * long_side // longest)
    if min(size) == 0:
        raise InvalidInputError(f"a {width}x{height} image is too elongated to resize to a long side of "
                                f"{long_side}; crop it first.")
    return size


def preprocess_sd(rgb: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """uint8 (H, W, 3) -> ((1, 3, S, S) float32 in [-1, 1], content size (h, w))."""
    height, width = rgb.shape[:2]
    h, w = long_side_size(height, width, size)
    pixels = np.moveaxis(rgb, -1, 0).astype(np.float32) / np.float32(255.0) * np.float32(2.0) - np.float32(1.0)
    resized = resize(pixels, h, w, antialias=True)
    padded = np.pad(resized, ((0, 0), (0, size - h), (0, size - w)), mode="edge")
    return np.ascontiguousarray(padded[None], dtype=np.float32), (h, w)


def preprocess_mae(rgb: np.ndarray, size: int, mean: Any, std: Any) -> np.ndarray:
    """uint8 (H, W, 3) -> (1, 3, S, S) float32, PIL bicubic S×S, /255, (x − mean) / std."""
    from PIL import Image

    resized = Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC)
    pixels = np.moveaxis(np.asarray(resized, dtype=np.float32) / np.float32(255.0), -1, 0)
    mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray(((pixels - mean) / std)[None], dtype=np.float32)


def min_max_sd(image: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """(3, h, w) decode -> float32 in [0, 255]: ``(x + |min|) / (|max| + |min|) · 255`` over the whole
    image (an all-zero image guarded by 1e-12), then ``gamma`` (1 = none, the published SD code)."""
    low, high = np.abs(image.min()), np.abs(image.max())
    colour = (image + low) / np.maximum(high + low, np.float32(1e-12)) * np.float32(255.0)
    if gamma != 1.0:
        colour = np.clip(colour / np.float32(255.0), 0.0, 1.0) ** np.float32(gamma) * np.float32(255.0)
    return colour.astype(np.float32, copy=False)


def min_max_gamma(image: np.ndarray, gamma: float, eps: float = 1e-5) -> np.ndarray:
    """(3, S, S) raw MAE output -> float32 in [0, 255): ``((x + |min|) / (|max| + |min| + eps))^γ · 255``."""
    low, high = np.abs(image.min()), np.abs(image.max())
    base = (image + low) / (high + low + np.float32(eps))
    if gamma != 1.0:
        base = np.maximum(base, np.float32(0.0)) ** np.float32(gamma)
    return (base * np.float32(255.0)).astype(np.float32, copy=False)


def to_original(colour: np.ndarray, height: int, width: int) -> np.ndarray:
    """(3, h, w) float in [0, 255] -> (H, W, 3) uint8: truncation (``astype(uint8)``, as upstream),
    then PIL LANCZOS to (H, W) when the size differs."""
    from PIL import Image

    array = np.clip(np.moveaxis(colour, 0, -1), 0.0, 255.0).astype(np.uint8)
    if array.shape[:2] == (height, width):
        return np.ascontiguousarray(array)
    return np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.LANCZOS))


def check_rgb(rgb: Any) -> np.ndarray:
    """The input of ``color_map``: a uint8 (H, W, 3) numpy array (typed errors otherwise)."""
    if not isinstance(rgb, np.ndarray):
        raise InputTypeError(f"color_map takes a numpy uint8 (H, W, 3) RGB array, got {type(rgb).__name__}; "
                             "load files with PIL and np.asarray(image.convert('RGB')).")
    if rgb.dtype != np.uint8:
        raise InputTypeError(f"color_map takes uint8 RGB (0-255), got dtype {rgb.dtype}; convert float images in "
                             "[0, 1] with (x * 255).round().astype(np.uint8).")
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise InvalidInputError(f"color_map takes one (H, W, 3) RGB image, got shape {tuple(rgb.shape)}.")
    height, width = rgb.shape[:2]
    if height == 0 or width == 0:
        raise InvalidInputError(f"the image is empty (shape {tuple(rgb.shape)}).")
    if height * width > MAX_PIXELS:
        raise InvalidInputError(f"the image has {height * width:,} pixels; at most {MAX_PIXELS:,} are accepted. "
                                "Downscale it first.")
    return np.ascontiguousarray(rgb)


# ---------------------------------------------------------------------------------- colorizer
class EngineColorizer:
    """Runs a gen2seg engine set: ``color_map(rgb)`` -> the instance colour map, uint8 (H, W, 3).

    Build one with ``open_colorizer`` (from an engines directory, files verified) or
    ``from_files`` (graphs by path, no manifest: what the exporter's checks use).
    ``processing`` is the manifest's ``processing`` entry (variant, size, gamma, ...).
    ``runtime``: ``"onnx"`` (ONNX Runtime, ``provider`` "cpu" or "cuda") or ``"tensorrt"`` (the
    files are plans; TensorRT runners on one CUDA stream of ``device_id``). Each stage's output is
    copied to the host (a few hundred KB of latents between SD stages), so ``timings`` are per stage.
    ``runtime="openvino"``: the ONNX files compiled by OpenVINO on the CPU with ``openvino_hint``
    (``runtime.openvino_runner``; the precision each graph computes in is in ``describe()``).
    ``prompt_defaults``: the manifest's ``prompt_config`` (the checkpoint's own point-prompt
    parameters, ``instance.prompt_defaults``; None when it had none), for ``InstanceSegmenter``.
    """

    def __init__(self, processing: Mapping[str, Any], files: Mapping[str, Path], *, provider: str = "cpu",
                 device_id: int = 0, precision: str = "fp32", records: Mapping[str, Mapping[str, Any]] | None = None,
                 directory: Path | None = None, choice: Mapping[str, Any] | None = None,
                 runtime: str = "onnx", prompt_defaults: Mapping[str, Any] | None = None,
                 openvino_hint: str | None = "f32", threads: int | None = None) -> None:
        if runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {RUNTIMES}, got {runtime!r}.")
        self.runtime = runtime
        self.openvino_hint = openvino_hint
        self.threads = threads
        self.processing = dict(processing)
        self.variant = self.processing.get("variant")
        if self.variant not in STAGES:
            raise ArtifactMismatchError(f"gen2seg processing names variant {self.variant!r}; expected one of "
                                        f"{sorted(STAGES)}. Rebuild the engines.")
        missing = [s for s in STAGES[self.variant] if s not in files]
        if missing:
            raise ArtifactMismatchError(f"the {precision} set has no {missing} graph(s) for gen2seg-{self.variant}; "
                                        "rebuild the engines.")
        self.size = int(self.processing["size"])
        self.gamma = float(self.processing.get("gamma", 1.0))
        self.precision, self.provider, self.device_id = precision, provider, int(device_id)
        self.directory = directory
        self.files = {stage: Path(files[stage]) for stage in STAGES[self.variant]}
        self.choice = dict(choice or {})
        self.prompt_defaults = None if prompt_defaults is None else dict(prompt_defaults)
        self.timings: dict[str, float] = {}
        self.runners: dict[str, Any] = {}
        self._stream: Any = None
        try:
            for stage, runner in self._make_runners().items():
                self.runners[stage] = runner.load()
            self._check_graphs(records or {})
        except BaseException:
            self.close()
            raise

    def _make_runners(self) -> dict[str, Any]:
        from genmask_sdk.runtime.runners import make_runners

        runners, self._stream = make_runners(self.files, self.runtime, provider=self.provider, device_id=self.device_id,
                                             threads=self.threads, openvino_hint=self.openvino_hint)
        return runners

    @classmethod
    def from_files(cls, processing: Mapping[str, Any], files: Mapping[str, Path], **kwargs: Any) -> "EngineColorizer":
        """Graphs by path (``{stage: path}``) without a manifest; ``kwargs`` as the constructor."""
        return cls(processing, files, **kwargs)

    def _check_graphs(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        """Each graph has the I/O names, dtypes and static shapes this pipeline feeds (and, given
        manifest records, exactly the recorded ones)."""
        s, latent = self.size, None
        for stage, runner in self.runners.items():
            name_in, name_out = GRAPH_IO[stage]
            ins, outs = runner.input_specs, runner.output_specs
            if [i.name for i in ins] != [name_in] or [o.name for o in outs] != [name_out] \
                    or ins[0].dtype != "float32" or outs[0].dtype != "float32":
                raise ArtifactMismatchError(
                    f"the {stage} graph {self.files[stage].name!r} has inputs {[(i.name, i.dtype) for i in ins]} and "
                    f"outputs {[(o.name, o.dtype) for o in outs]}; expected float32 {name_in!r} -> {name_out!r}. "
                    "Rebuild the engines.")
            if stage in ("vae_encoder", "mae") and tuple(ins[0].shape[1:]) != (3, s, s):
                raise ArtifactMismatchError(f"the {stage} graph takes {list(ins[0].shape)}, but the manifest's "
                                            f"processing size is {s}; graph and manifest come from different builds.")
            if stage == "vae_encoder":
                latent = tuple(outs[0].shape[1:])
            record = records.get(stage)
            if record is not None:
                for kind, loaded in (("inputs", ins), ("outputs", outs)):
                    listed = [(d["name"], d["dtype"], tuple(d["shape"])) for d in record.get(kind, [])]
                    actual = [(x.name, x.dtype, tuple(x.shape)) for x in loaded]
                    if listed != actual:
                        raise ArtifactMismatchError(
                            f"the {stage} graph {record.get('file')!r} has {kind} {actual}, but the manifest records "
                            f"{listed}. The file and the manifest come from different builds; rebuild the engines.")
        if latent is not None:
            for stage, spec in (("unet", self.runners["unet"].input_specs[0]),
                                ("vae_decoder", self.runners["vae_decoder"].input_specs[0])):
                if tuple(spec.shape[1:]) != latent:
                    raise ArtifactMismatchError(f"the {stage} graph takes {list(spec.shape)}, the VAE encoder gives "
                                                f"{[None, *latent]}; the graphs come from different builds.")

    # ---- running ---------------------------------------------------------------------------------
    def _run(self, stage: str, value: np.ndarray) -> np.ndarray:
        from genmask_sdk.runtime.base import host_array

        name_in, name_out = GRAPH_IO[stage]
        start = time.perf_counter()
        out = host_array(self.runners[stage].infer({name_in: value})[name_out])  # TensorRT: waits for the stream
        self.timings[stage] = time.perf_counter() - start
        return np.asarray(out, dtype=np.float32)

    def color_float(self, rgb: Any) -> np.ndarray:
        """The colour map before truncation and resizing back: (3, h, w) float32 in [0, 255] at the
        processing size (SD: the content crop of the S×S canvas; MAE: S×S)."""
        if not self.runners:
            raise InvalidStateError("this EngineColorizer is closed; open the engines again.")
        rgb = check_rgb(rgb)
        if self.variant == "sd":
            pixels, (h, w) = preprocess_sd(rgb, self.size)
            image = self._run("vae_decoder", self._run("unet", self._run("vae_encoder", pixels)))
            return min_max_sd(image[0, :, :h, :w], self.gamma)
        pixels = preprocess_mae(rgb, self.size, self.processing["mean"], self.processing["std"])
        return min_max_gamma(self._run("mae", pixels)[0], self.gamma, float(self.processing.get("eps", 1e-5)))

    def color_map(self, rgb: Any) -> np.ndarray:
        """uint8 (H, W, 3) RGB -> the instance colour map, uint8 (H, W, 3) at the input's size."""
        rgb = check_rgb(rgb)
        return to_original(self.color_float(rgb), rgb.shape[0], rgb.shape[1])

    # ---- description / lifetime --------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What runs: family, variant, backend and provider, precision, graphs, processing, versions."""
        versions = {"genmask_sdk": __version__, "numpy": np.__version__}
        extra: dict[str, Any] = {}
        if self.runtime == "tensorrt":
            from genmask_sdk.runtime.trt_api import import_tensorrt

            versions["tensorrt"] = str(import_tensorrt().__version__)
        elif self.runtime == "openvino":
            from genmask_sdk.runtime.openvino_runner import import_openvino

            versions["openvino"] = import_openvino().__version__
            extra["runtime_options"] = {"precision_hint": self.openvino_hint, "inference_precision": {
                stage: getattr(runner, "inference_precision", None) for stage, runner in self.runners.items()}}
        else:
            import onnxruntime

            versions["onnxruntime"] = onnxruntime.__version__
        on_cpu = self.runtime == "openvino" or (self.runtime == "onnx" and self.provider == "cpu")
        backend = {"tensorrt": "tensorrt", "openvino": "openvino", "onnx": "onnxruntime"}[self.runtime]
        return {"family": FAMILY, "variant": self.variant, "backend": backend, **extra,
                "provider": self.provider if self.runtime == "onnx" else None,
                "device": "cpu" if on_cpu else f"cuda:{self.device_id}",
                "precision": self.precision, "directory": str(self.directory) if self.directory else None,
                "graphs": {stage: path.name for stage, path in self.files.items()},
                "processing": dict(self.processing), "choice": dict(self.choice),
                "last_timings_s": dict(self.timings), "closed": not self.runners, "versions": versions,
                "threads": self.threads, "precision_choice": self.choice.get("precision_choice"),
                "fallbacks": ([{"option": "device", "reason": self.choice["device_choice"]}]
                              if self.choice.get("device_choice") else [])}

    def close(self) -> None:
        """Release the sessions / TensorRT contexts and the stream (idempotent)."""
        runners, self.runners = self.runners, {}
        for runner in runners.values():
            runner.close()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.destroy()

    def __enter__(self) -> "EngineColorizer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

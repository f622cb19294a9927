"""``Segmenter``: text-prompted masks from any image, on PyTorch, ONNX Runtime or TensorRT.

    seg = Segmenter.from_engines("engines/demo")          # or Segmenter.from_pretrained("demo")
    result = seg.predict("photo.jpg", "the red circle")    # MaskResult
    seg.set_image(frame)                                  # encode once ...
    results = seg.predict(["the cup", "the left hand"])   # ... then many prompts, one DiT batch

Pipeline per call: image -> letterbox (``imaging``) -> VAE encoder -> z_img, and for an
image-aware embedder (Qwen2.5-VL) its image prefix (vision tower + prefix prefill, KV cache) —
both cached by ``set_image``; prompts -> the embedder's ``encode_prompts`` on that prefix (only
the prompt tokens run) -> contexts padded to the longest prompt with ``context_mask``; DiT in
chunks of ``max_batch`` prompts; mask head -> logits (P, 1, R, R) -> letterbox removed, resized
to (H, W). Intermediate tensors stay on the device; only the final masks/logits are copied to
the host.

Reasoning mode (``predict(..., reason=True)``, paper §3.1): the VLM first answers, on the same
cached prefix, with a short phrase naming what the instruction refers to; the DiT then segments
that phrase. ``MaskResult.prompt`` keeps the instruction, ``MaskResult.phrase`` the answer.

Thread safety: each Segmenter holds one re-entrant lock; ``predict``, ``set_image``,
``reset_image`` and ``close`` take it, so calls from several threads run one at a time and each
sees a consistent state. The image set by ``set_image`` is shared by all threads: threads that
work on different images should pass the image to ``predict`` (or use one Segmenter each).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genmask_sdk.families.lifecycle import SegmenterLifecycle
from genmask_sdk.families.genmask.engines import Opened, open_engines, resolve_device
from genmask_sdk.runtime.text_checks import check_targets
from genmask_sdk.families.genmask.engines import describe_manifest, manifest_config, open_manifest
from genmask_sdk.errors import (
    ArtifactMismatchError,
    ConfigError,
    InputTypeError,
    InvalidInputError,
    InvalidStateError,
)
from genmask_sdk.runtime.results import MaskResult, Timings
from genmask_sdk.runtime.imaging import Letterbox, load_image, to_engine_pixels, to_original_logits, to_pil
from genmask_sdk.runtime.base import host_array as _host

logger = logging.getLogger("genmask_sdk.families.genmask.segmenter")
_UNSET = object()
DEFAULT_MAX_BATCH = 16
#: Precision sets whose quantization scales depend on the whole batch (see Segmenter.__init__).
BATCH_VARIANT_SETS = ("int8-dynamic",)


@dataclass(frozen=True, eq=False)
class _ImageState:
    """What depends on the image alone: source (H, W, 3) float32 [0, 1], letterbox geometry,
    z_img (1, 16, R/8, R/8) as the pipeline returns it (numpy on the host, a device tensor on a
    GPU), the embedder's image prefix (None for text-only embedders), and the milliseconds it cost."""

    picture: np.ndarray
    box: Letterbox
    z_img: Any
    prefix: Any
    ms: dict


class Segmenter(SegmenterLifecycle):
    """Referring segmentation with one GenMask model; build with ``from_pretrained``,
    ``from_engines`` or ``from_model``. See the module docstring for the pipeline and locking."""

    FAMILY = "genmask"

    def __init__(self, pipeline, embedder, config, info: dict[str, Any]) -> None:
        self._pipeline = pipeline
        self._embedder = embedder
        self.config = config
        self.device = pipeline.device
        self._info = info
        self._max_batch = int(info.get("max_batch") or DEFAULT_MAX_BATCH)
        # A set whose graphs scale activations per call (int8-dynamic: one DynamicQuantizeLinear scale
        # over the whole batch, padding included) runs each prompt alone at its own length, so a
        # prompt's mask never depends on the other prompts of the call. Every other set is batch-invariant.
        self._rows_alone = info.get("precision") in BATCH_VARIANT_SETS
        self._max_prompt_tokens = info.get("max_prompt_tokens")
        self._start_lifecycle()  # lock, image cache (_ImageState), closed flag

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "demo", device: str = "cpu",
                        dtype: str = "fp32") -> "Segmenter":
        """PyTorch reference backend from ``"demo"`` or a checkpoint directory; ``dtype`` ``"fp32"``
        or ``"bf16"`` (``torch.autocast``: the peer to compare engines with on a bf16-capable CPU)."""
        cls._refuse_other_family(name_or_path)
        from genmask_sdk.families.genmask.modeling.torch_pipeline import TORCH_DTYPES
        from genmask_sdk.families.genmask.modeling.model import GenMaskModel

        if dtype not in TORCH_DTYPES:  # before loading anything
            raise ConfigError(f"dtype must be one of {sorted(TORCH_DTYPES)} for the PyTorch reference, got {dtype!r}.")
        resolved, _ = resolve_device(device)
        model = GenMaskModel.from_pretrained(name_or_path, device=str(resolved))
        source = {"kind": "checkpoint", "path": str(getattr(model, "checkpoint_dir", name_or_path))}
        return cls.from_model(model, source=source, dtype=dtype)

    @classmethod
    def from_model(cls, model, source: dict[str, Any] | None = None, dtype: str = "fp32") -> "Segmenter":
        """Wrap an in-memory ``GenMaskModel`` (PyTorch backend, its device; ``dtype`` as
        ``from_pretrained``; ``describe()["precision"]`` is ``"fp32"`` or ``"bf16-autocast"``)."""
        from genmask_sdk.families.genmask.modeling.torch_pipeline import TorchPipeline

        pipeline = TorchPipeline(model, dtype)
        info = {"backend": "torch", "precision": "fp32" if dtype == "fp32" else f"{dtype}-autocast", "provider": None,
                "fallbacks": [], "files": {},
                "source": source or {"kind": "model", "path": None}, "max_batch": DEFAULT_MAX_BATCH,
                "max_prompt_tokens": model.config.embedder.max_prompt_tokens, "manifest": None}
        return cls(pipeline, model.embedder, model.config, info)

    @classmethod
    def from_engines(cls, directory: str | os.PathLike, backend: str = "auto", precision: str | None = None,
                     device: str | None = None, *, ort_provider: str | None = None,
                     openvino_hint: str | None = "f32", threads: int | None = None,
                     verify: bool = True) -> "Segmenter":
        """Open an engines directory written by ``genmask build``.

        Args:
            backend: ``"auto"`` (fastest that works: TensorRT plans on a GPU > ONNX Runtime CUDA
                EP > ONNX Runtime CPU > PyTorch checkpoint; the choice is logged and in
                ``describe()``), or ``"tensorrt"`` / ``"onnxruntime"`` / ``"openvino"`` / ``"torch"``,
                which are used or refused with BackendUnavailableError (never replaced).
                ``"openvino"`` (CPU, ``pip install 'genmask-sdk[openvino]'``) compiles the set's
                ONNX graphs with OpenVINO; ``auto`` never picks it.
            precision: ``"fp32"``, ``"fp16"``, ``"int8"``, ``"fp8"`` or ``"int8-dynamic"``: a set of the
                manifest (fp8 runs fast on FP8 GPUs; ONNX Runtime on a CPU emulates its Q/DQ;
                int8-dynamic is the CPU set). None (default): with ``backend="auto"`` on a CPU, the
                fastest set of the build's CPU timing whose DiT keeps PyTorch's masks (mask IoU >=
                0.99), else fp32; ``describe()["precision_choice"]`` says which and why.
            device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``; ``None`` = the first GPU when one is
                visible (``runtime.devices``), else the CPU.
            ort_provider: for ``backend="onnxruntime"``: ``"cpu"``, ``"cuda"`` or ``"tensorrt"``
                (TensorRT EP; builds its engines on first load). Default follows ``device``.
            openvino_hint: for ``backend="openvino"``: its inference precision, ``"f32"`` (the
                set's own precision, the default), ``"bf16"`` (faster on CPUs with AVX-512-BF16 /
                AMX; less exact) or None (OpenVINO's default for the CPU, bf16 where it has it).
                ``describe()["runtime_options"]`` reports what each stage computes in.
            threads: CPU threads of the ONNX Runtime / OpenVINO graphs (None: the runtime's
                default, one per physical core); set it when the robot's CPU is shared.
            verify: check every artefact's sha256 against the manifest before loading.
        """
        from genmask_sdk.families.genmask.modeling.embedders import load_embedder

        directory = cls._engines_path(directory)
        cls._refuse_other_family(directory)
        manifest = open_manifest(directory, verify=verify)
        config = manifest_config(manifest)
        resolved, device_note = resolve_device(device)
        opened: Opened = open_engines(manifest, config, backend, precision, resolved, ort_provider, verify,
                                      openvino_hint=openvino_hint, threads=threads)
        fallbacks = ([{"option": "device", "reason": device_note}] if device_note else []) + opened.fallbacks
        if opened.model is not None:
            embedder = opened.model.embedder
        else:
            embedder = _engine_embedder(manifest, config, opened.precision, resolved) or load_embedder(
                config.embedder, resolved, local_files_only=True)  # a manifest never makes us download
        if resolved.type == "cuda" and getattr(getattr(embedder, "runner", None), "provider", None) == "cpu":
            reason = ("the text embedder runs on the CPU: this onnxruntime has no CUDAExecutionProvider (pip install "
                      "onnxruntime-gpu for it to run on the GPU)")
            logger.warning("Segmenter: %s", reason)
            fallbacks.append({"option": "text_embedder on cuda", "reason": reason})
        data = manifest.data
        files = {stage: {k: a.get(k) for k in ("file", "sha256", "runtime", "precision")}
                 for stage, a in opened.artifacts.items()}
        info = {"backend": opened.backend, "precision": opened.precision, "provider": opened.provider,
                "precision_choice": opened.precision_choice,
                "fallbacks": fallbacks, "files": files, "source": {"kind": "engines", "path": str(directory)},
                "max_batch": data.get("max_batch"),
                "max_prompt_tokens": data.get("max_prompt_tokens") or config.embedder.max_prompt_tokens,
                "manifest": describe_manifest(data), "runtime_options": opened.runtime_options}
        logger.info("Segmenter: %s %s on %s from %s", opened.backend, opened.precision, resolved, directory)
        return cls(opened.pipeline, embedder, config, info)

    # ---------------------------------------------------------------------------------- image
    def set_image(self, image: Any) -> None:
        """Encode ``image`` (anything ``imaging.load_image`` accepts) once for later ``predict(prompts)``."""
        with self._lock:
            self._check_open()
            self._image = None  # a failed encode leaves no stale image behind
            self._image = self._prepare(image)

    # -------------------------------------------------------------------------------- predict
    def predict(self, image_or_prompts: Any, prompts: Any = _UNSET, *, reason: bool = False) -> MaskResult | list[MaskResult]:
        """``predict(image, prompt)`` or, after ``set_image``, ``predict(prompt)``.

        ``prompt`` is a str (returns one MaskResult) or a list/tuple of str (returns a list, one
        per prompt, in order; the image is encoded once and the prompts share DiT batches).
        ``reason=True``: each prompt is an instruction ("what can I pour water into?"); the VLM
        names its target first, on the cached image, and that phrase is segmented (needs an
        embedder that can generate: Qwen2.5-VL; others raise InvalidStateError).
        """
        if prompts is not _UNSET and image_or_prompts is None:
            raise InputTypeError("predict(None, prompts): the image is None; pass an image, or call set_image(image) "
                                 "once and then predict(prompts) without one.")
        image, prompts = (None, image_or_prompts) if prompts is _UNSET else (image_or_prompts, prompts)
        texts, single = _prompt_list(prompts)
        if not isinstance(reason, bool):
            raise InputTypeError(f"reason must be True or False, got {reason!r}.")
        self._check_open()
        if reason and not getattr(self._embedder, "can_generate", False):
            self._embedder.reason(None, texts[0])  # raises the embedder's own explanation
            raise InvalidStateError("this Segmenter's embedder cannot generate text, so reason=True is unavailable.")
        with self._lock:
            self._check_open()
            start = self._clock()
            if image is None:
                if self._image is None:
                    raise InvalidStateError(
                        "no image is set: call set_image(image) before predict(prompts), or pass the image: "
                        "predict(image, prompts)."
                    )
                state = self._image
                cached = ("preprocess", "embed_image", "vae_encoder") if state.prefix is not None else ("preprocess", "vae_encoder")
            else:
                state, cached = self._prepare(image), ()
            results = self._predict_prompts(state, texts, cached, start, reason)
        return results[0] if single else results

    __call__ = predict

    def _prepare(self, image: Any) -> _ImageState:
        t0 = self._clock()
        picture = load_image(image)
        pixels, box = to_engine_pixels(picture, self.config.resolution)
        uses_image = getattr(self._embedder, "uses_image", False)
        t1 = self._clock()
        prefix = self._embedder.encode_image(to_pil(picture)) if uses_image else None
        t2 = self._clock()
        z_img = self._pipeline.encode(pixels)
        t3 = self._clock()
        return _ImageState(picture, box, z_img, prefix,
                           {"preprocess": t1 - t0, "embed_image": t2 - t1 if uses_image else 0.0, "vae_encoder": t3 - t2})

    def _predict_prompts(self, state: _ImageState, texts: list[str], cached: tuple, start: float,
                         reason: bool = False) -> list[MaskResult]:
        ms = {stage: 0.0 for stage in cached} if cached else dict(state.ms)
        t0 = self._clock()
        phrases = [self._embedder.reason(state.prefix, text) for text in texts] if reason else texts
        t1 = self._clock()
        embedding = self._embedder.encode_prompts(state.prefix, phrases)
        context, context_mask = _host(embedding.states), _host(embedding.mask)
        self._check_prompt_lengths(context_mask, phrases)
        ms["reason"], ms["embed"] = (t1 - t0 if reason else 0.0), self._clock() - t1
        rows = []
        step = 1 if self._rows_alone else self._max_batch
        for first in range(0, len(texts), step):
            rows.extend(self._run_chunk(state, context[first: first + step], context_mask[first: first + step], ms))
        ms["total"] = self._clock() - start
        timings = Timings(ms, cached)
        return [MaskResult(mask=logits > 0, logits=logits, score=score, prompt=text, timings=timings, phrase=phrase,
                           _image=state.picture) for text, phrase, (logits, score) in zip(texts, phrases, rows)]

    def _run_chunk(self, state: _ImageState, context: np.ndarray, context_mask: np.ndarray, ms: dict) -> list:
        """One DiT batch: contexts trimmed to this chunk's longest prompt -> [(logits HxW, score)]."""
        length = int(context_mask.sum(axis=1).max())
        context = np.ascontiguousarray(context[:, :length], dtype=np.float32)
        context_mask = np.ascontiguousarray(context_mask[:, :length])
        t0 = self._clock()
        latent = self._pipeline.denoise(state.z_img, context, context_mask)  # z_img repeated there
        t1 = self._clock()
        logits = _host(self._pipeline.decode(latent)).astype(np.float32, copy=False)
        t2 = self._clock()
        full = to_original_logits(logits, state.box)  # (b, H, W) float32
        inside = full > 0
        probs = np.where(inside, 0.5 * (1.0 + np.tanh(0.5 * full.astype(np.float64))), 0.0)  # sigmoid
        counts = inside.reshape(inside.shape[0], -1).sum(axis=1)
        scores = probs.reshape(probs.shape[0], -1).sum(axis=1) / np.maximum(counts, 1)
        t3 = self._clock()
        for stage, value in (("dit", t1 - t0), ("mask_head", t2 - t1), ("postprocess", t3 - t2)):
            ms[stage] = ms.get(stage, 0.0) + value
        return [(full[i], float(scores[i])) for i in range(full.shape[0])]

    def _check_prompt_lengths(self, context_mask: np.ndarray, texts: list[str]) -> None:
        limit = self._max_prompt_tokens
        if not limit:
            return
        lengths = context_mask.sum(axis=1).tolist()
        for text, length in zip(texts, lengths):
            if length > limit:
                raise InvalidInputError(
                    f"prompt {text[:60]!r} is {int(length)} tokens long; these engines accept at most {limit} "
                    "(max_prompt_tokens). Shorten the phrase, or rebuild the engines with a larger limit."
                )

    def _clock(self) -> float:
        """Milliseconds; waits for queued GPU work so per-stage timings are real."""
        synchronize = getattr(self._pipeline, "synchronize", None)
        if synchronize is not None:
            synchronize()
        return time.perf_counter() * 1000.0

    # ------------------------------------------------------------------------------- lifecycle
    def describe(self) -> dict[str, Any]:
        """Backend, precision, device, files per stage (with sha256), versions, resolution,
        embedder, fallbacks (option skipped + reason), the engines' manifest summary and, when the
        SDK chose the precision set (``precision=None``), ``precision_choice``: which and why."""
        info = self._info
        versions = self._base_versions()
        if info["backend"] == "onnxruntime":
            import onnxruntime

            versions["onnxruntime"] = onnxruntime.__version__
        if info["backend"] == "tensorrt":
            from genmask_sdk.runtime.trt_api import import_tensorrt

            versions["tensorrt"] = import_tensorrt().__version__
        if info["backend"] == "openvino":
            from genmask_sdk.runtime.openvino_runner import import_openvino

            versions["openvino"] = import_openvino().__version__
        if info.get("manifest"):
            versions["engines_sdk_version"] = info["manifest"].get("sdk_version")
            versions["manifest_format_version"] = info["manifest"].get("format_version")
        spec = self.config.embedder
        return {
            "backend": info["backend"], "precision": info["precision"], "provider": info["provider"],
            "device": str(self.device), "files": info["files"], "source": info["source"], "versions": versions,
            "resolution": self.config.resolution, "max_batch": self._max_batch,
            "max_prompt_tokens": self._max_prompt_tokens,
            "embedder": {"kind": spec.kind, "name_or_path": spec.name_or_path, "hidden_size": spec.hidden_size,
                         "runs_on": getattr(self._embedder, "runs_on", f"torch ({self.device})"), "image_size": spec.image_size,
                         "image_tokens": spec.image_tokens,
                         "can_reason": bool(getattr(self._embedder, "can_generate", False))},
            "fallbacks": list(info["fallbacks"]) + list(getattr(self._pipeline, "notes", [])),
            "manifest": info.get("manifest"), "runtime_options": info.get("runtime_options"),
            "precision_choice": info.get("precision_choice"),
            "thread_safety": "one lock per Segmenter: calls run one at a time",
            "closed": self._closed,
        }

    def _release(self) -> None:
        self._pipeline.close()
        close = getattr(self._embedder, "close", None)  # only engine embedders have one (they own a runner)
        if close is not None:
            close()
        self._embedder = None

    def __repr__(self) -> str:
        info = self._info
        return (f"Segmenter(backend={info['backend']!r}, precision={info['precision']!r}, device='{self.device}', "
                f"resolution={self.config.resolution}, image_set={self.is_image_set})")


def _prompt_list(prompts: Any) -> tuple[list[str], bool]:
    """(prompts as a list, whether a single str was given); raise on anything else."""
    if isinstance(prompts, str):
        return check_targets([prompts]), True
    if isinstance(prompts, (list, tuple)):
        return check_targets(list(prompts)), False
    raise InputTypeError(
        f"prompts must be a str or a list of str, got {type(prompts).__name__}; call predict(image, 'the red circle'), "
        "or set_image(image) and then predict('the red circle')."
    )


def _engine_embedder(manifest, config, precision: str, device) -> Any:
    """The ONNX text embedder of the engines' ``precision`` set (graph + tokenizer.json, run by ONNX
    Runtime: CUDA EP on a GPU where onnxruntime-gpu has it, else the CPU), or None when the set has
    none (Qwen2.5-VL engines: that stage runs in PyTorch)."""
    from genmask_sdk.runtime.onnxruntime_runner import OnnxRuntimeRunner
    from genmask_sdk.families.genmask.text_embedder import OnnxTextEmbedder

    entry = manifest.data.get("text_embedder")
    if not entry:
        return None
    try:
        names = {"embedder": entry["graphs"][entry["for_sets"][precision]], "tokenizer": entry["tokenizer"]}
    except (KeyError, TypeError):
        raise ArtifactMismatchError(f"{manifest.directory}/manifest.json has a malformed text_embedder entry; "
                                    "rebuild the engines.") from None
    files = {}
    for key, name in names.items():
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise ArtifactMismatchError(f"the manifest's text_embedder {key} {name!r} is not a file name inside "
                                        f"{manifest.directory}; rebuild the engines.")
        files[key] = Path(manifest.directory) / name
    import onnxruntime

    on_gpu = device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    provider = "cuda" if on_gpu else "cpu"
    runner = OnnxRuntimeRunner(files["embedder"], provider=provider, device_id=device.index or 0).load()
    spec = config.embedder
    return OnnxTextEmbedder(runner, files["tokenizer"], spec.hidden_size, spec.prompt_template, spec.max_prompt_tokens)

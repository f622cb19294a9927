"""Latency benchmark: per-stage p50/p90/p99, throughput per batch size, memory, TFLOP/s, fidelity.

``run_latency(LatencySettings(...))`` returns a JSON-ready dict (schema in
``benchmarks/README.md``); ``benchmarks/latency.py`` parses arguments and writes the files.

Both modes run an engines directory written by ``build_engines`` (built here when missing, built
for other weights, or lacking a requested set; reused otherwise, as the exporter decides), and open
engine targets with the loader ``Segmenter.from_engines`` uses (``targets.open_target``):

* ``pipeline`` — stages ``vae_encoder``, ``dit`` (at each batch size), ``mask_head`` and
  ``end_to_end`` (``Segmenter.predict(image, prompts)``: preprocess, embed, VAE, DiT, head,
  postprocess, with the prompt cache cleared before every call). The embedder always runs in
  PyTorch and is timed once (``embed``).
* ``dit-only`` — only the DiT is timed (the real-size model with random weights, whose Qwen2.5-VL
  embedder is not loaded): random N(0, 1) latents and contexts of ``prompt_tokens`` tokens. Its
  build calibrates int8 on random inputs (``--int8-calib-samples``) and checks one input.

Every target's figures carry ``ratio_vs_reference``: its p50 over PyTorch eager fp32's p50 for the
same stage and batch, measured in the same run (< 1 is faster).
"""

from __future__ import annotations

import gc
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from genmask_sdk.families.genmask.engines import manifest_config
from genmask_sdk.bench.flops import (
    DIT_FORMULA,
    EMBED_FORMULA,
    HEAD_FORMULA,
    VAE_FORMULA,
    dit_flops,
    embedder_flops,
    mask_head_flops,
    vae_encoder_flops,
)
from genmask_sdk.bench.stats import summarize, time_calls
from genmask_sdk.bench.system import cpu_has_native_bf16, gemm_peak, hardware, peak_memory, versions
from genmask_sdk.bench.targets import (
    PIPELINE_STAGES,
    REFERENCE,
    Artifacts,
    OpenedTarget,
    TargetSpec,
    TargetUnavailable,
    detached_head,
    open_target,
    parse_targets,
    unavailable_reason,
)

SCHEMA = "genmask-bench-latency/1"
RANDOM_PRESETS = ("wan2.1-1.3b", "tiny")
#: Prompts of the demo vocabulary; batch B uses the first B.
PROMPTS = ("the red circle", "the orange star", "the largest shape", "the blue square on the left",
           "the small green triangle", "the shape right of the red circle", "the purple hexagon",
           "the smallest shape in the picture")


@dataclass
class LatencySettings:
    """Options of ``run_latency`` (the script's flags; see ``benchmarks/latency.py --help``)."""

    model: str = "demo"
    embedder: str | None = None
    resolutions: list[int] | None = None
    mode: str = "auto"
    backends: str = "all"
    batch_sizes: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    e2e_batch_sizes: list[int] | None = None
    warmup: int = 3
    repeats: int = 20
    prompt_tokens: int = 32
    threads: int | None = None
    device: str = "cpu"
    engines: str | None = None
    engines_root: str = "engines"
    work_dir: str | None = None
    build: bool = True
    peak_tflops: float | None = None
    int8_calib_samples: int = 8
    seed: int = 0
    quick: bool = False
    progress: bool = True

    def apply_quick(self) -> None:
        """Smoke-test sizes: 1 warm-up, 3 repeats, batches 1 and 2, small GEMM probe."""
        self.warmup, self.repeats = min(self.warmup, 1), min(self.repeats, 3)
        self.batch_sizes = [b for b in self.batch_sizes if b <= 2] or [1]
        self.int8_calib_samples = min(self.int8_calib_samples, 2)


# ------------------------------------------------------------------------------------ model
def load_model(name: str, embedder: str | None, seed: int):
    """(GenMaskModel on CPU, source description): ``demo`` / a checkpoint directory, or a preset
    name (``wan2.1-1.3b``, ``tiny``, or ``random:<preset>``) with random weights from ``seed``."""
    from genmask_sdk.families.genmask.config import GenMaskConfig
    from genmask_sdk.families.genmask.modeling import GenMaskModel

    preset = name[len("random:"):] if name.startswith("random:") else (name if name in RANDOM_PRESETS else None)
    if preset is None:
        model = GenMaskModel.from_pretrained(name)
        directory = getattr(model, "checkpoint_dir", None)
        return model, {"kind": "checkpoint", "name": name, "path": str(directory) if directory else None}
    spec = embedder or ("qwen2.5-vl-7b" if preset == "wan2.1-1.3b" else "minilm")
    torch.manual_seed(seed)
    model = GenMaskModel.from_config(GenMaskConfig.preset(preset, embedder=spec))
    return model, {"kind": "random", "name": preset, "embedder": spec, "seed": seed}


def at_resolution(model, resolution: int):
    if model.config.resolution != resolution:
        model.config = model.config.replace(resolution=resolution)
        model.invalidate()
    return model


# ------------------------------------------------------------------------------------ engines
def prepare_artifacts(model, source: dict, resolution: int, mode: str, specs: list[TargetSpec], settings,
                      work_dir: Path, device: torch.device, log) -> Artifacts:
    """An engines directory (``build_engines``) holding every set the runnable ``specs`` need:
    ``--engines`` / ``engines_root`` for checkpoints, ``work_dir`` for random weights; built when
    missing, built from other weights, or lacking a set (unless ``--no-build``)."""
    from genmask_sdk.families.genmask.engines import open_manifest
    from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError
    from genmask_sdk.families.genmask.export.options import PRECISIONS
    from genmask_sdk.families.genmask.export.build import build_engines

    native = source.get("native_resolution", model.config.resolution)
    if settings.engines:
        directory = Path(settings.engines)
        if len(settings.resolutions or []) > 1:
            directory = directory / f"r{resolution}"
    elif source["kind"] == "checkpoint":
        name = "demo" if source["name"] == "demo" else Path(source["path"] or source["name"]).name
        directory = Path(settings.engines_root) / (name if resolution == native else f"{name}-r{resolution}")
    else:
        directory = work_dir / f"engines-r{resolution}"
    needed = set()
    for spec in specs:
        if spec.family == "torch" or unavailable_reason(spec, device):
            continue
        needed.add(("tensorrt" if spec.family == "tensorrt" else "onnx", spec.precision))
    manifest, problem = None, None
    try:
        manifest = open_manifest(directory, verify=True)
        problem = engines_mismatch(manifest, model, source)
    except (ArtifactNotFoundError, ArtifactMismatchError) as exc:
        problem = str(exc).split(". ")[0]
    missing = set()
    if manifest is not None and problem is None:
        for runtime, precision in needed:
            try:
                manifest.files(precision, runtime)
            except ArtifactNotFoundError:
                missing.add((runtime, precision))
    build_seconds = {}
    if not settings.build:
        if problem:
            raise RuntimeError(f"{problem}; rebuild it (drop --no-build) or pass --engines DIR")
        if missing:
            log(f"{directory} lacks {sorted(missing)}; those targets will be skipped (--no-build)")
    else:
        # always through the exporter: it reuses only files whose build inputs (SDK and tool
        # versions, options, weights) are unchanged, and rebuilds the rest
        precisions = {p for _, p in needed} | (set(manifest.precisions) if manifest and not problem else set())
        precisions = sorted(precisions or {"fp32"}, key=PRECISIONS.index)
        trt = "on" if any(r == "tensorrt" for r, _ in needed) else "off"
        previous_batch = (manifest.data.get("max_batch") or 0) if manifest else 0
        reason = problem or (f"missing {sorted(missing)}" if missing else "reusing what is up to date")
        log(f"building engines {directory} ({', '.join(precisions)}; tensorrt {trt}): {reason}")
        start = time.perf_counter()
        options = dict(precisions=precisions, resolution=resolution, tensorrt=trt,
                       max_batch=max(previous_batch, max(settings.batch_sizes)), progress=settings.progress,
                       log=lambda line: log(f"[build] {line}"))
        with peak_memory("cpu") as memory:
            if source["kind"] == "checkpoint":
                result = build_engines(source["path"] or source["name"], directory, **options)
            else:
                layers = int(model.config.transformer["num_layers"])
                result = build_engines(model=model, out=directory, calib="random", check_samples=1,
                                       calib_size=settings.int8_calib_samples, text_embedder=mode == "pipeline",
                                       int8_keep_blocks=1 if layers > 2 else 0, **options)
        build_seconds["engines"] = round(time.perf_counter() - start, 1)
        build_seconds["peak_rss_mib"] = memory.get("host_peak_rss_mib")
        manifest = result.manifest
    if manifest is None:
        raise RuntimeError(f"no usable engines in {directory}")
    artifacts = Artifacts(directory, manifest_config(manifest), manifest, build_seconds=build_seconds)
    for record in manifest.artifacts:
        if record["stage"] == "dit" and record["runtime"] == "onnx":
            artifacts.methods[record["precision"]] = record.get("details")
    return artifacts


def engines_mismatch(manifest, model, source: dict) -> str | None:
    """Why an engines directory does not hold *this* model (config, resolution and weights), or
    None. Checkpoints are compared by the exporter's checkpoint sha256; random models by its hash
    of config + state dict (what it records for in-memory models)."""
    from genmask_sdk.export.manifest import checkpoint_sha256

    recorded = (manifest.data.get("checkpoint") or {}).get("sha256")
    if manifest_config(manifest) != model.config:
        return f"{manifest.directory} was built for another config or resolution"
    if source["kind"] == "checkpoint" and source.get("path"):
        if recorded != checkpoint_sha256(source["path"]):
            return f"{manifest.directory} was built from another checkpoint than {source['path']}"
    elif source["kind"] == "random":
        from genmask_sdk.export.manifest import state_sha256  # the exporter's own definition of that hash

        if recorded != state_sha256(model):
            return f"{manifest.directory} was built from other weights than {source['name']} seed {source.get('seed')}"
    return None


# ------------------------------------------------------------------------------------ inputs
@dataclass
class Inputs:
    """What every target is fed at one resolution (CPU tensors; moved per target)."""

    pixels: torch.Tensor | None  # (1, 3, R, R) in [-1, 1]
    z_img: torch.Tensor  # (Bmax, 16, h, w)
    contexts: dict[int, tuple[torch.Tensor, torch.Tensor]]  # batch -> (context, mask)
    image: np.ndarray | None  # uint8 HxWx3 (end to end)
    prompts: tuple[str, ...]
    prompt_tokens: dict[int, int]  # batch -> padded prompt length of that batch


def pipeline_inputs(model, embedder, batch_sizes: list[int]) -> Inputs:
    from PIL import Image

    from genmask_sdk.data.examples import example_image_path
    from genmask_sdk.families.genmask.modeling.imaging import load_image, to_engine_pixels

    image = np.asarray(Image.open(example_image_path()).convert("RGB"))
    pixels, _ = to_engine_pixels(load_image(image), model.config.resolution)
    with torch.inference_mode():
        z = model.encode_image(pixels.to(model.device)).float().cpu()
    bmax = max(batch_sizes)
    prompts = tuple(PROMPTS[i % len(PROMPTS)] for i in range(bmax))
    contexts, tokens = {}, {}
    for b in batch_sizes:
        embedding = embed(embedder, image, list(prompts[:b]))
        length = int(embedding.mask.sum(dim=1).max())
        contexts[b] = (embedding.states[:, :length].float().cpu().contiguous(),
                       embedding.mask[:, :length].cpu().contiguous())
        tokens[b] = length
    return Inputs(pixels, z.expand(bmax, -1, -1, -1).contiguous(), contexts, image, prompts, tokens)


def random_inputs(config, batch_sizes: list[int], prompt_tokens: int, seed: int) -> Inputs:
    generator = torch.Generator().manual_seed(seed + 1)
    bmax, h, d = max(batch_sizes), config.latent_size, config.embedder.hidden_size
    z = torch.randn(bmax, 16, h, h, generator=generator)
    context = torch.randn(bmax, prompt_tokens, d, generator=generator)
    mask = torch.ones(bmax, prompt_tokens, dtype=torch.bool)
    contexts = {b: (context[:b].contiguous(), mask[:b].contiguous()) for b in batch_sizes}
    return Inputs(None, z, contexts, None, (), {b: prompt_tokens for b in batch_sizes})


def embed(embedder, image: np.ndarray | None, prompts: list[str]):
    """The embedder on ``prompts`` (with the image for image-aware embedders such as Qwen2.5-VL)."""
    if getattr(embedder, "uses_image", False) and image is not None:
        from PIL import Image

        return embedder([Image.fromarray(image)] * len(prompts), prompts)
    return embedder(None, prompts)


def clear_prompt_cache(embedder) -> None:
    """Empty the embedder's per-prompt cache (MiniLM keeps one) so each call embeds again."""
    cache = getattr(embedder, "_cache", None)
    if hasattr(cache, "clear"):
        cache.clear()


# ------------------------------------------------------------------------------------ measuring
def measure(fn: Callable[[], Any], sync: Callable[[], None], settings, before=None) -> tuple[dict, Any]:
    """Cold first call (compilation, allocation) timed on its own, then ``warmup - 1`` more
    warm-ups and ``repeats`` timed calls."""
    if before is not None:
        before()
    start = time.perf_counter()
    fn()
    sync()
    first = (time.perf_counter() - start) * 1000.0
    seconds, result = time_calls(fn, warmup=max(0, settings.warmup - 1), repeats=settings.repeats, sync=sync,
                                 before=before)
    return {**summarize(seconds), "first_call_ms": first, "warmup": settings.warmup}, result


def to_numpy(value) -> np.ndarray:
    """float32 host copy of a stage output (numpy, torch tensor, DeviceArray or OrtValue)."""
    from genmask_sdk.runtime.base import host_array

    if isinstance(value, torch.Tensor):
        value = value.detach().float()  # bf16 has no numpy dtype
    return host_array(value).astype(np.float32, copy=False)


def run_target(target: OpenedTarget, inputs: Inputs, mode: str, settings, flops: dict, embedder, config,
               bar) -> tuple[dict[str, list[dict]], dict[str, np.ndarray]]:
    """All stage measurements of one opened target -> (stages, outputs kept for fidelity)."""
    pipe, device, sync = target.pipeline, target.device, target.sync
    stages: dict[str, list[dict]] = {}
    outputs: dict[str, np.ndarray] = {}

    def record(stage: str, batch: int, summary: dict, flop_total: float | None) -> None:
        entry = {"batch": batch, **summary, "prompts_per_s": batch / (summary["p50_ms"] / 1000.0)}
        if flop_total:
            entry["flops"] = flop_total
            entry["tflops"] = flop_total / (summary["p50_ms"] / 1000.0) / 1e12
        stages.setdefault(stage, []).append(entry)
        bar.update(1)

    if mode == "pipeline":
        pixels = inputs.pixels.to(device)
        summary, z = measure(lambda: pipe.encode(pixels), sync, settings)
        record("vae_encoder", 1, summary, flops["vae_encoder"][1])
        outputs["z_img"] = to_numpy(z)
    for b in settings.batch_sizes:
        z = inputs.z_img[:b].to(device).contiguous()
        context, mask = (t.to(device) for t in inputs.contexts[b])
        summary, x0 = measure(lambda: pipe.denoise(z, context, mask), sync, settings)
        record("dit", b, summary, flops["dit"][b])
        if b == settings.batch_sizes[0]:
            outputs["x0"] = to_numpy(x0)[:1]
    if mode == "pipeline":
        latent = torch.from_numpy(outputs["x0"]).to(device)
        summary, logits = measure(lambda: pipe.decode(latent), sync, settings)
        record("mask_head", 1, summary, flops["mask_head"][1])
        outputs["head_logits"] = to_numpy(logits)
        from genmask_sdk.families.genmask.segmenter import Segmenter

        info = {"backend": target.spec.family, "precision": target.spec.precision, "provider": target.spec.variant,
                "fallbacks": [], "files": {}, "source": {"kind": "benchmark", "path": None},
                "max_batch": max(settings.batch_sizes), "max_prompt_tokens": config.embedder.max_prompt_tokens,
                "manifest": None}
        segmenter = Segmenter(pipe, embedder, config, info)
        for b in settings.e2e_batch_sizes:
            prompts = list(inputs.prompts[:b])
            breakdown: list[dict] = []

            def call():
                results = segmenter.predict(inputs.image, prompts)
                breakdown.append(dict(results[0].timings))
                return results

            summary, results = measure(call, sync, settings, before=lambda: clear_prompt_cache(embedder))
            timed = breakdown[-settings.repeats:]
            summary["breakdown_p50_ms"] = {k: float(np.median([t[k] for t in timed])) for k in timed[0]}
            record("end_to_end", b, summary, flops["end_to_end"][b])
            if b == settings.e2e_batch_sizes[0]:
                outputs["e2e_logits"] = np.asarray(results[0].logits, dtype=np.float32)
    return stages, outputs


def fidelity(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], head) -> dict[str, Any]:
    """Agreement with the reference target's outputs on the same inputs."""
    from genmask_sdk.metrics import mask_iou

    found: dict[str, Any] = {}
    if "x0" in outputs and "x0" in reference:
        a, b = outputs["x0"].ravel().astype(np.float64), reference["x0"].ravel().astype(np.float64)
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        found["dit_max_abs_diff"] = float(np.max(np.abs(a - b)))
        found["dit_mean_abs_diff"] = float(np.mean(np.abs(a - b)))
        found["dit_reference_max_abs"] = float(np.max(np.abs(b)))
        found["dit_cosine"] = float(a @ b / denom) if denom > 0 else 1.0
        if head is not None:
            with torch.inference_mode():
                mine = head(torch.from_numpy(outputs["x0"]).float()).numpy()[0, 0] > 0
                ref = head(torch.from_numpy(reference["x0"]).float()).numpy()[0, 0] > 0
            found["dit_mask_iou"] = mask_iou(mine, ref)
    if "e2e_logits" in outputs and "e2e_logits" in reference:
        a, b = outputs["e2e_logits"], reference["e2e_logits"]
        found["e2e_max_abs_logit_diff"] = float(np.max(np.abs(a - b)))
        found["e2e_mask_iou"] = mask_iou(a > 0, b > 0)
    return found


def attach_ratios(entries: list[dict], reference: dict[str, dict]) -> None:
    """Per entry: ``ratio_vs_reference`` = p50 / reference p50 of the same stage and batch (run
    targets only)."""
    for entry in entries:
        for stage, rows in entry.get("stages", {}).items():
            for row in rows:
                ref = reference.get(stage, {}).get(row["batch"])
                row["ratio_vs_reference"] = row["p50_ms"] / ref if ref else None


# ------------------------------------------------------------------------------------ main entry
def run_latency(settings: LatencySettings, log: Callable[[str], None] | None = None,
                argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; return the result dict (see module docstring and README for the schema)."""
    from tqdm.auto import tqdm

    log = log or (lambda line: print(f"[latency] {line}", file=sys.stderr, flush=True))
    if settings.quick:
        settings.apply_quick()
    if settings.e2e_batch_sizes is None:
        settings.e2e_batch_sizes = [settings.batch_sizes[0]] if settings.quick else list(settings.batch_sizes)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    specs = parse_targets(settings.backends)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    started = time.perf_counter()

    peak = measure_peak(settings, device, log)
    model, source = load_model(settings.model, settings.embedder, settings.seed)
    source["native_resolution"] = model.config.resolution
    mode = settings.mode
    if mode == "auto":
        mode = "dit-only" if source["kind"] == "random" and source["name"] == "wan2.1-1.3b" else "pipeline"
    resolutions = settings.resolutions or [model.config.resolution]
    own_work = settings.work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="genmask-bench-")) if own_work else Path(settings.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    embedder = model.embedder if mode == "pipeline" else None
    result: dict[str, Any] = {
        "schema": SCHEMA, "kind": "latency", "created": created, "command": argv,
        "settings": {**asdict(settings), "mode": mode, "resolutions": resolutions,
                     "backends": [s.name for s in specs], "reference": REFERENCE},
        "model": {**source, "config": model.config.to_dict()},
        "hardware": hardware(), "versions": versions(), "peak": peak,
        "flops_formulas": {"dit": DIT_FORMULA, "vae_encoder": VAE_FORMULA, "mask_head": HEAD_FORMULA,
                           "embed": EMBED_FORMULA},
        "resolutions": [],
    }
    holder = {"model": model}
    del model
    try:
        for resolution in resolutions:
            if holder["model"] is None:  # released after the previous resolution's torch targets
                holder["model"] = load_model(settings.model, settings.embedder, settings.seed)[0].to(device)
            at_resolution(holder["model"], resolution)
            result["resolutions"].append(
                run_resolution(holder, source, embedder, resolution, mode, specs, settings, work_dir, device, peak,
                               log, tqdm))
            gc.collect()
    finally:
        if own_work:
            shutil.rmtree(work_dir, ignore_errors=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _cpu_bf16_peak(n: int) -> dict[str, Any]:
    """The bf16 GEMM rate on CPU, or why it was not measured: emulated bf16 (no AVX512-BF16 or
    AMX-BF16) runs 15-25x slower than fp32 — minutes for 2048³ — and is no peak."""
    if not cpu_has_native_bf16():
        return {"dtype": "bfloat16", "skipped": "this CPU has no avx512_bf16 / amx_bf16"}
    try:
        return gemm_peak("bfloat16", n, "cpu", repeats=5)
    except Exception as exc:  # noqa: BLE001 - informative only
        return {"dtype": "bfloat16", "error": f"{type(exc).__name__}: {exc}"}


def measure_peak(settings, device: torch.device, log) -> dict[str, Any]:
    """The reference peak: ``--peak-tflops`` if given, else a measured GEMM (fp32 2048³ on CPU,
    fp16 8192³ on CUDA); on CPU a bf16 GEMM is recorded alongside (the AMX/AVX-512 limit)."""
    n_cpu = 512 if settings.quick else 2048
    extra = []
    if device.type == "cuda":
        reference = gemm_peak("float16", 2048 if settings.quick else 8192, "cuda", repeats=3 if settings.quick else 10)
    else:
        reference = gemm_peak("float32", n_cpu, "cpu", repeats=3 if settings.quick else 5)
        if not settings.quick:
            extra.append(_cpu_bf16_peak(n_cpu))
    log(f"GEMM reference: {reference['tflops'] * 1000:.1f} GFLOP/s ({reference['method']})")
    if settings.peak_tflops:
        return {"tflops": float(settings.peak_tflops), "source": "--peak-tflops", "measured": reference,
                "other_measured": extra}
    return {"tflops": reference["tflops"], "source": f"measured: {reference['method']} on {device.type}",
            "measured": reference, "other_measured": extra}


def run_resolution(holder: dict, source, embedder, resolution, mode, specs, settings, work_dir, device, peak, log,
                   tqdm) -> dict[str, Any]:
    """Everything measured at one resolution. ``holder["model"]`` is the PyTorch model; in dit-only
    mode it is released (set to None) once the PyTorch targets are done, to make room for the
    ONNX Runtime sessions."""
    model = holder["model"]
    log(f"resolution {resolution}: preparing engines ({mode})")
    artifacts = prepare_artifacts(model, source, resolution, mode, specs, settings, work_dir, device, log)
    config = model.config
    if mode == "pipeline":
        inputs = pipeline_inputs(model, embedder, sorted(set(settings.batch_sizes) | set(settings.e2e_batch_sizes)))
    else:
        inputs = random_inputs(config, settings.batch_sizes, settings.prompt_tokens, settings.seed)
    head = detached_head(model)

    flops: dict[str, dict[int, float]] = {"dit": {}, "vae_encoder": {}, "mask_head": {}, "end_to_end": {}}
    for b in settings.batch_sizes:
        flops["dit"][b] = dit_flops(config, inputs.prompt_tokens[b], b).total
    shared: dict[str, Any] = {}
    if mode == "pipeline":
        flops["vae_encoder"][1] = vae_encoder_flops(config).total
        flops["mask_head"][1] = mask_head_flops(config).total
        shared["embed"] = measure_embed(embedder, inputs, settings, device)
        for b in settings.e2e_batch_sizes:
            embed = embedder_flops(embedder, inputs.prompt_tokens.get(b, 8), b)
            dit = dit_flops(config, inputs.prompt_tokens.get(b, 8), b).total
            flops["end_to_end"][b] = (vae_encoder_flops(config).total + dit + mask_head_flops(config, b).total
                                      + (embed.total if embed else 0.0))
        for row in shared["embed"]:
            embed = embedder_flops(embedder, inputs.prompt_tokens[row["batch"]], row["batch"])
            if embed:
                row["flops"] = embed.total
                row["tflops"] = embed.total / (row["p50_ms"] / 1000.0) / 1e12
                row["peak_fraction"] = row["tflops"] / peak["tflops"]

    n_measures = len(settings.batch_sizes) + (3 + len(settings.e2e_batch_sizes) if mode == "pipeline" else 0)
    entries: list[dict[str, Any]] = []
    outputs_by_target: dict[str, dict[str, np.ndarray]] = {}
    torch_left = sum(1 for s in specs if s.family == "torch")
    with tqdm(total=n_measures * len(specs), desc=f"latency r{resolution}", disable=not settings.progress,
              file=sys.stderr) as bar:
        for spec in specs:
            bar.set_postfix_str(spec.name)
            described = {k: v for k, v in spec.to_json().items() if k != "name"}
            entry: dict[str, Any] = {"target": spec.name, **described, "status": "ok", "reason": None}
            with peak_memory(str(device) if spec.needs_cuda or spec.family == "torch" else "cpu") as memory:
                target = None
                try:
                    start = time.perf_counter()
                    target = open_target(spec, artifacts, model=model, device=device, threads=settings.threads,
                                         log=log)
                    entry["open_seconds"] = round(time.perf_counter() - start, 2)
                    entry["details"] = target.details
                    entry["stages"], outputs_by_target[spec.name] = run_target(
                        target, inputs, mode, settings, flops, embedder, config, bar)
                except TargetUnavailable as exc:
                    entry.update(status="skipped", reason=str(exc))
                    log(f"{spec.name}: skipped: {exc}")
                    bar.update(n_measures)
                except Exception as exc:  # noqa: BLE001 - recorded, never hidden
                    entry.update(status="failed", reason=f"{type(exc).__name__}: {str(exc).strip()[:2000]}")
                    log(f"{spec.name}: FAILED: {entry['reason'][:300]}")
                    if spec.name == REFERENCE:
                        raise
                    bar.update(0)
                finally:
                    if target is not None:
                        target.close()
            entry["memory"] = memory
            entries.append(entry)
            if spec.family == "torch":
                torch_left -= 1
                if torch_left == 0 and mode == "dit-only":
                    model = holder["model"] = None  # ONNX Runtime / TensorRT do not need the PyTorch weights
                    gc.collect()

    reference_outputs = outputs_by_target.get(REFERENCE, {})
    ref_entry = next(e for e in entries if e["target"] == REFERENCE)
    reference = {stage: {row["batch"]: row["p50_ms"] for row in rows}
                 for stage, rows in (ref_entry.get("stages") or {}).items()}
    attach_ratios(entries, reference)
    for entry in entries:
        for rows in (entry.get("stages") or {}).values():
            for row in rows:
                if "tflops" in row:
                    row["peak_fraction"] = row["tflops"] / peak["tflops"]
        if entry["status"] == "ok" and entry["target"] != REFERENCE:
            entry["fidelity"] = fidelity(outputs_by_target[entry["target"]], reference_outputs, head)
    if "embed" in shared:
        for row in shared["embed"]:
            ref = reference.get("end_to_end", {}).get(row["batch"])
            row["share_of_reference_e2e"] = row["p50_ms"] / ref if ref else None
    return {
        "resolution": resolution, "mode": mode, "tokens_per_frame": config.tokens_per_frame,
        "prompt_tokens": {str(b): n for b, n in inputs.prompt_tokens.items()},
        "flops": {stage: {str(b): v for b, v in by_batch.items()} for stage, by_batch in flops.items() if by_batch},
        "vae_encoder_executed_flops": vae_encoder_flops(config, executed=True).total if mode == "pipeline" else None,
        "artifacts": {"directory": str(artifacts.directory), "methods": artifacts.methods,
                      "build_seconds": artifacts.build_seconds},
        "shared": shared, "targets": entries,
    }


def measure_embed(embedder, inputs: Inputs, settings, device: torch.device) -> list[dict]:
    """The embedder (PyTorch, shared by every backend) at each batch size, cache cleared per call."""
    rows = []
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for b in settings.e2e_batch_sizes:
        prompts = list(inputs.prompts[:b])
        summary, _ = measure(lambda: embed(embedder, inputs.image, prompts), sync, settings,
                             before=lambda: clear_prompt_cache(embedder))
        rows.append({"batch": b, **summary, "prompts_per_s": b / (summary["p50_ms"] / 1000.0),
                     "runs_on": "PyTorch (every backend)"})
    return rows

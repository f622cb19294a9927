#!/usr/bin/env python
"""gen2seg at real size (random weights): ONNX export with external data, fidelity, and per-stage
latency of PyTorch eager vs the engines, plus the host-side prompt step, all in one run.

    # ViT-MAE-Huge at 224² (gen2seg-mae-h's architecture): fp32 graph ~2.6 GB -> external data
    python benchmarks/gen2seg_real_size.py --variant mae --precisions fp32,fp16 --threads 2
    # SD 2 UNet + VAE (gen2seg-sd's architecture) at a fixed S x S (default 512; offered, heavy on a CPU)
    python benchmarks/gen2seg_real_size.py --variant sd --size 512
    # smoke test on the tiny random configs (what tests/test_gen2seg_real_size.py runs)
    python benchmarks/gen2seg_real_size.py --variant mae --quick --out-dir /tmp/g2s

Steps (each a "phase" in the results, with its wall time and the process's peak RSS so far):

1. ``model``: a random-weight gen2seg model (``torch.manual_seed(--seed)``): ViT-MAE-H
   (``configs.VIT_MAE_HUGE``) or SD 2's UNet + VAE (``configs.build_sd2_unet/vae``; the
   empty-prompt embedding c∅ is drawn N(0, 1) at CLIP's shape (1, 2, 1024), no text encoder is
   built); ``--quick``: ``configs.tiny_mae_config`` / ``configs.tiny_sd_components``.
2. ``save``: ``save_pretrained`` to ``<work-dir>/checkpoint`` (``build_gen2seg_engines`` takes a
   checkpoint, not a model), then the in-memory model is dropped.
3. ``build``: ``build_gen2seg_engines(checkpoint, <work-dir>/engines, --precisions)``: graphs whose
   weights exceed ``EXTERNAL_DATA_THRESHOLD`` (1.8 GB) get ``<file>.data``; every graph is checked
   against PyTorch (max abs error) and each precision set end to end (colour-map error, prompt
   IoU; random weights give noise-like maps, so these end-to-end checks are recorded, not
   enforced, and INT8 is calibrated on ``--calib-size`` noise images: ``calib="random"``,
   ``enforce_end_to_end=False``). ``--external-data-threshold`` overrides the module constant for the run (the builder has
   no parameter for it; the value used is recorded).
4. ``torch``: the checkpoint reloaded (``load_gen2seg``) and run through ``TorchColorizer``
   (the reference ``colorize``), fp32 eager, ``--threads`` torch threads.
5. ``ort-<precision>``: ``genmask_sdk.families.gen2seg.engines.open_colorizer(engines, precision=...)``
   (manifest + sha256 verified), ONNX Runtime CPU. ``open_colorizer`` has no thread option, so
   each of its sessions is re-created with ``intra_op_num_threads = --threads`` (same file,
   same provider) before timing; the open time reported is ``open_colorizer``'s own.

Latency: ``color_map(rgb)`` end to end on a synthetic ``--image`` (default 640x480) image,
``--warmup`` untimed then ``--repeats`` timed calls (``bench.stats.time_calls``; p50/p90/p99 by
``bench.stats.summarize``), with the per-stage split from the same calls: the engines' own
per-graph timer (``EngineColorizer.timings``) and, for PyTorch, forward hooks on the module each
graph wraps (MAE: ``Gen2SegMAE.forward``, i.e. all but ``unpatchify``; SD: ``vae.encoder``,
``unet``, ``vae.decoder``, i.e. all but the 1x1 quant convs and the scaling). ``host`` = end to end
minus the stages (resize, normalisation, min-max, uint8, LANCZOS back). Each engine set's colour map
on that image is also compared with the PyTorch reference (``families.gen2seg.export.build.reference_color``,
the same host processing).

Prompt step: on the fp32 (else the first built) engines' colour map of a S x S image and of the
``--image`` one: ``point_prompt_mask`` with one point (refined: OpenCV's joint bilateral filter,
``PromptConfig()``; and unrefined) and ``segment_everything`` (16 x 16 grid, refined),
``--warmup`` + ``--prompt-repeats`` calls each (``--quick``: a 96x72 image, a 4 x 4 grid, 1 call).
Maps of random weights are smooth noise, so the masks (and segment_everything's candidate count,
which drives its cost) are not those of a trained model's flat maps; the count found is recorded.

Writes ``<out-dir>/gen2seg_real_size_<variant>.json`` and ``.md`` (``--name`` overrides), with the
machine (``bench.system.hardware()``: CPU model and ISA flags, memory, threads) and versions; the
load average at the start and end of each phase is recorded (other processes sharing the cores
perturb the timings). Exits 1 after writing the results when the build fails (the error and its
traceback are in ``build.error``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = ("mae", "sd")
QUICK_SD_SIZE = 64


# --------------------------------------------------------------------------------------- memory
def peak_rss_gib() -> float:
    """This process's peak resident set size so far (Linux ``ru_maxrss`` is in KiB). Never reset
    here, so it matches what ``/usr/bin/time -v`` reports for the whole run."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def rss_gib() -> float | None:
    """Current VmRSS of this process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return None


class Phases:
    """Wall time, RSS at the end, peak RSS so far and the load average of each step."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.log = log

    @contextmanager
    def __call__(self, name: str) -> Iterator[dict[str, Any]]:
        record: dict[str, Any] = {"loadavg_start": _loadavg()}
        self.records[name] = record
        self.log(f"phase {name} ...")
        start = time.perf_counter()
        try:
            yield record
        finally:
            gc.collect()
            record.update(seconds=round(time.perf_counter() - start, 2), rss_end_gib=_round(rss_gib()),
                          peak_rss_gib_so_far=round(peak_rss_gib(), 3), loadavg_end=_loadavg())
            self.log(f"phase {name}: {record['seconds']:.1f} s, RSS now {record['rss_end_gib']} GiB, "
                     f"peak so far {record['peak_rss_gib_so_far']} GiB")


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# ---------------------------------------------------------------------------------------- model
def build_random_model(variant: str, quick: bool, size: int | None, seed: int = 0):
    """A random-weight ``Gen2SegMAE`` / ``Gen2SegSD`` (fp32, CPU, eval) and a description."""
    import torch

    from genmask_sdk.families.gen2seg.modeling import Gen2SegConfig, Gen2SegMAE, Gen2SegSD
    from genmask_sdk.families.gen2seg.modeling import configs

    torch.manual_seed(seed)
    if variant == "mae":
        from transformers import ViTMAEConfig

        mae_config = configs.tiny_mae_config() if quick else ViTMAEConfig(**configs.VIT_MAE_HUGE)
        native = int(mae_config.image_size)
        if size is not None and size != native:
            raise SystemExit(f"--size {size}: the MAE variant runs at the ViT's native {native}x{native}.")
        name = "random tiny ViT-MAE" if quick else "random ViT-MAE-Huge (configs.VIT_MAE_HUGE)"
        model = Gen2SegMAE.from_config(mae_config, Gen2SegConfig.mae(processing_size=native, name=name))
        architecture = {k: getattr(mae_config, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                            "intermediate_size", "patch_size", "image_size",
                                                            "decoder_hidden_size", "decoder_num_hidden_layers")}
    else:
        size = size or (QUICK_SD_SIZE if quick else 512)
        if size % 8:
            raise SystemExit(f"--size {size}: the SD processing size must be a multiple of 8.")
        if quick:
            parts = configs.tiny_sd_components(seed=seed)
            config = Gen2SegConfig.sd(processing_size=size, name="random tiny SD")
            model = Gen2SegSD.from_components(parts["vae"], parts["unet"], parts["text_encoder"], parts["tokenizer"],
                                              parts["scheduler_config"], config)
        else:
            config = Gen2SegConfig.sd(processing_size=size, name="random SD 2 UNet + VAE (configs.SD2_UNET/VAE)")
            vae, unet = configs.build_sd2_vae("cpu").eval(), configs.build_sd2_unet("cpu").eval()
            width = int(configs.SD2_TEXT_ENCODER["hidden_size"])
            embedding = torch.randn(1, 2, width, generator=torch.Generator().manual_seed(seed))
            model = Gen2SegSD(config, vae, unet, dict(configs.SD2_SCHEDULER), embedding)
        architecture = {"unet_block_out_channels": list(model.unet.config.block_out_channels),
                        "vae_block_out_channels": list(model.vae.config.block_out_channels),
                        "cross_attention_dim": int(model.unet.config.cross_attention_dim),
                        "empty_prompt_embedding": list(model.empty_prompt_embedding.shape)}
    model = model.float().eval()
    parameters = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    info = {"variant": variant, "name": model.config.name, "quick": quick, "seed": seed, "parameters": parameters,
            "weight_bytes": weight_bytes, "processing_size": int(model.config.processing_size),
            "config": json.loads(model.config.to_json()), "architecture": architecture}
    return model, info


# --------------------------------------------------------------------------------------- images
def synthetic_image(height: int, width: int, size: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The builder's first synthetic check image (flat objects on a dark background) resized to
    (height, width), and its object centres scaled to that size."""
    from PIL import Image

    from genmask_sdk.families.gen2seg.export.build import check_images

    image, points = check_images(1, size)[0]
    h0, w0 = image.shape[:2]
    resized = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
    scaled = [(min(width - 1, round(x * width / w0)), min(height - 1, round(y * height / h0))) for x, y in points]
    return np.ascontiguousarray(resized), scaled


# -------------------------------------------------------------------------------------- timings
class TorchStageTimer:
    """Forward hooks that time, per call, the module each engine graph wraps."""

    def __init__(self, model) -> None:
        if model.config.variant == "mae":
            modules = {"mae": model}
        else:
            modules = {"vae_encoder": model.vae.encoder, "unet": model.unet, "vae_decoder": model.vae.decoder}
        self.timings: dict[str, float] = {}
        self._start: dict[str, float] = {}
        self._handles = []
        for stage, module in modules.items():
            self._handles.append(module.register_forward_pre_hook(self._pre(stage)))
            self._handles.append(module.register_forward_hook(self._post(stage)))

    def _pre(self, stage: str):
        def hook(module, args):
            self._start[stage] = time.perf_counter()
        return hook

    def _post(self, stage: str):
        def hook(module, args, output):
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - self._start.pop(stage)
        return hook

    def reset(self) -> None:
        self.timings = {}

    def current(self) -> dict[str, float]:
        return self.timings

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def time_colourizer(color_map: Callable[[np.ndarray], np.ndarray], rgb: np.ndarray, stages: Sequence[str],
                    stage_timings: Callable[[], dict[str, float]], reset: Callable[[], None] | None,
                    warmup: int, repeats: int) -> tuple[dict[str, Any], np.ndarray]:
    """``color_map(rgb)`` ``warmup`` + ``repeats`` times; end-to-end, per-stage and host summaries
    from the same timed calls."""
    from genmask_sdk.bench.stats import summarize, time_calls

    per_stage: dict[str, list[float]] = {s: [] for s in stages}

    def call() -> np.ndarray:
        if reset is not None:
            reset()
        out = color_map(rgb)
        timings = stage_timings()
        for stage in stages:
            per_stage[stage].append(float(timings[stage]))
        return out

    seconds, result = time_calls(call, warmup=warmup, repeats=repeats)
    stage_seconds = {s: v[-repeats:] for s, v in per_stage.items()}
    host = [total - sum(stage_seconds[s][i] for s in stages) for i, total in enumerate(seconds)]
    return {"end_to_end": summarize(seconds), "stages": {s: summarize(v) for s, v in stage_seconds.items()},
            "host": summarize(host), "seconds": [round(s, 6) for s in seconds]}, result


def colour_errors(ours_float: np.ndarray, ours_map: np.ndarray, reference: tuple[np.ndarray, np.ndarray]) -> dict:
    ref_float, ref_map = reference
    return {"colour_max_abs_error": float(np.abs(ours_float.astype(np.float64) - ref_float).max()),
            "colour_mean_abs_error": float(np.abs(ours_float.astype(np.float64) - ref_float).mean()),
            "colour_uint8_max_abs_error": int(np.abs(ours_map.astype(np.int16) - ref_map.astype(np.int16)).max()),
            "reference": "pytorch float32 (families.gen2seg.export.build.reference_color, same host processing)"}


def open_engines(directory: Path, precision: str, threads: int | None):
    """``open_colorizer`` (timed), then its ONNX Runtime sessions re-created with ``threads``."""
    from genmask_sdk.families.gen2seg.engines import open_colorizer

    start = time.perf_counter()
    colorizer = open_colorizer(directory, backend="onnxruntime", precision=precision)
    opened = time.perf_counter() - start
    reopened = None
    if threads:
        start = time.perf_counter()
        for runner in colorizer.runners.values():
            runner.close()
            runner.intra_op_num_threads = int(threads)
            runner.load()
        reopened = time.perf_counter() - start
    return colorizer, opened, reopened


# ---------------------------------------------------------------------------------------- prompt
def prompt_costs(maps: dict[str, tuple[np.ndarray, list[tuple[int, int]]]], warmup: int, repeats: int,
                 grid: int) -> list[dict[str, Any]]:
    """point_prompt_mask (refined, unrefined) and segment_everything on each named colour map."""
    from genmask_sdk.bench.stats import summarize, time_calls
    from genmask_sdk.families.gen2seg import PromptConfig, point_prompt_mask, segment_everything

    rows = []
    refined, raw = PromptConfig(), PromptConfig(refine=False)
    for label, (cmap, points) in maps.items():
        point = [points[0]]
        cases = [
            ("point_prompt_mask", "1 point, PromptConfig() (joint bilateral refinement)",
             lambda c=cmap, p=point: point_prompt_mask(c, p, config=refined)),
            ("point_prompt_mask_unrefined", "1 point, PromptConfig(refine=False)",
             lambda c=cmap, p=point: point_prompt_mask(c, p, config=raw)),
            ("segment_everything", f"grid {grid}x{grid}, PromptConfig() (refined)",
             lambda c=cmap: segment_everything(c, config=refined, grid=grid)),
        ]
        for name, what, fn in cases:
            seconds, result = time_calls(fn, warmup=warmup, repeats=repeats)
            row = {"map": label, "height": int(cmap.shape[0]), "width": int(cmap.shape[1]), "step": name,
                   "what": what, **summarize(seconds)}
            if name == "segment_everything":
                row["masks"] = len(result)
            else:
                row["point"] = list(point[0])
                row["mask_area"] = int(result[0].sum())
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------- run
def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> tuple[dict[str, Any], int]:
    """Everything the script does; returns (results, exit status)."""
    import torch

    from genmask_sdk.bench.system import hardware, versions

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    threads = int(args.threads) if args.threads else None
    if threads:
        torch.set_num_threads(threads)
    height, width = _image_size(args.image)
    phases = Phases(log)
    started = time.time()
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix=f"gen2seg-{args.variant}-"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint, engines = work / "checkpoint", work / "engines"
    results: dict[str, Any] = {
        "benchmark": "gen2seg_real_size", "variant": args.variant, "quick": bool(args.quick),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "command": _command(args.argv or []), "notes": list(args.note),
        "settings": {"precisions": precisions, "threads": threads, "warmup": args.warmup, "repeats": args.repeats,
                     "prompt_repeats": args.prompt_repeats, "grid": args.grid, "check_samples": args.check_samples,
                     "image": [height, width], "work_dir": str(work), "seed": args.seed},
    }
    status = 0
    try:
        # 1-2. model, checkpoint ---------------------------------------------------------------
        with phases("model"):
            model, results["model"] = build_random_model(args.variant, args.quick, args.size, args.seed)
        size = results["model"]["processing_size"]
        with phases("save"):
            shutil.rmtree(checkpoint, ignore_errors=True)
            model.save_pretrained(checkpoint)
            results["model"]["checkpoint_bytes"] = sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())
            del model
        # 3. build ------------------------------------------------------------------------------
        results["build"] = build(checkpoint, engines, precisions, args, phases, log)
        if results["build"].get("error"):
            return results, 1
        # 4-5. latency + fidelity on the same image ----------------------------------------------
        rgb, points = synthetic_image(height, width, size)
        square, square_points = synthetic_image(size, size, size)
        results["latency"], maps = latency(checkpoint, engines, precisions, size, rgb, square, args, threads, phases)
        # 6. prompt step --------------------------------------------------------------------------
        with phases("prompt"):
            results["prompt_step"] = {"source": maps["source"], "rows": prompt_costs(
                {f"{size}x{size}": (maps["square"], square_points), f"{width}x{height}": (maps["image"], points)},
                args.warmup, args.prompt_repeats, args.grid)}
    except Exception as exc:  # keep what was measured; the error and its traceback go into the results
        results["error"] = {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}
        log(f"failed:\n{results['error']['traceback']}")
        status = 1
    finally:
        results["phases"] = phases.records
        results["peak_rss_gib"] = round(peak_rss_gib(), 3)
        results["wall_seconds"] = round(time.time() - started, 1)
        results["hardware"] = hardware()
        results["versions"] = versions()
        if not args.keep and not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    return results, status


def build(checkpoint: Path, engines: Path, precisions: list[str], args, phases: Phases, log) -> dict[str, Any]:
    from genmask_sdk.families.gen2seg.export import build as gen2seg_build
    from genmask_sdk.families.gen2seg.export.build import build_gen2seg_engines

    default_threshold = gen2seg_build.EXTERNAL_DATA_THRESHOLD
    threshold = default_threshold if args.external_data_threshold is None else int(args.external_data_threshold)
    record: dict[str, Any] = {"external_data_threshold": threshold, "calib": "random", "calib_size": args.calib_size,
                              "enforce_end_to_end": False,
                              "external_data_threshold_default": default_threshold, "error": None}
    with phases("build") as phase:
        gen2seg_build.EXTERNAL_DATA_THRESHOLD = threshold
        start = time.perf_counter()
        try:
            # random weights: maps are smooth noise, so the end-to-end mask checks are recorded, not enforced,
            # and INT8 is calibrated on noise images (what the numbers mean: speed and graph fidelity only)
            result = build_gen2seg_engines(checkpoint, engines, precisions, progress=False,
                                           check_samples=args.check_samples, log=lambda line: log(f"[build] {line}"),
                                           calib="random", calib_size=args.calib_size, enforce_end_to_end=False)
        except Exception as exc:  # recorded (with its traceback) and reported; the script then exits 1
            record["error"] = {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}
            log(f"build_gen2seg_engines failed:\n{record['error']['traceback']}")
        finally:
            gen2seg_build.EXTERNAL_DATA_THRESHOLD = default_threshold
            record["wall_seconds"] = round(time.perf_counter() - start, 1)
    record["peak_rss_gib_after"] = phase["peak_rss_gib_so_far"]
    if record["error"]:
        return record
    manifest = result.manifest
    record.update(seconds=round(result.seconds, 1), directory=str(result.directory), built=list(result.built))
    artifacts = []
    for entry in manifest.artifacts:
        fidelity = entry["fidelity"]
        external = {e["file"]: e["bytes"] for e in entry["external_data"]}
        artifacts.append({
            "file": entry["file"], "stage": entry["stage"], "precision": entry["precision"], "bytes": entry["bytes"],
            "external_data": external, "total_bytes": entry["bytes"] + sum(external.values()),
            "export_seconds": entry["export_seconds"], "max_abs_error": fidelity["max_abs_error"],
            "mean_abs_error": fidelity["mean_abs_error"], "reference_max_abs": fidelity["reference_max_abs"],
            "tolerance": fidelity["tolerance"], "check_samples": fidelity["samples"],
            "casts": entry["details"].get("casts"), "nodes": sum(entry["graph"]["ops"].values())})
    record["artifacts"] = artifacts
    record["end_to_end"] = {p: {k: v for k, v in e.items() if k not in ("reference", "runtime")}
                            for p, e in manifest.data["end_to_end"].items()}
    return record


def latency(checkpoint: Path, engines: Path, precisions: list[str], size: int, rgb: np.ndarray, square: np.ndarray,
            args, threads: int | None, phases: Phases) -> tuple[dict[str, Any], dict[str, Any]]:
    """PyTorch eager, then each engine set (one model in memory at a time)."""
    import torch

    from genmask_sdk.families.gen2seg.export.build import reference_color
    from genmask_sdk.families.gen2seg.modeling import load_gen2seg
    from genmask_sdk.families.gen2seg.modeling.colorizer import TorchColorizer
    from genmask_sdk.families.gen2seg.pipeline import STAGES

    backends = []
    with phases("torch") as phase:
        start = time.perf_counter()
        model = load_gen2seg(checkpoint).float().eval()
        loaded = time.perf_counter() - start
        stages = STAGES[model.config.variant]
        with torch.inference_mode():
            reference = reference_color(model, rgb, size)
        colorizer = TorchColorizer(model)
        timer = TorchStageTimer(model)
        try:
            timing, torch_map = time_colourizer(colorizer.color_map, rgb, stages, timer.current, timer.reset,
                                                args.warmup, args.repeats)
        finally:
            timer.remove()
        backends.append({"name": "torch-eager-fp32", "backend": "torch", "precision": "fp32", "threads":
                         torch.get_num_threads(), "open_seconds": round(loaded, 2), **timing,
                         "stage_method": "forward hooks on the wrapped modules (see the script's docstring)",
                         "colorizer": "TorchColorizer.color_map (Gen2SegMAE/Gen2SegSD.colorize)",
                         "vs_reference": {"colour_uint8_max_abs_error": int(np.abs(
                             torch_map.astype(np.int16) - reference[1].astype(np.int16)).max()),
                             "note": "SD: colorize pads to a multiple of 8, the engines to S x S"}})
        colorizer.close()
        del model, colorizer, timer
        phase["backend"] = "torch-eager-fp32"
    maps: dict[str, Any] = {}
    for precision in precisions:
        with phases(f"ort-{precision}") as phase:
            colorizer, opened, reopened = open_engines(engines, precision, threads)
            try:
                timing, engine_map = time_colourizer(colorizer.color_map, rgb, stages, lambda: colorizer.timings,
                                                     None, args.warmup, args.repeats)
                errors = colour_errors(colorizer.color_float(rgb), engine_map, reference)
                if not maps or precision == "fp32":
                    maps = {"source": f"ort-cpu-{precision}", "image": engine_map,
                            "square": colorizer.color_map(square)}
            finally:
                colorizer.close()
            backends.append({"name": f"ort-cpu-{precision}", "backend": "onnxruntime", "precision": precision,
                             "threads": threads, "open_seconds": round(opened, 2),
                             "reopen_with_threads_seconds": _round(reopened, 2), **timing,
                             "stage_method": "EngineColorizer.timings (per graph, session.run)",
                             "colorizer": "genmask_sdk.families.gen2seg.engines.open_colorizer(...).color_map",
                             "vs_reference": errors})
            phase["backend"] = f"ort-cpu-{precision}"
    base = backends[0]["end_to_end"]["p50_ms"]
    for entry in backends:
        entry["x_torch_p50"] = round(entry["end_to_end"]["p50_ms"] / base, 3)
    return {"input": {"height": int(rgb.shape[0]), "width": int(rgb.shape[1]), "processing_size": size},
            "warmup": args.warmup, "repeats": args.repeats, "stages": list(stages), "backends": backends}, maps


def _command(argv: Sequence[str]) -> str:
    """The command line, each ``--note`` value shortened to "..." (the notes are recorded apart)."""
    words, skip = ["benchmarks/gen2seg_real_size.py"], False
    for word in argv:
        words.append("..." if skip else word)
        skip = word == "--note"
    return " ".join(words)


def _image_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--image {text!r}: use WIDTHxHEIGHT, e.g. 640x480.") from None
    if width < 1 or height < 1:
        raise SystemExit(f"--image {text!r}: sizes must be positive.")
    return height, width


# -------------------------------------------------------------------------------------- report
def _gb(value: float) -> str:
    return f"{value / 1e9:.3f}"


def markdown(results: dict[str, Any]) -> str:
    model, build, hw = results.get("model", {}), results.get("build", {}), results["hardware"]
    cpu, ver = hw["cpu"], results["versions"]
    lines = [f"# gen2seg real size: {results['variant']} ({model.get('name', '?')})", "",
             f"- machine: {cpu['model']}, {cpu['usable_cpus']} usable CPUs, ISA flags "
             f"{', '.join(cpu['flags']) or 'none'}"
             f", {hw['memory_gib']} GiB; threads {results['settings']['threads']}",
             f"- torch {ver.get('torch')}, transformers {ver.get('transformers')}, diffusers {ver.get('diffusers')}, "
             f"onnx {ver.get('onnx')}, onnxruntime {ver.get('onnxruntime')}; {results['created']}",
             f"- command: `{results['command']}`"]
    lines += [f"- note: {note}" for note in results.get("notes", [])]
    if model:
        lines.append(f"- model: {model['parameters']:,} parameters, {_gb(model['weight_bytes'])} GB fp32 weights, "
                     f"{model['processing_size']}² processing size; random weights (seed {model['seed']})")
    lines.append(f"- whole run {results['wall_seconds']} s, peak RSS {results['peak_rss_gib']} GiB (ru_maxrss)")
    if results.get("error"):
        err = results["error"]
        lines += ["", f"**Failed**: `{err['type']}: {err['message']}`", "", "```", err["traceback"].rstrip(), "```"]
    lines += ["", "## Phases", "",
              "| phase | seconds | RSS at end GiB | peak RSS so far GiB | load avg start → end |",
              "|---|---:|---:|---:|---|"]
    for name, p in results["phases"].items():
        lines.append(f"| {name} | {p.get('seconds')} | {p.get('rss_end_gib')} | {p.get('peak_rss_gib_so_far')} | "
                     f"{(p.get('loadavg_start') or ['?'])[0]} → {(p.get('loadavg_end') or ['?'])[0]} |")
    if build:
        lines += ["", "## Build (`build_gen2seg_engines`)", ""]
        if build.get("error"):
            err = build["error"]
            lines += [f"**Failed** after {build['wall_seconds']} s: `{err['type']}: {err['message']}`", "", "```",
                      err["traceback"].rstrip(), "```"]
        else:
            lines += [f"{build['seconds']} s (builder's own timer), peak RSS after the build "
                      f"{build['peak_rss_gib_after']} GiB; external-data threshold {build['external_data_threshold']:,}"
                      " bytes", "", "| file | graph GB | external data GB | export s | max abs err vs torch | "
                      "tolerance | max abs ref | Casts |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
            for a in build["artifacts"]:
                ext = sum(a["external_data"].values())
                lines.append(f"| {a['file']} | {_gb(a['bytes'])} | {_gb(ext) if ext else '-'} | "
                             f"{a['export_seconds']} | "
                             f"{a['max_abs_error']:.3g} | {a['tolerance']:.3g} | {a['reference_max_abs']:.3g} | "
                             f"{a['casts'] if a['casts'] is not None else '-'} |")
            lines += ["", "End to end (builder's check images): colour map vs PyTorch, 0..255 units", "",
                      "| set | colour max err (float) | uint8 max err | prompt IoU mean / min |",
                      "|---|---:|---:|---:|"]
            for p, e in build["end_to_end"].items():
                lines.append(f"| {p} | {e['colour_max_abs_error']:.4g} | {e['colour_uint8_max_abs_error']} | "
                             f"{e['mask_iou_mean']:.4f} / {e['mask_iou_min']:.4f} |")
    lat = results.get("latency")
    if lat:
        stages = lat["stages"]
        lines += ["", f"## Latency: `color_map` on a {lat['input']['width']}x{lat['input']['height']} image "
                      f"({lat['warmup']} warm-up + {lat['repeats']} timed calls, ms)", "",
                  "| backend | open s | end to end p50 | p90 | p99 | " + " | ".join(f"{s} p50 | {s} p90 | {s} p99"
                                                                        for s in stages)
                  + " | host p50 | × torch | colour err vs torch (float / uint8) |",
                  "|---|---:|---:|---:|---:|" + "---:|" * (3 * len(stages)) + "---:|---:|---|"]
        for b in lat["backends"]:
            e2e, vs = b["end_to_end"], b["vs_reference"]
            cells = " | ".join(f"{b['stages'][s]['p50_ms']:.1f} | {b['stages'][s]['p90_ms']:.1f} | "
                               f"{b['stages'][s]['p99_ms']:.1f}" for s in stages)
            err = (f"{vs['colour_max_abs_error']:.3g} / {vs['colour_uint8_max_abs_error']}"
                   if "colour_max_abs_error" in vs else f"reference (its colorize vs the engine processing: uint8 "
                                                          f"{vs['colour_uint8_max_abs_error']})")
            lines.append(f"| {b['name']} | {b['open_seconds']} | {e2e['p50_ms']:.1f} | {e2e['p90_ms']:.1f} | "
                         f"{e2e['p99_ms']:.1f} | {cells} | {b['host']['p50_ms']:.1f} | {b['x_torch_p50']} | {err} |")
        lines += ["", "open s: torch = `load_gen2seg`; ORT = `open_colorizer` (manifest + sha256 of every file), the "
                      "sessions then re-created with the thread count. Stages: ORT = the runtime's per-graph timer; "
                      "torch = forward hooks on the wrapped modules. host = end to end − stages."]
    prompt = results.get("prompt_step")
    if prompt:
        lines += ["", f"## Prompt step (host, numpy + OpenCV) on the {prompt['source']} colour maps, ms", "",
                  "| map | step | n | p50 | p90 | p99 | result |", "|---|---|---:|---:|---:|---:|---|"]
        for r in prompt["rows"]:
            result = f"{r['masks']} masks" if "masks" in r else f"mask area {r['mask_area']} px"
            lines.append(f"| {r['map']} | {r['step']} ({r['what']}) | {r['n']} | {r['p50_ms']:.2f} | "
                         f"{r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {result} |")
        lines += ["", "Random weights: the maps are smooth noise, not a trained model's flat objects, so mask areas "
                      "and segment_everything's candidate count (its cost) are not representative of real images."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add = parser.add_argument
    add("--variant", choices=VARIANTS, default="mae", help="mae: ViT-MAE-Huge 224²; sd: SD 2 UNet + VAE")
    add("--size", type=int, default=None, help="SD processing size S (default 512; --quick 64); MAE: must be 224")
    add("--precisions", default="fp32,fp16", help="comma-separated subset of fp32,fp16,int8 (default fp32,fp16)")
    add("--calib-size", type=int, default=8, help="INT8 calibration images (random noise: random weights; default 8)")
    add("--threads", type=int, default=2, help="torch threads and ONNX Runtime intra-op threads (default 2; 0 = "
                                                "library defaults)")
    add("--warmup", type=int, default=None, help="untimed calls first (default 2; --quick 1)")
    add("--repeats", type=int, default=None, help="timed calls (default 10; --quick 3)")
    add("--prompt-repeats", type=int, default=None, help="timed calls of each prompt step (default --repeats; "
                                                          "--quick 1)")
    add("--grid", type=int, default=None, help="segment_everything grid (default 16; --quick 4)")
    add("--image", default=None, help="WIDTHxHEIGHT of the latency / prompt image (default 640x480; --quick 96x72)")
    add("--check-samples", type=int, default=2, help="the builder's synthetic check images (default 2)")
    add("--external-data-threshold", type=int, default=None,
        help="bytes above which a graph's weights go to <file>.data (default: the builder's 1.8e9)")
    add("--note", action="append", default=[], help="a remark recorded in the results (repeatable)")
    add("--seed", type=int, default=0)
    add("--quick", action="store_true", help="tiny random configs (tests)")
    add("--work-dir", default=None, help="where the checkpoint and engines go (kept); default a temp dir, removed")
    add("--keep", action="store_true", help="keep the default temp work dir")
    add("--out-dir", default=str(RESULTS), help="results directory (default benchmarks/results)")
    add("--name", default=None, help="result file name (default gen2seg_real_size_<variant>)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.repeats = args.repeats if args.repeats is not None else (3 if args.quick else 10)
    if args.prompt_repeats is None:
        args.prompt_repeats = 1 if args.quick else args.repeats
    args.grid = args.grid if args.grid is not None else (4 if args.quick else 16)
    args.image = args.image or ("96x72" if args.quick else "640x480")
    if args.repeats < 1 or args.prompt_repeats < 1 or args.warmup < 0:
        parser.error("--repeats and --prompt-repeats must be >= 1, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results, status = run(args, log=lambda line: print(line, flush=True))
    if status == 0 and results.get("build", {}).get("error"):
        status = 1
    from genmask_sdk.io import atomic_write_text

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"gen2seg_real_size_{args.variant}"
    atomic_write_text(out / f"{name}.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / f"{name}.md", markdown(results))
    print(f"wrote {out / (name + '.json')} and {out / (name + '.md')}; peak RSS {results['peak_rss_gib']} GiB",
          flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

"""``build_engines``: a GenMask checkpoint -> ``engines/<name>/`` with ONNX graphs in FP32, FP16,
INT8 (and FP8 on request), TensorRT plans where TensorRT and a GPU exist, and ``manifest.json`` (DESIGN.md §3).

Sets (precision -> file per stage)::

    fp32: vae_encoder.fp32.onnx  dit.fp32.onnx  mask_head.fp32.onnx
    fp16: vae_encoder.fp16.onnx  dit.fp16.onnx  mask_head.fp32.onnx
    int8: vae_encoder.fp32.onnx  dit.int8.onnx  mask_head.fp32.onnx
    fp8:  vae_encoder.fp32.onnx  dit.fp8.onnx   mask_head.fp32.onnx   (only when asked for)
    int8-dynamic: vae_encoder.fp32.onnx  dit.int8-dynamic.onnx  mask_head.fp32.onnx   (the CPU set)

The ``int8-dynamic`` DiT is made for CPUs (``quantize_dynamic.py``: int8 weights, activations
quantized at run time by ONNX Runtime's MatMulInteger; no TensorRT plans). After export, the CPU
sets (fp32, int8-dynamic) are timed on the build machine (``cpu_timing.py``, the manifest's
``cpu_timing``), so that ``backend="auto"`` on a CPU opens the fastest one that passed its fidelity gate.

The INT8 and FP8 DiTs are calibrated in PyTorch by NVIDIA Model Optimizer on real DiT inputs (the
``--calib`` samples through the VAE encoder and the embedder) and written as explicit Q/DQ
(``quantize.py``). The INT8 and FP8 sets use the fp32 VAE encoder: its latents are what the DiT was calibrated on, and the
DiT dominates the cost (≈ 6.6 of 7 TFLOP at 512², DESIGN.md §6); swap in the fp16 encoder file if
the VAE matters on your device. The mask head (one 16 -> 64 Linear, or the VAE decoder when ``config.mask_decoder`` is
``"vae_decoder"``: what the config names is exported, never a substitute) is fp32 in every set.

Each graph is checked against the float32 PyTorch model with ONNX Runtime on CPU right after
export (``fidelity.py``); a graph past its tolerance aborts the build. Files are staged and moved
into place at the end, manifest last (``staging.py``). A re-run whose inputs (checkpoint hash,
config, export options, tool versions: ``options.build_inputs``) equal the previous manifest's
``build_inputs`` reuses every listed file that still verifies, and says so. When such a re-run
would change nothing at all (same sets and shapes, every file verified, no TensorRT to build),
``uptodate.py`` says so without importing torch and leaves the manifest untouched; the command
line asks it before importing this module.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from genmask_sdk.export.manifest import state_sha256
from genmask_sdk import __version__
from genmask_sdk.families.genmask.config import GenMaskConfig
from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError
from genmask_sdk.families.genmask.modeling.vae import single_frame_convolutions
from genmask_sdk.families.genmask.export import calibration, signatures
from genmask_sdk.families.genmask.export.fidelity import check_graph, reference
from genmask_sdk.families.genmask.export.fp16 import convert_vae_to_fp16, export_fp16_dit
from genmask_sdk.families.genmask.export.graphs import (
    DitGraph,
    check_signature,
    export_graph,
    module_bytes,
    signature,
)
from genmask_sdk.export.manifest import (
    FORMAT_VERSION,
    Manifest,
    checkpoint_sha256,
    file_record,
    read_manifest,
    tool_versions,
    verify_files,
)
from genmask_sdk.export.onnx_io import check_onnx, external_data_files, io_specs, op_counts
from genmask_sdk.families.genmask.export.options import (
    CPU_SETS,
    DEFAULT_OPSET,
    DEFAULT_PRECISIONS,
    EXTERNAL_DATA_THRESHOLD,
    PRECISIONS,
    SETS,
    BuildOptions,
    BuildResult,
    build_inputs,
    build_options,
    changed_inputs,
    checkpoint_entry,
    default_out,
    graph_file,
    onnx_set,
)
from genmask_sdk.export.staging import BuildLock, Staging, check_out, commit, listed_files, remove_stale_staging
from genmask_sdk.families.genmask.export.embedder_step import EmbedderStep
from genmask_sdk.families.genmask.export.tensorrt_step import TensorRTStep
from genmask_sdk.families.genmask.export.uptodate import print_line, up_to_date

# Build order: fp32 graphs first (sources of the fp16 VAE and the int8/fp8 DiTs).
_ORDER = [("vae_encoder", "fp32"), ("dit", "fp32"), ("mask_head", "fp32"), ("vae_encoder", "fp16"),
          ("dit", "fp16"), ("dit", "int8"), ("dit", "fp8"), ("dit", "int8-dynamic")]
QUANTIZED = ("int8", "fp8")
FOLDED = ["t* and x_t* = t*·ε* (fixed noise) with its patch tokens",
          "time embedding and AdaLN modulation of both frames (t = 0 image frame, t = t* mask frame)",
          "3-D RoPE cos/sin tables"]


def build_engines(checkpoint: str | Path = "demo", out: str | Path | None = None,
                  precisions: Sequence[str] = DEFAULT_PRECISIONS, *, model=None, log: Callable[[str], None] | None = None,
                  started: float | None = None, check_up_to_date: bool = True, **options: Any) -> BuildResult:
    """Export a GenMask checkpoint to ONNX (and TensorRT plans where possible) with a manifest.

    Args:
        checkpoint: ``"demo"``, a checkpoint directory (``GenMaskModel.save_pretrained``) or a hub id.
        out: engines directory; default ``engines/<checkpoint name>`` under the working directory.
        precisions: any of ``"fp32"``, ``"fp16"``, ``"int8"``, ``"fp8"`` (default: the first three).
        model: an in-memory ``GenMaskModel`` to export instead of loading ``checkpoint`` (its
            "checkpoint sha256" is then a hash of its config and state dict).
        log: where progress lines go (default: print).
        started: ``time.perf_counter()`` when the caller began (the CLI: before importing torch), so
            the reported time is the whole wait; default: when this function is called.
        check_up_to_date: first ask ``uptodate.up_to_date`` whether a rebuild would change nothing
            (then the manifest is left as it is); False when the caller has just asked (the CLI).
        **options: fields of ``BuildOptions``: ``resolution`` (engine resolution R, default the
            config's), ``max_batch`` (8), ``max_prompt_tokens`` (the embedder's limit),
            ``calib`` ("demo", a folder — format in ``calibration.py`` — or "random"),
            ``calib_size`` (64), ``tensorrt`` ("auto" | "on" | "off"), ``workspace_gib`` (4),
            ``force`` (rebuild everything), ``opset`` (18; the fp8 DiT declares 19, the first with
            float8 QuantizeLinear), ``int8_keep_blocks`` (1: first and last block stay unquantized in
            the int8 and fp8 DiTs), ``check_samples`` (4), ``external_data_threshold``
            (bytes of weights above which they go to ``<file>.data``), ``text_embedder`` (True:
            also export a MiniLM embedder as ONNX + tokenizer.json, so the engines run without
            torch), ``progress`` (tqdm bars).

    Returns a BuildResult; raises ConfigError, ArtifactNotFoundError, BackendUnavailableError
    (``tensorrt="on"`` without TensorRT), ExportError / FidelityError (a graph failed its check).
    """
    start = time.perf_counter() if started is None else started
    opts = build_options(precisions, **options)
    log = log or print_line
    if model is None and check_up_to_date:
        result = up_to_date(checkpoint, out, opts, log=log, started=start)
        if result is not None:
            return result
    return _Build(checkpoint, out, opts, model, log).run(start)


class _Build:
    """State of one build; ``run`` does it."""

    def __init__(self, checkpoint, out, opts: BuildOptions, model, log) -> None:
        self.opts, self.log, self._model = opts, log, model
        self.source, self.checkpoint_dir, self.checkpoint_hash, config = _resolve_source(checkpoint, model)
        self.config = opts.engine_config(config)
        self.max_prompt_tokens = opts.prompt_tokens(self.config)
        self.out = Path(out) if out is not None else _default_out(checkpoint, model)
        self.records: dict[tuple[str, str, str], dict] = {}
        self.staged: list[str] = []
        self.built: list[str] = []
        self.reused: list[str] = []
        self._ref = self._calib = None
        self.trt = TensorRTStep(self)
        self.embedder = EmbedderStep(self)

    # ---- inputs --------------------------------------------------------------------------------
    @property
    def model(self):
        """The float32 model at the engine resolution (loaded on first use)."""
        if self._model is None:
            from genmask_sdk.families.genmask.modeling import GenMaskModel

            self.log(f"loading checkpoint {self.source}")
            self._model = GenMaskModel.from_pretrained(self.checkpoint_dir)
        if self._model.config != self.config:
            self._model.config = self.config
            self._model.invalidate()
        return self._model.eval()

    def build_inputs(self) -> dict:
        return build_inputs(self.checkpoint_hash, self.config, self.opts)

    @property
    def check_count(self) -> int:
        return self.opts.check_count

    def reference(self):
        if self._ref is None:
            self.log(f"computing PyTorch reference on {self.check_count} check inputs")
            batch = calibration.samples(self.opts.calib, self.check_count, self.config.resolution, check=True)
            self._ref = reference(self.model, calibration.encode(self.model, batch))
        return self._ref

    def calibration_record(self) -> dict:
        """What the int8/fp8 DiTs were calibrated on (the manifest's ``details.calibration``)."""
        record = {"source": calibration.describe(self.opts.calib), "samples": len(self.calibration_feeds())}
        warning = self._calibration_warning()
        return {**record, "warning": warning} if warning else record

    def _calibration_warning(self) -> str | None:
        if self.opts.calib == "random":
            return "calibrated on random inputs (--calib random): fine for smoke tests only"
        if self.opts.calib in (None, "demo") and not self._is_demo_checkpoint():
            return (f"{self.source} was calibrated on the demo's procedural scenes (the default --calib demo); for a "
                    "real checkpoint pass --calib DIR with images and prompts from your robot's domain")
        return None

    def _is_demo_checkpoint(self) -> bool:
        """The shipped demo, named "demo" or by its directory (its calibration scenes are its own domain)."""
        from genmask_sdk.families.genmask.checkpoints import demo_checkpoint_dir

        return self.checkpoint_dir is not None and self.checkpoint_dir.resolve() == demo_checkpoint_dir().resolve()

    def calibration_feeds(self) -> list[dict]:
        if self._calib is None:
            from tqdm.auto import tqdm

            warning = self._calibration_warning()
            if warning:
                self.log(f"WARNING: int8/fp8 {warning}")
            batch = calibration.samples(self.opts.calib, self.opts.calib_size, self.config.resolution)
            if len(batch) < self.opts.calib_size:
                self.log(f"calibration folder has {len(batch)} samples (< --calib-size {self.opts.calib_size}); using all")
            rows, step = [], calibration.encode_batch_size(self.config.resolution)
            for i in tqdm(range(0, len(batch), step), desc="encode calibration inputs", disable=not self.opts.progress):
                rows += calibration.encode(self.model, batch[i:i + step]).rows()
            self._calib = [r.dit_feeds() for r in rows]
        return self._calib

    # ---- run -----------------------------------------------------------------------------------
    def run(self, start: float) -> BuildResult:
        check_out(self.out)
        with BuildLock(self.out):  # one build per engines directory at a time
            return self._run_locked(start)

    def _run_locked(self, start: float) -> BuildResult:
        remove_stale_staging(self.out, self.log)
        self.trt.decide()
        inputs = self.build_inputs()
        previous = self._previous(inputs)
        self.listed = {(s, p) for q in self.opts.precisions for s, p in SETS[q].items()}
        self.previous = previous
        with Staging(self.out) as staging:
            self.staging = staging
            for stage, precision in [key for key in _ORDER if key in self.listed]:
                if (stage, precision, "onnx") not in self.records:  # may exist already as a source
                    self._artifact(stage, precision, previous)
            self.embedder.run(previous)
            self.trt.run(previous)
            self.cpu_timing = self._time_cpu_sets()
            data = self._manifest(inputs)
            listed = listed_files(data)
            commit(staging, [f for f in self.staged if f in listed], data, listed_files(self.old_data), self.log)
        from genmask_sdk.export.manifest import load_manifest

        manifest = load_manifest(self.out, verify=True)
        seconds = time.perf_counter() - start
        self.log(f"done in {seconds:.1f} s: {self.out / 'manifest.json'} (built {len(self.built)}, reused {len(self.reused)})")
        return BuildResult(self.out, manifest, self.built, self.reused, seconds)

    def _previous(self, inputs: dict) -> Manifest | None:
        """The previous manifest if its files may be reused (same build inputs, not --force);
        ``self.old_data`` keeps its JSON (to delete files it lists that this build drops)."""
        self.old_data: dict = {}
        try:
            data = read_manifest(self.out)
        except ArtifactNotFoundError:
            return None
        except ArtifactMismatchError as exc:
            self.log(f"previous manifest unusable ({exc}); rebuilding everything")
            return None
        self.old_data = data
        previous = Manifest(self.out, data)
        if self.opts.force:
            self.log("--force: rebuilding everything")
        elif data.get("format_version") != FORMAT_VERSION:
            self.log("previous manifest has another format version; rebuilding everything")
        elif changed := changed_inputs(data.get("build_inputs"), inputs):
            self.log(f"inputs changed since the previous build ({', '.join(changed)}); rebuilding everything")
        else:
            return previous
        return None

    def reusable(self, previous: Manifest | None, stage: str, precision: str, runtime: str) -> dict | None:
        if previous is None:
            return None
        for record in previous.artifacts:
            if (record["stage"], record["precision"], record["runtime"]) == (stage, precision, runtime):
                try:
                    verify_files(Manifest(self.out, {**previous.data, "artifacts": [record]}))
                except (ArtifactNotFoundError, ArtifactMismatchError) as exc:
                    self.log(f"not reusing {record['file']}: {exc}")
                    return None
                return record
        return None

    def _artifact(self, stage: str, precision: str, previous: Manifest | None) -> None:
        name = graph_file(stage, precision)
        old = self.reusable(previous, stage, precision, "onnx")
        if old is not None:
            self.log(f"reused {name} (same checkpoint, config and options; sha256 verified)")
            self.records[(stage, precision, "onnx")] = {**old, "profiles": self.profiles(stage)}
            if (stage, precision) in self.listed:
                self.reused.append(name)
            return
        path = self.staging.path(name)
        self.log(f"exporting {name}")
        start = time.perf_counter()
        details = self._export(stage, precision, path)
        check_onnx(path, onnxruntime_ops=precision in CPU_SETS)
        check_signature(path, signature(stage, self.config), stage)
        export_seconds = time.perf_counter() - start
        fidelity = check_graph(path, stage, precision, self.reference(), self.model.decode_mask)
        record = self._record(stage, precision, path, details, export_seconds, fidelity)
        self.records[(stage, precision, "onnx")] = record
        self.staged += [name] + [e["file"] for e in record["external_data"]]
        if (stage, precision) in self.listed:
            self.built.append(name)
        else:
            self.log(f"{name} is an intermediate of this build (not in the requested sets): not kept")
        extra = (f", mask IoU pooled {fidelity['mask_iou_pooled']:.4f} (per-sample mean {fidelity['mask_iou_mean']:.4f})"
                 if "mask_iou_pooled" in fidelity else "")
        self.log(f"{name}: {export_seconds:.1f} s, max |onnx - torch| {fidelity['max_abs_error']:.3g}{extra}")

    def _source(self, stage: str) -> Path:
        """The fp32 graph of ``stage`` (source of the fp16 VAE and the int8 DiT): reused, or
        exported now — kept only if the fp32 graph belongs to a requested set."""
        if (stage, "fp32", "onnx") not in self.records:
            self._artifact(stage, "fp32", self.previous)
        record = self.records[(stage, "fp32", "onnx")]
        staged = self.staging.path(record["file"])
        return staged if staged.is_file() else self.out / record["file"]

    def _export(self, stage: str, precision: str, path: Path) -> dict:
        model, opts = self.model, self.opts
        if precision == "fp32":
            module = {"vae_encoder": model.vae_encoder, "mask_head": model.mask_decoder,
                      "dit": lambda: DitGraph(model.one_step_dit())}[stage]()
            big = module_bytes(module) > opts.external_data_threshold
            method = "torch.onnx.export(dynamo=True), float32"
            if stage == "mask_head":  # what config.mask_decoder names, never a substitute
                method += {"linear_probe": "; linear probe Linear(16 -> 64) + pixel shuffle",
                           "vae_decoder": "; Wan VAE decoder -> mean over RGB (config mask_decoder = vae_decoder)"}[
                    self.config.mask_decoder]
            tracing = contextlib.nullcontext()
            if stage == "vae_encoder":  # one frame: each causal 3-D conv is exactly a 2-D conv (3x less work)
                method += "; causal 3-D convolutions of the single frame exported as 2-D (kernel's last temporal slice)"
                tracing = single_frame_convolutions(module)
            with tracing:
                seconds = export_graph(module, stage, self.config, path, opset=opts.opset, external_data=big)
            return {"method": method, "trace_seconds": round(seconds, 2)}
        if (stage, precision) == ("dit", "fp16"):
            big = module_bytes(model.transformer) // 2 > opts.external_data_threshold
            return export_fp16_dit(model, path, opset=opts.opset, external_data=big)
        if (stage, precision) == ("vae_encoder", "fp16"):
            big = module_bytes(model.vae.encoder) // 2 > opts.external_data_threshold
            return convert_vae_to_fp16(self._source(stage), path, external_data=big)
        if (stage, precision) == ("dit", "int8-dynamic"):
            from genmask_sdk.export.quantize_dynamic import quantize_dynamic_dit

            return quantize_dynamic_dit(self._source("dit"), path)
        if stage == "dit" and precision in QUANTIZED:
            from genmask_sdk.export.quantize import quantize_dit

            source = self._source("dit")
            details = quantize_dit(DitGraph(model.one_step_dit()), source, path, self.calibration_feeds(), mode=precision,
                                   num_layers=int(self.config.transformer["num_layers"]),
                                   keep_blocks=opts.int8_keep_blocks, external_data=bool(external_data_files(source)),
                                   progress=opts.progress)
            return {**details, "calibration": self.calibration_record()}
        raise ValueError(f"no exporter for the {precision} {stage}")

    def _time_cpu_sets(self) -> dict | None:
        """The manifest's ``cpu_timing`` (``cpu_timing.py``), or None when not asked for / no CPU set."""
        from genmask_sdk.families.genmask.export.cpu_timing import time_cpu_sets, timed_sets

        wanted = timed_sets(self.opts.precisions)
        if not self.opts.cpu_timing or not wanted:
            return None
        paths = {}
        for precision in wanted:
            files = {}
            for stage, file in onnx_set(precision).items():
                staged = self.staging.path(file)
                files[stage] = staged if staged.is_file() else self.out / file
            paths[precision] = files
        self.log(f"timing the CPU sets {wanted} on this machine (for backend='auto' on a CPU)")
        return time_cpu_sets(paths, self.reference().feeds, log=self.log)

    def _record(self, stage, precision, path: Path, details: dict, seconds: float, fidelity: dict) -> dict:
        inputs, outputs = io_specs(path)
        ops = op_counts(path)
        graph: dict[str, Any] = {"ops": ops}
        if stage == "dit":
            graph.update(folded=FOLDED, sin_cos_nodes=ops.get("Sin", 0) + ops.get("Cos", 0))
            if graph["sin_cos_nodes"]:
                self.log(f"WARNING: {path.name} still has {graph['sin_cos_nodes']} Sin/Cos nodes (timestep not folded?)")
        return {"stage": stage, "precision": precision, "runtime": "onnx", **file_record(path),
                "external_data": [file_record(path.parent / f) for f in external_data_files(path)],
                "inputs": [s.to_json() for s in inputs], "outputs": [s.to_json() for s in outputs],
                "profiles": self.profiles(stage), "opset": details.get("opset", self.opts.opset), "export_seconds": round(seconds, 2),
                "details": details, "graph": graph, "fidelity": fidelity}

    def profiles(self, stage: str) -> dict[str, list[list[int]]]:
        """(min, opt, max) shapes for each input of ``stage`` (``signatures.profiles``)."""
        return signatures.profiles(stage, self.config, self.opts.max_batch, self.max_prompt_tokens)

    def _manifest(self, inputs: dict) -> dict:
        sets = {precision: {"onnx": onnx_set(precision), "tensorrt": self.trt.set_files(precision)}
                for precision in self.opts.precisions}
        return {"format_version": FORMAT_VERSION, "sdk_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "config": json.loads(self.config.to_json()),
                "checkpoint": checkpoint_entry(self.source, self.checkpoint_dir, self.checkpoint_hash),
                "resolution": self.config.resolution, "max_batch": self.opts.max_batch,
                "max_prompt_tokens": self.max_prompt_tokens, "build_inputs": inputs, "tools": tool_versions(),
                "tensorrt": self.trt.summary,
                "artifacts": [r for (stage, p, _), r in self.records.items() if (stage, p) in self.listed]
                             + self.embedder.artifacts(),
                "embedder_runtime": "onnx" if self.embedder.records else "torch",
                "cpu_timing": self.cpu_timing,
                "text_embedder": self.embedder.manifest_entry(),
                "sets": sets}


def _resolve_source(checkpoint, model) -> tuple[str, Path | None, str, GenMaskConfig]:
    """(source label, checkpoint directory or None, sha256, config)."""
    if model is not None:
        return "in-memory", None, state_sha256(model), model.config
    from genmask_sdk.families.genmask.checkpoints import resolve_checkpoint

    directory = resolve_checkpoint(checkpoint)
    return str(checkpoint), directory, checkpoint_sha256(directory), GenMaskConfig.load(directory)


def _default_out(checkpoint, model) -> Path:
    if model is not None:
        return Path("engines") / (model.config.name or "model")
    return default_out(checkpoint)


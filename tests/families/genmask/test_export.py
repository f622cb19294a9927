"""Export of the tiny model: graphs vs PyTorch, fp16/int8 passes, dynamic shapes, manifest,
verification errors, interrupted builds, reuse and the command line.

One build of the tiny model (random weights, all three precisions, int8 with every block
quantized) is shared by the module; tests that modify files work on a copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from genmask_sdk.families.genmask.config import GenMaskConfig
from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError, ConfigError
from genmask_sdk.cli import build as cli
from genmask_sdk.families.genmask.export import build as pipeline
from genmask_sdk.families.genmask.export.calibration import Feeds
from genmask_sdk.export.fidelity import FidelityError
from genmask_sdk.families.genmask.export.fidelity import Reference, check_graph
from genmask_sdk.export.manifest import check_manifest, checkpoint_sha256, load_manifest
from genmask_sdk.io import sha256_file
from genmask_sdk.families.genmask.modeling import GenMaskModel
from genmask_sdk.runtime.base import TensorSpec
from genmask_sdk.runtime.onnxruntime_runner import OnnxRuntimeRunner

REPO = Path(__file__).resolve().parents[3]
# The text embedder's engines are tested in test_torch_free.py (on the demo); not rebuilt here.
OPTIONS = dict(calib_size=8, int8_keep_blocks=0, tensorrt="off", progress=False, text_embedder=False)
ALL_FILES = ["vae_encoder.fp32.onnx", "dit.fp32.onnx", "mask_head.fp32.onnx", "vae_encoder.fp16.onnx",
             "dit.fp16.onnx", "dit.int8.onnx", "dit.int8-dynamic.onnx"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, checkpoint dir, engines dir, build result, log lines) of the shared tiny build."""
    torch.manual_seed(0)
    model = GenMaskModel.from_config(GenMaskConfig.preset("tiny", embedder="minilm"))
    root = tmp_path_factory.mktemp("export")
    checkpoint = model.save_pretrained(root / "tiny_ckpt")
    lines: list[str] = []
    result = pipeline.build_engines(checkpoint, root / "engines", log=lines.append, **OPTIONS)
    return model, checkpoint, root / "engines", result, lines


@pytest.fixture
def engines_copy(tiny, tmp_path):
    target = tmp_path / "engines"
    shutil.copytree(tiny[2], target)
    return target


def run(path: Path, **feeds: np.ndarray) -> np.ndarray:
    with OnnxRuntimeRunner(path) as runner:
        return next(iter(runner.infer(feeds).values()))


def dit_inputs(batch: int, length: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 16, 4, 4, generator=g), torch.randn(batch, length, 384, generator=g),
            torch.ones(batch, length, dtype=torch.bool))


# ---- graphs against PyTorch -------------------------------------------------------------------


def test_build_writes_every_file_and_reports(tiny):
    _, _, engines, result, lines = tiny
    assert sorted(result.built) == sorted(ALL_FILES) and result.reused == []
    assert sorted(p.name for p in engines.iterdir()) == sorted(ALL_FILES + ["manifest.json"])
    assert any("TensorRT plans skipped" in line for line in lines)
    assert any(line.strip().startswith("trtexec --onnx=dit.fp16.onnx") for line in lines)
    # the CPU set gets no TensorRT command: TensorRT has no MatMulInteger
    assert not any("dit.int8-dynamic" in line for line in lines if line.strip().startswith("trtexec"))
    assert any("CPU timing of the int8-dynamic set" in line for line in lines)


@pytest.mark.parametrize("batch,length", [(1, 2), (3, 7)])
def test_fp32_dit_matches_torch_with_dynamic_batch_and_prompt(tiny, batch, length):
    model, _, engines, *_ = tiny
    z, context, mask = dit_inputs(batch, length, seed=batch)
    out = run(engines / "dit.fp32.onnx", z_img=z.numpy(), context=context.numpy(), context_mask=mask.numpy())
    with torch.no_grad():
        expected = model.one_step_dit()(z, context, mask).numpy()
    assert out.shape == (batch, 16, 4, 4)
    assert np.abs(out - expected).max() <= 1e-4


def test_fp32_vae_and_mask_head_match_torch(tiny):
    model, _, engines, *_ = tiny
    pixels = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    latent = torch.randn(3, 16, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        z_ref, logits_ref = model.vae_encoder()(pixels).numpy(), model.mask_head(latent).numpy()
    assert np.abs(run(engines / "vae_encoder.fp32.onnx", pixels=pixels.numpy()) - z_ref).max() <= 1e-4
    logits = run(engines / "mask_head.fp32.onnx", latent=latent.numpy())
    assert logits.shape == (3, 1, 32, 32) and np.abs(logits - logits_ref).max() <= 1e-4


def test_vae_encoder_graph_has_only_2d_convolutions(tiny):
    """One frame: every causal 3-D conv is exported as a 2-D conv (matching torch is tested above)."""
    _, _, engines, result, _ = tiny
    graph = onnx.shape_inference.infer_shapes(onnx.load(engines / "vae_encoder.fp32.onnx")).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*graph.value_info, *graph.output]}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and {ranks[n.output[0]] for n in convs} == {4}
    record = result.manifest.artifact("vae_encoder", "fp32")
    assert "exported as 2-D" in record["details"]["method"]


@pytest.mark.parametrize("name", ["dit.fp32.onnx", "dit.fp16.onnx", "dit.int8.onnx"])
def test_padded_prompt_gives_the_unpadded_result(tiny, name):
    engines = tiny[2]
    z, context, _ = dit_inputs(1, 4, seed=3)
    unpadded = run(engines / name, z_img=z.numpy(), context=context.numpy(), context_mask=np.ones((1, 4), bool))
    padded_context = torch.cat([context, torch.randn(1, 3, 384)], dim=1).numpy()
    mask = np.array([[True] * 4 + [False] * 3])
    padded = run(engines / name, z_img=z.numpy(), context=padded_context, context_mask=mask)
    assert np.abs(padded - unpadded).max() <= 1e-5


def test_fp16_and_int8_run_on_ort_cpu_and_stay_close(tiny):
    manifest = tiny[3].manifest
    fidelity = {(a["stage"], a["precision"]): a["fidelity"] for a in manifest.artifacts}
    for key in [("vae_encoder", "fp32"), ("dit", "fp32"), ("mask_head", "fp32")]:
        assert fidelity[key]["max_abs_error"] <= 1e-4, key
    assert fidelity[("vae_encoder", "fp16")]["max_abs_error"] <= 5e-3 * max(1.0, fidelity[("vae_encoder", "fp16")]["reference_max_abs"])
    dit16, dit8 = fidelity[("dit", "fp16")], fidelity[("dit", "int8")]
    assert dit16["max_abs_error"] <= 1e-2 * dit16["reference_max_abs"] and dit16["mask_iou_mean"] >= 0.98
    assert dit8["max_abs_error"] <= 0.1 * dit8["reference_max_abs"] and dit8["mask_iou_mean"] >= 0.9
    # and the graphs accept other batch sizes / prompt lengths than the check inputs
    z, context, mask = dit_inputs(3, 7)
    for name in ("dit.fp16.onnx", "dit.int8.onnx"):
        out = run(tiny[2] / name, z_img=z.numpy(), context=context.numpy(), context_mask=mask.numpy())
        assert out.shape == (3, 16, 4, 4) and out.dtype == np.float32 and np.isfinite(out).all()


def test_int8_dynamic_dit_is_matmul_integer_and_checked_against_torch(tiny):
    model, _, engines, result, _ = tiny
    graph = onnx.load(str(engines / "dit.int8-dynamic.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops and "QuantizeLinear" not in ops
    # ONNX Runtime's fused CPU kernels replace the decomposed RMSNorms and tanh-GELUs
    assert {"SimplifiedLayerNormalization", "FastGelu"} <= ops and not {"Pow", "Tanh", "Reciprocal"} & ops
    record = result.manifest.artifact("dit", "int8-dynamic")
    assert "quantize_dynamic" in record["details"]["method"]
    layers = int(model.config.transformer["num_layers"])
    fusions = record["details"]["fusions"]
    # q/k norms of both attentions; GELU of every feed-forward and of the prompt projection
    assert fusions["rms_normalization"] == 4 * layers and fusions["gelu"] == layers + 1
    assert not any(p.name.startswith(".fused-") for p in engines.iterdir())  # scratch graph removed
    fidelity = record["fidelity"]
    assert fidelity["reference"] == "pytorch float32" and fidelity["max_abs_error"] <= fidelity["tolerance"]
    z, context, mask = dit_inputs(2, 5)
    got = run(engines / "dit.int8-dynamic.onnx", z_img=z.numpy(), context=context.numpy(), context_mask=mask.numpy())
    with torch.no_grad():
        want = model.one_step_dit()(z, context, mask).numpy()
    assert np.abs(got - want).max() < 0.25 + 0.35 * np.abs(want).max()
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99


def test_dit_graph_has_timestep_folded(tiny):
    graph = onnx.load(str(tiny[2] / "dit.fp32.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert not ops & {"Sin", "Cos"}
    assert [i.name for i in graph.graph.input] == ["z_img", "context", "context_mask"]
    record = tiny[3].manifest.artifact("dit", "fp32")
    assert record["graph"]["sin_cos_nodes"] == 0 and record["graph"]["folded"]


def test_fp16_graphs_keep_statistics_in_fp32(tiny):
    engines = tiny[2]
    dit = onnx.load(str(engines / "dit.fp16.onnx"))
    producers = {o: n for n in dit.graph.node for o in n.output}
    softmaxes = [n for n in dit.graph.node if n.op_type == "Softmax"]
    assert softmaxes and all(producers[n.input[0]].op_type == "Cast"
                             and producers[n.input[0]].attribute[0].i == onnx.TensorProto.FLOAT for n in softmaxes)
    weights = [t for t in dit.graph.initializer if t.name.endswith("ffn.net.2.weight") or "to_q" in t.name]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    vae = onnx.load(str(engines / "vae_encoder.fp16.onnx"))
    conv_weights = {n.input[1] for n in vae.graph.node if n.op_type == "Conv"}
    dtypes = {t.data_type for t in vae.graph.initializer if t.name in conv_weights}
    assert dtypes == {onnx.TensorProto.FLOAT16}
    for graph in (dit, vae):
        assert {i.type.tensor_type.elem_type for i in graph.graph.output} == {onnx.TensorProto.FLOAT}


def test_int8_graph_is_symmetric_qdq_on_block_linears(tiny):
    graph = onnx.load(str(tiny[2] / "dit.int8.onnx"))
    q = [n for n in graph.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in graph.graph.node if n.op_type == "DequantizeLinear"]
    assert q and dq
    points = {n.input[2] for n in q + dq if len(n.input) > 2}
    values = [onnx.numpy_helper.to_array(t) for t in graph.graph.initializer if t.name in points]
    assert values and all(v.dtype == np.int8 and not v.any() for v in values)
    details = tiny[3].manifest.artifact("dit", "int8")["details"]
    assert details["quantized_matmuls"] == 2 * 10  # 2 blocks x (q, k, v, out) x 2 attentions + 2 FFN
    assert details["method"].startswith("NVIDIA Model Optimizer") and details["quantized_blocks"] == [0, 1]
    assert "proj_out" in details["kept_in_float32"] and "condition_embedder" in details["kept_in_float32"]
    assert details["calibration"]["samples"] == 8 and details["calibration"]["source"]["kind"] == "demo"
    # a saved (non-demo) checkpoint calibrated on the demo's procedural scenes is warned about, loudly and on record
    assert "procedural scenes" in details["calibration"]["warning"]
    assert any(line.startswith("WARNING: int8/fp8") and "--calib DIR" in line for line in tiny[4])


def test_keeping_first_and_last_block_of_a_two_block_model_leaves_nothing_to_quantize(tiny, tmp_path):
    with pytest.raises(ConfigError, match="--int8-keep-blocks"):
        pipeline.build_engines(tiny[1], tmp_path / "engines", ["int8"], **{**OPTIONS, "int8_keep_blocks": 1})
    assert not (tmp_path / "engines" / "manifest.json").exists()


def test_fidelity_failure_is_loud(tiny):
    model, _, engines, *_ = tiny
    latent = torch.randn(2, 16, 4, 4)
    feeds = Feeds(torch.zeros(2, 3, 32, 32), torch.zeros(2, 16, 4, 4), torch.zeros(2, 1, 384),
                  torch.ones(2, 1, dtype=torch.bool), ["a", "b"])
    wrong = Reference(feeds, latent, model.mask_head(latent).detach() + 1.0)
    with pytest.raises(FidelityError, match="exceeds the fp32 tolerance"):
        check_graph(engines / "mask_head.fp32.onnx", "mask_head", "fp32", wrong, model.mask_head)


# ---- manifest -----------------------------------------------------------------------------------


def test_manifest_contents(tiny):
    model, checkpoint, engines, result, _ = tiny
    data = json.loads((engines / "manifest.json").read_text())
    assert data["format_version"] == 1 and data["sdk_version"]
    assert data["config"] == json.loads(model.config.to_json())
    assert data["checkpoint"]["sha256"] == checkpoint_sha256(checkpoint)
    assert data["resolution"] == 32 and data["max_batch"] == 8 and data["max_prompt_tokens"] == 64
    assert set(data["tools"]) >= {"torch", "diffusers", "onnx", "onnxruntime", "tensorrt"}
    assert data["tensorrt"]["built"] is False and data["tensorrt"]["reason"]
    assert data["sets"]["int8"]["onnx"] == {"vae_encoder": "vae_encoder.fp32.onnx", "dit": "dit.int8.onnx",
                                            "mask_head": "mask_head.fp32.onnx"}
    assert data["sets"]["fp16"]["tensorrt"] is None
    assert data["sets"]["int8-dynamic"] == {"onnx": {"vae_encoder": "vae_encoder.fp32.onnx",
                                                     "dit": "dit.int8-dynamic.onnx",
                                                     "mask_head": "mask_head.fp32.onnx"}, "tensorrt": None}
    timing = data["cpu_timing"]
    assert set(timing["sets"]) == {"fp32", "int8-dynamic"} and timing["cpu"] and timing["repeats"] >= 3
    assert all(0 < t["min_ms"] <= t["p50_ms"] <= t["p90_ms"] for t in timing["sets"].values())
    for record in data["artifacts"]:
        assert record["sha256"] == sha256_file(engines / record["file"]) and record["runtime"] == "onnx"
        assert record["external_data"] == []
        assert TensorSpec.from_json(record["inputs"][0]).shape[0] is None
    dit = result.manifest.artifact("dit", "fp32")
    assert dit["profiles"]["context"] == [[1, 1, 384], [1, 32, 384], [8, 64, 384]]
    assert [s.to_json() for s in result.manifest.specs("dit", "fp32")[0]] == dit["inputs"]
    assert dit["inputs"][2] == {"name": "context_mask", "dtype": "bool", "shape": [None, None]}


def test_corrupted_file_is_a_mismatch_with_rebuild_hint(engines_copy):
    path = engines_copy / "dit.fp16.onnx"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ArtifactMismatchError, match=r"dit\.fp16\.onnx.*python export/build_engines\.py --checkpoint"):
        load_manifest(engines_copy)
    load_manifest(engines_copy, verify=False)  # the manifest itself is fine


def test_missing_file_and_missing_manifest_are_not_found(engines_copy):
    (engines_copy / "mask_head.fp32.onnx").unlink()
    with pytest.raises(ArtifactNotFoundError, match="mask_head.fp32.onnx.*build_engines.py"):
        load_manifest(engines_copy)
    (engines_copy / "manifest.json").unlink()
    with pytest.raises(ArtifactNotFoundError, match="build_engines.py"):
        load_manifest(engines_copy)


def test_version_checks(engines_copy):
    path = engines_copy / "manifest.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ArtifactMismatchError, match="format_version"):
        load_manifest(engines_copy)
    path.write_text(json.dumps({**data, "sdk_version": "7.0.0"}))
    with pytest.raises(ArtifactMismatchError, match="major"):
        load_manifest(engines_copy)


def test_config_and_checkpoint_mismatch(tiny):
    model, checkpoint, _, result, _ = tiny
    manifest = result.manifest
    check_manifest(manifest, model.config, checkpoint_sha256(checkpoint))
    check_manifest(manifest, model.config.replace(resolution=64))  # resolution may differ by default
    with pytest.raises(ArtifactMismatchError, match="resolution"):
        check_manifest(manifest, model.config.replace(resolution=64), check_resolution=True)
    with pytest.raises(ArtifactMismatchError, match="t_star"):
        check_manifest(manifest, model.config.replace(t_star=0.5))
    with pytest.raises(ArtifactMismatchError, match="checkpoint sha256"):
        check_manifest(manifest, None, "0" * 64)


# ---- reuse, interruption, command line ---------------------------------------------------------


def test_rebuild_reuses_valid_files_and_replaces_a_corrupt_one(tiny, engines_copy, monkeypatch):
    checkpoint = tiny[1]
    lines: list[str] = []
    result = pipeline.build_engines(checkpoint, engines_copy, log=lines.append, **OPTIONS)
    assert result.built == [] and sorted(result.reused) == sorted(ALL_FILES)
    assert sum(line.startswith("reused ") for line in lines) == len(ALL_FILES)
    # a changed file is rebuilt (only that one), not reused
    (engines_copy / "mask_head.fp32.onnx").write_bytes(b"not onnx")
    result = pipeline.build_engines(checkpoint, engines_copy, ["fp32"], log=lines.append, **OPTIONS)
    assert result.built == ["mask_head.fp32.onnx"] and "dit.fp32.onnx" in result.reused
    load_manifest(engines_copy)
    assert not (engines_copy / "dit.int8.onnx").exists()  # dropped from the set -> removed


def _interrupting_export(source_dir: Path):
    """A stand-in for export_graph: copies the VAE quickly, then dies half-way through the DiT."""
    def export(module, stage, config, path, **kwargs):
        if stage == "vae_encoder":
            shutil.copy(source_dir / "vae_encoder.fp32.onnx", path)
            return 0.0
        Path(path).write_bytes(b"half a graph")
        raise KeyboardInterrupt("simulated interruption")
    return export


def test_int8_alone_rebuilds_from_the_previous_fp32_graph(tiny, engines_copy):
    (engines_copy / "dit.int8.onnx").unlink()
    lines: list[str] = []
    result = pipeline.build_engines(tiny[1], engines_copy, ["int8"], log=lines.append, **OPTIONS)
    assert result.built == ["dit.int8.onnx"]
    assert sorted(result.reused) == ["mask_head.fp32.onnx", "vae_encoder.fp32.onnx"]
    assert any(line.startswith("reused dit.fp32.onnx") for line in lines)  # quantization source, then dropped
    assert sorted(p.name for p in engines_copy.iterdir()) == ["dit.int8.onnx", "manifest.json", "mask_head.fp32.onnx",
                                                              "vae_encoder.fp32.onnx"]
    assert [a["file"] for a in load_manifest(engines_copy).artifacts] == ["vae_encoder.fp32.onnx",
                                                                         "mask_head.fp32.onnx", "dit.int8.onnx"]


def test_interrupted_build_leaves_nothing_behind(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "export_graph", _interrupting_export(tiny[2]))
    out = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        pipeline.build_engines(tiny[1], out, ["fp32"], log=lambda _: None, **OPTIONS)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".fresh.build")] == []


def test_a_kill_at_commit_leaves_the_previous_build_usable(tiny, engines_copy, monkeypatch):
    """Everything is exported and the new directory complete, then the process dies before the swap."""
    from genmask_sdk.export import staging

    before = {p.name: sha256_file(p) for p in engines_copy.iterdir()}

    def killed(new, out):
        raise KeyboardInterrupt("killed at commit")

    monkeypatch.setattr(staging, "_swap", killed)
    with pytest.raises(KeyboardInterrupt):
        pipeline.build_engines(tiny[1], engines_copy, ["fp32"], log=lambda _: None, **{**OPTIONS, "force": True})
    assert {p.name: sha256_file(p) for p in engines_copy.iterdir()} == before
    load_manifest(engines_copy, verify=True)


def test_a_kill_between_the_two_renames_is_repaired(tiny, engines_copy, monkeypatch):
    """Where the atomic exchange is unavailable the swap is two renames; a kill between them leaves
    only the old directory (renamed aside), which the next build puts back before anything else."""
    from genmask_sdk.export import staging

    monkeypatch.setattr(staging, "_exchange", lambda a, b: False)
    real_rename = staging.os.rename
    calls = []

    def rename(src, dst):
        calls.append((src, dst))
        real_rename(src, dst)
        if len(calls) == 1:
            raise KeyboardInterrupt("killed between the renames")

    monkeypatch.setattr(staging.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        pipeline.build_engines(tiny[1], engines_copy, ["fp32"], log=lambda _: None, **{**OPTIONS, "force": True})
    assert not engines_copy.exists()
    monkeypatch.setattr(staging.os, "rename", real_rename)
    lines: list[str] = []
    pipeline.build_engines(tiny[1], engines_copy, ["fp32"], log=lines.append, **OPTIONS)
    assert any(line.startswith("restoring engines from .engines.old-") for line in lines)
    load_manifest(engines_copy, verify=True)
    assert [p.name for p in engines_copy.parent.iterdir() if p.name.startswith(".engines.")] == [".engines.lock"]


def test_rebuild_swaps_whole_directories_and_keeps_caches(tiny, engines_copy):
    (engines_copy / "ort_trt_cache").mkdir()
    (engines_copy / "ort_trt_cache" / "engine.bin").write_bytes(b"cache")
    result = pipeline.build_engines(tiny[1], engines_copy, ["fp32"], log=lambda _: None, **OPTIONS)
    assert result.built == [] and (engines_copy / "ort_trt_cache" / "engine.bin").read_bytes() == b"cache"
    assert not (engines_copy / "dit.int8.onnx").exists()  # dropped from the sets: not carried over
    load_manifest(engines_copy, verify=True)


def test_a_second_build_into_the_same_directory_is_refused(tiny, engines_copy):
    from genmask_sdk.export.staging import BuildLock, BuildLockedError

    with BuildLock(engines_copy):
        with pytest.raises(BuildLockedError, match="another build into .*engines is running"):
            pipeline.build_engines(tiny[1], engines_copy, ["fp32"], log=lambda _: None, **OPTIONS)
    pipeline.build_engines(tiny[1], engines_copy, ["fp32"], log=lambda _: None, **OPTIONS)  # free again


def test_a_build_through_a_link_builds_the_links_target_under_its_lock(tiny, engines_copy, tmp_path):
    """--out through a symbolic link: one lock for both names, the link stays a link to the rebuilt
    directory, and nothing is left beside the link (issue 34)."""
    from genmask_sdk.export.staging import BuildLock, BuildLockedError

    link = tmp_path / "links" / "current"
    link.parent.mkdir()
    link.symlink_to(engines_copy, target_is_directory=True)
    with BuildLock(engines_copy):
        with pytest.raises(BuildLockedError, match="another build into .*engines is running"):
            pipeline.build_engines(tiny[1], link, ["fp32", "fp16"], force=True, log=lambda _: None, **OPTIONS)
    result = pipeline.build_engines(tiny[1], link, ["fp32", "fp16"], force=True, log=lambda _: None, **OPTIONS)
    assert result.built and link.is_symlink() and link.resolve() == engines_copy.resolve()
    assert sorted(p.name for p in link.parent.iterdir()) == ["current"]  # no lock, staging or swap leftovers
    assert sorted(load_manifest(engines_copy, verify=True).precisions) == ["fp16", "fp32"]


@pytest.mark.parametrize("where", ["file", "under_file", "proc"])
def test_bad_out_directories_are_config_errors(tiny, tmp_path, where):
    (tmp_path / "afile").write_text("x")
    out = {"file": tmp_path / "afile", "under_file": tmp_path / "afile" / "engines",
           "proc": Path("/proc/genmask_engines")}[where]
    if where == "proc" and not Path("/proc").is_dir():
        pytest.skip("no /proc on this system")
    with pytest.raises(ConfigError, match="--out"):
        pipeline.build_engines(tiny[1], out, ["fp32"], log=lambda _: None, **OPTIONS)


def test_interrupted_rebuild_keeps_the_previous_build(tiny, engines_copy, monkeypatch):
    before = {p.name: sha256_file(p) for p in engines_copy.iterdir()}
    monkeypatch.setattr(pipeline, "export_graph", _interrupting_export(tiny[2]))
    with pytest.raises(KeyboardInterrupt):
        pipeline.build_engines(tiny[1], engines_copy, log=lambda _: None, **{**OPTIONS, "force": True})
    assert {p.name: sha256_file(p) for p in engines_copy.iterdir()} == before
    load_manifest(engines_copy)


def test_cli_help_documents_every_option():
    out = subprocess.run([sys.executable, str(REPO / "export" / "build_engines.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    for option in ("--checkpoint", "--out", "--precisions", "--resolution", "--calib", "--calib-size",
                   "--max-prompt-tokens", "--max-batch", "--tensorrt", "--workspace", "--force", "prompts.json",
                   "prompts.txt"):
        assert option in out


def test_cli_run_on_tiny_checkpoint(tiny, engines_copy):
    args = [sys.executable, str(REPO / "export" / "build_engines.py"), "--checkpoint", str(tiny[1]),
            "--out", str(engines_copy), "--precisions", "fp32,fp16", "--calib-size", "8", "--int8-keep-blocks", "0",
            "--tensorrt", "off", "--no-text-embedder", "--no-progress"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "reused dit.fp16.onnx" in done.stdout and "fp16: vae_encoder.fp16.onnx" in done.stdout
    assert load_manifest(engines_copy).precisions == ["fp32", "fp16"]


def test_cli_tensorrt_on_without_tensorrt_is_an_error(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("genmask_sdk.export.tensorrt_steps.tensorrt_available", lambda: (False, "no GPU here"))
    code = cli.main(["--checkpoint", str(tiny[1]), "--out", str(tmp_path / "e"), "--tensorrt", "on"])
    err = capsys.readouterr().err
    assert code == 2 and "--tensorrt on" in err and "no GPU here" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()


def test_cli_calibrates_int8_and_fp8_on_a_user_folder(tiny, tmp_path):
    """``--calib DIR`` (images + prompts.txt, like Ultralytics' data=): what calibrated the quantized DiTs
    (source, size) is in the manifest, the folder's short count is said, and no procedural-scene warning."""
    from PIL import Image

    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("kitchen.png", "desk.jpg"):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / name)
    (folder / "prompts.txt").write_text("kitchen.png | the red mug\nkitchen.png | the kettle\ndesk.jpg | the stapler\n")
    args = [sys.executable, str(REPO / "export" / "build_engines.py"), "--checkpoint", str(tiny[1]),
            "--out", str(tmp_path / "engines"), "--precisions", "int8,fp8", "--calib", str(folder),
            "--calib-size", "8", "--int8-keep-blocks", "0", "--tensorrt", "off", "--no-text-embedder", "--no-progress"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "calibration folder has 3 samples (< --calib-size 8); using all" in done.stdout
    assert "WARNING" not in done.stdout
    manifest = load_manifest(tmp_path / "engines")
    assert manifest.precisions == ["int8", "fp8"]
    for precision in ("int8", "fp8"):
        record = manifest.artifact("dit", precision)
        calib = record["details"]["calibration"]
        assert calib["samples"] == 3 and calib["source"]["kind"] == "folder" and "warning" not in calib
        assert calib["source"]["prompts_sha256"] == sha256_file(folder / "prompts.txt")
        assert record["fidelity"]["mask_iou_mean"] >= 0.8
    assert manifest.artifact("dit", "fp8")["opset"] == 19 and manifest.artifact("dit", "int8")["opset"] == 18


def test_segmenter_on_a_cpu_opens_the_set_the_build_timing_chose(tiny):
    from genmask_sdk import Segmenter
    from genmask_sdk.families.genmask.engines import choose_cpu_set

    _, _, engines, result, _ = tiny
    expected, why = choose_cpu_set(result.manifest)
    with Segmenter.from_engines(engines, device="cpu") as auto:
        info = auto.describe()
    assert (info["backend"], info["precision"]) == ("onnxruntime", expected)
    assert info["precision_choice"] == why and info["files"]["dit"]["file"] == f"dit.{expected}.onnx"


def test_int8_dynamic_set_runs_through_the_segmenter_close_to_fp32(tiny):
    from genmask_sdk import Segmenter

    engines = tiny[2]
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    with Segmenter.from_engines(engines, backend="onnxruntime", precision="int8-dynamic", device="cpu") as cpu_set, \
            Segmenter.from_engines(engines, backend="onnxruntime", precision="fp32", device="cpu") as fp32:
        assert cpu_set.describe()["precision_choice"] is None  # asked for by name
        a, b = cpu_set.predict(image, "the red circle"), fp32.predict(image, "the red circle")
    assert np.corrcoef(a.logits.ravel(), b.logits.ravel())[0, 1] > 0.98

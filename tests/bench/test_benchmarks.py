"""benchmarks/latency.py and benchmarks/accuracy.py on tiny settings, the FLOP formulas, and the
refer-layout (RefCOCO) loader on a fixture written in the test.

The scripts run in-process (``main(argv)``) on the session's tiny random model and its engines
(``tiny_engines`` in conftest: fp32 + fp16 sets), with ``--quick --no-build``, so nothing is
exported here; targets that cannot run on this machine must show up as *skipped* with a reason.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
EXPORTER = importlib.util.find_spec("genmask_sdk.families.genmask.export.build") is not None
requires_exporter = pytest.mark.skipif(not EXPORTER, reason="the exporter (genmask_sdk.families.genmask.export.build) is missing; "
                                                            "the benchmarks need ONNX graphs to time")


def _script(name: str):
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _numbers(value, path="$"):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)


def _check_files(out: Path, name: str) -> dict:
    text = (out / f"{name}.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    for where, number in _numbers(data):
        assert math.isfinite(number), where
    assert (out / f"{name}.md").read_text().startswith("# ")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert data["outputs"]["png"] is None and "matplotlib" in data["outputs"]["plot_error"]
    else:
        png = out / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", data["outputs"].get("plot_error")
    for key in ("schema", "created", "settings", "hardware", "versions", "model", "command"):
        assert key in data
    assert data["hardware"]["cpu"]["logical_cpus"] >= 1 and "torch_threads" in data["hardware"]
    for tool in ("torch", "diffusers", "onnx", "onnxruntime", "tensorrt"):
        assert tool in data["versions"]
    return data


@pytest.fixture()
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _check_latency_row(row: dict, reference: bool) -> None:
    for key in ("batch", "n", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "first_call_ms", "prompts_per_s"):
        assert key in row, key
    assert row["n"] == 3
    assert 0 < row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert row["ratio_vs_reference"] is not None and row["ratio_vs_reference"] > 0
    if reference:
        assert row["ratio_vs_reference"] == pytest.approx(1.0)
    assert row["tflops"] > 0 and row["peak_fraction"] > 0 and row["flops"] > 0


# ------------------------------------------------------------------------------------ latency
@requires_exporter
def test_latency_pipeline_quick(tiny_engines, tmp_path, restore_threads):
    engines, checkpoint = tiny_engines
    out = tmp_path / "results"
    argv = ["--model", str(checkpoint), "--engines", str(engines), "--no-build", "--quick", "--threads", "1",
            "--backends", "torch-eager,ort-cpu-fp32,ort-cpu-fp16,ort-cpu-int8,ort-cpu-int8-dynamic,trt-fp16",
            "--work-dir", str(tmp_path / "work"), "--out-dir", str(out), "--name", "lat", "--no-progress"]
    assert _script("latency").main(argv) == 0
    data = _check_files(out, "lat")
    assert data["schema"] == "genmask-bench-latency/1" and data["settings"]["mode"] == "pipeline"
    assert data["peak"]["tflops"] > 0
    (res,) = data["resolutions"]
    assert res["resolution"] == 32
    targets = {t["target"]: t for t in res["targets"]}
    assert list(targets)[0] == "torch-eager"
    for name in ("torch-eager", "ort-cpu-fp32", "ort-cpu-fp16"):
        entry = targets[name]
        assert entry["status"] == "ok", entry["reason"]
        assert set(entry["stages"]) == {"vae_encoder", "dit", "mask_head", "end_to_end"}
        assert [r["batch"] for r in entry["stages"]["dit"]] == [1, 2]
        for rows in entry["stages"].values():
            for row in rows:
                _check_latency_row(row, name == "torch-eager")
        assert entry["memory"]["host_peak_rss_mib"] > 0
        breakdown = entry["stages"]["end_to_end"][0]["breakdown_p50_ms"]
        assert {"embed", "vae_encoder", "dit", "mask_head", "total"} <= set(breakdown)
    for name in ("ort-cpu-fp32", "ort-cpu-fp16"):
        fidelity = targets[name]["fidelity"]
        assert fidelity["e2e_mask_iou"] > 0.9 and fidelity["dit_cosine"] > 0.99
    assert targets["ort-cpu-fp32"]["fidelity"]["dit_max_abs_diff"] < 1e-3
    for name in ("ort-cpu-int8", "ort-cpu-int8-dynamic"):  # sets the engines lack, with --no-build
        assert targets[name]["status"] == "skipped" and "int8" in targets[name]["reason"]
    assert "open_engines" in targets["ort-cpu-fp32"]["details"]["opened_with"]
    if not torch.cuda.is_available():
        assert targets["trt-fp16"]["status"] == "skipped" and "CUDA" in targets["trt-fp16"]["reason"]
    embed = res["shared"]["embed"][0]
    assert embed["p50_ms"] <= embed["p90_ms"] <= embed["p99_ms"]
    markdown = (out / "lat.md").read_text()
    assert "| ONNX Runtime CPU fp32 | dit | 1 |" in markdown and "skipped" in markdown


@requires_exporter
def test_latency_dit_only_quick(tiny_engines, tmp_path, restore_threads):
    """DiT-only mode (what the real-size run uses) on a copy of the fixture's engines: the missing
    int8-dynamic set is added by build_engines (the other files are reused)."""
    source, checkpoint = tiny_engines
    engines = tmp_path / "engines"
    shutil.copytree(source, engines)
    out = tmp_path / "results"
    argv = ["--model", str(checkpoint), "--mode", "dit-only", "--engines", str(engines), "--quick", "--threads", "1",
            "--backends", "torch-eager,torch-bf16,ort-cpu-fp32,ort-cpu-int8-dynamic,ov-cpu-fp32,ov-cpu-fp32-bf16",
            "--batch-sizes", "1", "2",
            "--work-dir", str(tmp_path / "work"), "--out-dir", str(out), "--name", "dit", "--no-progress"]
    assert _script("latency").main(argv) == 0
    data = _check_files(out, "dit")
    (res,) = data["resolutions"]
    assert res["mode"] == "dit-only"
    openvino_missing = importlib.util.find_spec("openvino") is None
    for entry in res["targets"]:
        if entry["target"].startswith("ov-") and openvino_missing:
            assert entry["status"] == "skipped" and "openvino" in entry["reason"]
            continue
        assert entry["status"] == "ok", entry["reason"]
        assert list(entry["stages"]) == ["dit"]
        for row in entry["stages"]["dit"]:
            _check_latency_row(row, entry["target"] == "torch-eager")
    bf16 = next(e for e in res["targets"] if e["target"] == "torch-bf16")  # the peer users try first on a CPU
    assert bf16["details"]["autocast"] == "bfloat16" and bf16["fidelity"]["dit_cosine"] > 0.99
    if not openvino_missing:  # OpenVINO on the same fp32 DiT graph: f32 exact, bf16 close
        by_name = {e["target"]: e for e in res["targets"]}
        assert by_name["ov-cpu-fp32"]["fidelity"]["dit_cosine"] > 0.9999
        assert by_name["ov-cpu-fp32-bf16"]["fidelity"]["dit_cosine"] > 0.99
    dynamic = next(e for e in res["targets"] if e["target"] == "ort-cpu-int8-dynamic")
    assert "quantize_dynamic" in res["artifacts"]["methods"]["int8-dynamic"]["method"]
    assert res["artifacts"]["build_seconds"]["engines"] > 0  # the set was built by build_engines
    assert json.loads((engines / "manifest.json").read_text())["sets"]["int8-dynamic"]["onnx"]["dit"] == \
        "dit.int8-dynamic.onnx"
    assert dynamic["fidelity"]["dit_cosine"] > 0.9 and dynamic["details"]["files"]["dit"] == "dit.int8-dynamic.onnx"
    assert dynamic["details"]["dit_build_fidelity"]["reference"] == "pytorch float32"


@pytest.mark.slow
@requires_exporter
def test_latency_dit_only_exports_and_reuses(tmp_path, restore_threads):
    """The real-size run's path on the tiny preset: random weights built by build_engines into
    --work-dir (int8 calibrated on random inputs, int8-dynamic), then a second run reuses them
    (through build_engines, which would rebuild what an SDK or tool upgrade made stale)."""
    out, work = tmp_path / "results", tmp_path / "work"
    argv = ["--model", "tiny", "--mode", "dit-only", "--quick", "--threads", "1",
            "--backends", "torch-eager,ort-cpu-fp32,ort-cpu-int8,ort-cpu-int8-dynamic",
            "--work-dir", str(work), "--out-dir", str(out), "--name", "export", "--no-progress"]
    latency = _script("latency")
    assert latency.main(argv) == 0
    first = _check_files(out, "export")["resolutions"][0]
    assert all(e["status"] == "ok" for e in first["targets"]), [e["reason"] for e in first["targets"]]
    assert first["artifacts"]["methods"]["int8"]["calibration"]["source"]["kind"] == "random"
    manifest = json.loads((work / "engines-r32" / "manifest.json").read_text())
    assert set(manifest["sets"]) == {"fp32", "int8", "int8-dynamic"} and manifest["cpu_timing"]
    before = {p.name: p.stat().st_mtime_ns for p in (work / "engines-r32").glob("*.onnx")}
    assert latency.main(argv) == 0
    again = _check_files(out, "export")["resolutions"][0]
    # the second run goes through build_engines too (it checks SDK/tool versions and options), which
    # reuses every unchanged file
    assert again["artifacts"]["build_seconds"]["engines"] < first["artifacts"]["build_seconds"]["engines"]
    assert {p.name: p.stat().st_mtime_ns for p in (work / "engines-r32").glob("*.onnx")} == before


# ------------------------------------------------------------------------------------ FLOPs
def test_dit_flops_match_the_flop_counter(tiny_model):
    """The analytic projection FLOPs equal torch's FlopCounterMode (mm/addmm/conv) exactly; the
    attention core is checked against its formula."""
    from torch.utils.flop_counter import FlopCounterMode

    from genmask_sdk.bench.flops import dit_flops

    config = tiny_model.config
    h, length = config.latent_size, 5
    z = torch.randn(2, 16, h, h)
    context = torch.randn(2, length, config.embedder.hidden_size)
    mask = torch.ones(2, length, dtype=torch.bool)
    dit = tiny_model.one_step_dit()  # built outside the counter: its folded constants are not run-time work
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        dit(z, context, mask)
    counted = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    flops = dit_flops(config, length, batch=2)
    projections = sum(v for k, v in flops.parts.items() if not k.endswith("_core"))
    # Projections are addmm/mm/convolution; SDPA is uncounted (fused CPU kernel) or counted as bmm.
    assert projections == counted.get("aten.addmm", 0) + counted.get("aten.mm", 0) + counted.get("aten.convolution", 0)
    tf = config.transformer
    d, n = tf["num_attention_heads"] * tf["attention_head_dim"], 2 * config.tokens_per_frame
    assert flops.parts["self_attention_core"] == 2 * tf["num_layers"] * 4 * n * n * d


def test_vae_flops_match_the_flop_counter(tiny_model):
    from torch.utils.flop_counter import FlopCounterMode

    from genmask_sdk.bench.flops import vae_encoder_flops
    from genmask_sdk.families.genmask.modeling.vae import single_frame_convolutions

    config = tiny_model.config
    pixels = torch.rand(1, 3, config.resolution, config.resolution) * 2 - 1
    counts = {}
    for executed in (True, False):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            if executed:
                tiny_model.encode_image(pixels)
            else:
                with single_frame_convolutions(tiny_model.vae):
                    tiny_model.encode_image(pixels)
        counts[executed] = counter.get_flop_counts()["Global"]
    for executed, counted in counts.items():
        flops = vae_encoder_flops(config, executed=executed)
        convolution = sum(v for k, v in counted.items() if "convolution" in str(k))
        assert flops.parts["convolutions"] == convolution, executed


def test_real_size_flops_are_the_documented_ones():
    from genmask_sdk.bench.flops import dit_flops, vae_encoder_flops
    from genmask_sdk.families.genmask.config import GenMaskConfig

    config = GenMaskConfig.preset("wan2.1-1.3b", resolution=256)
    assert dit_flops(config, 32).total / 1e12 == pytest.approx(1.341, abs=0.002)
    big = config.replace(resolution=512)
    assert dit_flops(big, 32).total / 1e12 == pytest.approx(5.917, abs=0.002)
    assert vae_encoder_flops(big).total / 1e12 == pytest.approx(0.636, abs=0.002)


def test_summaries_are_ordered():
    from genmask_sdk.bench.stats import summarize, time_calls

    seconds, result = time_calls(lambda: 7, warmup=1, repeats=5)
    assert result == 7 and len(seconds) == 5
    summary = summarize([0.003, 0.001, 0.002, 0.010, 0.004])
    assert summary["n"] == 5 and summary["min_ms"] == pytest.approx(1.0)
    assert summary["p50_ms"] == pytest.approx(3.0) and summary["max_ms"] == pytest.approx(10.0)
    assert summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"] <= summary["max_ms"]


# ------------------------------------------------------------------------------------ refer layout
def _write_refer_fixture(root: Path) -> dict:
    """2 images, 3 refs (4 sentences): a polygon, a compressed RLE and an uncompressed RLE."""
    from genmask_sdk.metrics import encode_rle

    images_dir = root / "images" / "mscoco" / "images" / "train2014"
    images_dir.mkdir(parents=True)
    sizes = {1: (30, 40), 2: (36, 24)}  # image_id -> (height, width)
    files = {}
    rng = np.random.default_rng(0)
    for image_id, (h, w) in sizes.items():
        files[image_id] = f"COCO_train2014_{image_id:012d}.jpg"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images_dir / files[image_id], quality=95)
    rle_mask = np.zeros(sizes[1], dtype=bool)
    rle_mask[2:9, 25:37] = True
    crowd_mask = np.zeros(sizes[2], dtype=bool)
    crowd_mask[10:20, 4:10] = True
    crowd_mask[30:33, 0:24] = True
    flat = crowd_mask.flatten(order="F").astype(np.uint8)  # column-major runs, starting with background
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    assert sum(counts) == flat.size
    polygon = [[4.0, 5.0, 20.0, 5.0, 20.0, 25.0, 4.0, 25.0]]  # x, y pairs: a 16 x 20 box
    instances = {
        "images": [{"id": i, "file_name": files[i], "height": h, "width": w} for i, (h, w) in sizes.items()],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 1, "segmentation": polygon, "bbox": [4, 5, 16, 20], "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 2, "segmentation": encode_rle(rle_mask), "bbox": [25, 2, 12, 7],
             "iscrowd": 0},
            {"id": 21, "image_id": 2, "category_id": 1, "segmentation": {"size": list(sizes[2]), "counts": counts},
             "bbox": [0, 10, 24, 23], "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}],
    }
    refs = [
        {"ref_id": 101, "ann_id": 11, "image_id": 1, "category_id": 1, "split": "val", "file_name": files[1],
         "sentences": [{"sent_id": 1, "sent": "the left box", "raw": "The left box", "tokens": ["the", "left", "box"]},
                       {"sent_id": 2, "sent": "big square", "raw": "big square", "tokens": ["big", "square"]}]},
        {"ref_id": 102, "ann_id": 12, "image_id": 1, "category_id": 2, "split": "testA", "file_name": files[1],
         "sentences": [{"sent_id": 3, "sent": "thing top right", "raw": "thing top right", "tokens": []}]},
        {"ref_id": 201, "ann_id": 21, "image_id": 2, "category_id": 1, "split": "val", "file_name": files[2],
         "sentences": [{"sent_id": 4, "sent": "the crowd", "raw": "the crowd", "tokens": []}]},
    ]
    (root / "refcoco").mkdir()
    (root / "refcoco" / "instances.json").write_text(json.dumps(instances))
    with open(root / "refcoco" / "refs(unc).p", "wb") as handle:
        pickle.dump(refs, handle, protocol=2)
    return {"rle_mask": rle_mask, "crowd_mask": crowd_mask, "sizes": sizes}


def test_refer_layout_loader(tmp_path):
    from genmask_sdk.errors import ArtifactNotFoundError
    from genmask_sdk.families.genmask.eval.refer import ReferDataset

    truth = _write_refer_fixture(tmp_path)
    data = ReferDataset(tmp_path, "refcoco")
    assert data.name == "refcoco (unc)" and data.splits() == ["val", "testA"]
    val = list(data.images("val"))
    assert [i.image_id for i in val] == [1, 2]
    assert [e.text for e in val[0].expressions] == ["the left box", "big square"]
    assert data.count("val") == 3 and data.count("testA") == 1 and data.count("testB") == 0
    assert data.count("test") == 1 and data.count("val", limit=2) == 2
    assert sum(len(i.expressions) for i in data.images("val", limit=2)) == 2
    pixels = data.load_image(val[1])
    assert pixels.shape == (36, 24, 3) and pixels.dtype == np.uint8
    polygon = data.mask(11)
    assert polygon.shape == (30, 40) and polygon.dtype == bool
    assert polygon[10:20, 8:16].all() and not polygon[:4].any() and not polygon[:, 22:].any()
    assert abs(int(polygon.sum()) - 16 * 20) <= 40  # pycocotools' polygon rasterisation
    assert np.array_equal(data.mask(12), truth["rle_mask"])
    assert np.array_equal(data.mask(21), truth["crowd_mask"])
    with pytest.raises(ArtifactNotFoundError, match="refs"):
        ReferDataset(tmp_path, "refcoco+")


@requires_exporter
def test_accuracy_quick_with_refer_fixture(tiny_engines, tmp_path, restore_threads):
    engines, checkpoint = tiny_engines
    _write_refer_fixture(tmp_path / "refer")
    out = tmp_path / "results"
    argv = ["--model", str(checkpoint), "--engines", str(engines), "--no-build", "--quick", "--threads", "1",
            "--backends", "torch-eager,ort-cpu-fp32,ort-cpu-fp16,ort-cpu-int8,trt-int8", "--max-batch", "4",
            "--refer-root", str(tmp_path / "refer"), "--refer-datasets", "refcoco,refcocog",
            "--out-dir", str(out), "--name", "acc", "--no-progress"]
    assert _script("accuracy").main(argv) == 0
    data = _check_files(out, "acc")
    assert data["schema"] == "genmask-bench-accuracy/1"
    datasets = {d["name"]: d for d in data["datasets"]}
    assert set(datasets) == {"demo held-out scenes (seed 10000, 4 scenes)", "refcoco (unc) val", "refcoco (unc) testA",
                             "refcoco (unc) testB", "refcocog"}
    assert datasets["refcoco (unc) testB"]["status"] == "skipped"
    assert datasets["refcocog"]["status"] == "skipped" and "refs(umd).p" in datasets["refcocog"]["reason"]
    for name in ("demo held-out scenes (seed 10000, 4 scenes)", "refcoco (unc) val", "refcoco (unc) testA"):
        entries = {e["target"]: e for e in datasets[name]["backends"]}
        for target in ("torch-eager", "ort-cpu-fp32", "ort-cpu-fp16"):
            entry = entries[target]
            assert entry["status"] == "ok", entry.get("reason")
            scores = entry["scores"]
            for key in ("miou", "giou", "oiou", "ciou"):
                assert 0.0 <= scores[key] <= 1.0
            assert scores["miou"] == scores["giou"] and scores["oiou"] == scores["ciou"]
        assert entries["ort-cpu-fp32"]["fidelity"]["mask_iou_mean"] > 0.99
        assert entries["ort-cpu-fp32"]["fidelity"]["max_abs_logit_diff"] < 1e-3
        assert entries["ort-cpu-int8"]["status"] == "skipped"
        assert entries["trt-int8"]["status"] == "skipped"
    assert datasets["refcoco (unc) val"]["backends"][0]["scores"]["count"] == 3
    assert datasets["refcoco (unc) testA"]["backends"][0]["scores"]["count"] == 1


def test_demo_accuracy_quick(demo_engines, tmp_path, restore_threads):
    """The trained demo through its fp32 engines: faithful to PyTorch and far above chance."""
    engines, _ = demo_engines
    argv = ["--model", "demo", "--engines", str(engines), "--no-build", "--quick", "--threads", "1",
            "--backends", "torch-eager,ort-cpu-fp32", "--out-dir", str(tmp_path), "--name", "demo", "--no-progress"]
    _script("accuracy").main(argv)
    data = _check_files(tmp_path, "demo")
    (dataset,) = data["datasets"]
    entries = {e["target"]: e for e in dataset["backends"]}
    assert entries["torch-eager"]["scores"]["miou"] > 0.1  # random weights score ~0.04 on these scenes
    assert entries["ort-cpu-fp32"]["fidelity"]["mask_iou_mean"] > 0.99


def test_vlm_stage_quick(tmp_path, restore_threads):
    """The Qwen2.5-VL stage benchmark on the tiny architecture at the real 448² image budget."""
    argv = ["--size", "tiny", "--quick", "--out", str(tmp_path), "--name", "vlm"]
    assert _script("vlm_stage").main(argv) == 0
    data = json.loads((tmp_path / "vlm.json").read_text())
    for where, number in _numbers(data):
        assert math.isfinite(number), where
    assert (tmp_path / "vlm.md").read_text().startswith("# Qwen2.5-VL-TINY")
    for key in ("schema", "created", "settings", "hardware", "versions", "model", "command"):
        assert key in data
    assert data["lengths"]["image_tokens"] == 256
    timings = data["timings"]
    assert {"image_prefix", "first_prompt", "first_total", "extra_prompt", "batch_4", "reason", "full_prefill"} <= set(timings)
    for row in timings.values():
        assert 0 < row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert data["cache_vs_full_max_abs"] <= 1e-4
    assert data["ratios"]["extra_prompt_over_first"] == timings["extra_prompt"]["p50_ms"] / timings["first_total"]["p50_ms"]


def test_startup_quick(tiny_engines, tmp_path):
    """Fresh-process startup of the runtime on the tiny engines (which carry the ONNX text embedder)."""
    argv = ["--engines", str(tiny_engines[0]), "--runs", "1", "--warm-calls", "2", "--out", str(tmp_path),
            "--name", "startup"]
    assert _script("startup").main(argv) == 0
    data = json.loads((tmp_path / "startup.json").read_text())
    assert data["heavy_modules_imported"] == []  # the deployed path imports neither torch nor transformers
    assert data["embedder_runs_on"].startswith("onnxruntime (cpu)")
    assert set(data["timings"]) == {"import", "from_engines", "cli", "warm_predict"}
    assert data["timings"]["warm_predict"]["n"] == 2
    for row in data["timings"].values():
        assert 0 < row["min_ms"] <= row["p50_ms"] <= row["max_ms"]
    assert data["timings"]["import"]["p50_ms"] < data["timings"]["from_engines"]["p50_ms"]
    assert (tmp_path / "startup.md").read_text().startswith("# Startup")


def test_scripts_have_help():
    for name in ("latency", "accuracy", "vlm_stage", "startup", "quant_sensitivity"):
        module = _script(name)
        with pytest.raises(SystemExit) as exit_info:
            module.parse_args(["--help"])
        assert exit_info.value.code == 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_refs_pickle_loads_plain_data_only(tmp_path):
    """A pickle that references a callable (how a malicious file runs code) is refused, not executed."""
    import os
    import pickle

    from genmask_sdk.errors import InvalidInputError
    from genmask_sdk.families.genmask.eval.refer import load_refs

    plain = tmp_path / "plain.p"
    plain.write_bytes(pickle.dumps([{"ref_id": 1, "sentences": [{"sent": "the cup"}]}], protocol=2))
    assert load_refs(plain)[0]["ref_id"] == 1

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    hostile = tmp_path / "hostile.p"
    hostile.write_bytes(pickle.dumps([Payload()]))
    with pytest.raises(InvalidInputError, match="only plain data"):
        load_refs(hostile)
    assert not (tmp_path / "pwned").exists()


def test_quant_sensitivity_quick(tmp_path, restore_threads):
    pytest.importorskip("modelopt.torch.quantization", reason="nvidia-modelopt is not installed (export extra)")
    module = _script("quant_sensitivity")
    assert module.main(["--model", "tiny", "--quick", "--out-dir", str(tmp_path), "--name", "qs"]) == 0
    result = json.loads((tmp_path / "qs.json").read_text())
    assert [m["mode"] for m in result["modes"]] == ["int8", "fp8"]
    for mode in result["modes"]:
        groups = {r["group"]: r for r in mode["rows"]}
        assert {"block 0", "block 1", "text embedder", "proj_out", "every block"} <= set(groups)
        assert all(0 <= r["mask_iou_pooled"] <= 1 and r["relative_max_error"] >= 0 for r in mode["rows"])
        assert groups["every block"]["relative_max_error"] > 0  # quantization changed something
    assert "| block 0 |" in (tmp_path / "qs.md").read_text()


def test_gen2seg_prompt_memory_quick(tmp_path, monkeypatch):
    """benchmarks/gen2seg_prompts_memory.py's measurement on a tiny frame: a torch-free child process
    reports its own high-water mark and the task's timings (the real run uses 1-12 MP frames)."""
    from genmask_sdk import build_gen2seg_engines
    from genmask_sdk.bench import gen2seg_prompts

    engines = tmp_path / "g2s"
    build_gen2seg_engines("demo-gen2seg", engines, ["fp32"], tensorrt="off", check_samples=1, progress=False,
                          log=lambda line: None)
    monkeypatch.setitem(gen2seg_prompts.SIZES, "tiny", (96, 72))
    rows = gen2seg_prompts.run(str(engines), ["tiny"], ["point1", "everything"], repeats=2, grid=4, progress=False)
    assert [r["task"] for r in rows] == ["point1", "everything"]
    for row in rows:
        assert row["torch_loaded"] is False and row["time"]["n"] == 2
        assert 20 < row["peak_after_open_mib"] <= row["peak_after_set_image_mib"] <= row["peak_rss_mib"] < 2048
    markdown = gen2seg_prompts.markdown({"rows": rows, "repeats": 2, "precision": "fp32", "engines_model": "demo-gen2seg",
                                         "machine": {"cpu": "test", "logical_cpus": 2}, "genmask_sdk": "x",
                                         "onnxruntime": "x", "numpy": "x", "opencv": "x"})
    assert "| tiny (96×72) | everything (grid 4) |" in markdown

"""Engines you can trust: a manifest never makes the SDK open a file outside the engines directory,
an invalid manifest is one typed error listing what is wrong, and the graphs are checked against
the manifest on every backend (here ONNX Runtime; TensorRT in test_tensorrt_runner).

Sentinel files sit outside the engines directory; an audit hook records every Python-level open of
them, and a sentinel FIFO would block any native open (so a test that reached one would hang and
time out instead of passing).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from genmask_sdk import Segmenter
from genmask_sdk.errors import ArtifactMismatchError, GenMaskError
from genmask_sdk.runtime.manifest import contained, load_manifest

OPENED: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and args and "SENTINEL" in str(args[0]):
        OPENED.append(str(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def engines(tiny_engines, tmp_path):
    """(a private copy of the tiny engines, a folder of sentinels beside it)."""
    directory = tmp_path / "engines"
    shutil.copytree(tiny_engines[0], directory)
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("dit.fp32.onnx", "tokenizer.json"):
        if (directory / name).exists():
            shutil.copy(directory / name, outside / f"SENTINEL.{name}")
    os.mkfifo(outside / "SENTINEL.fifo")
    OPENED.clear()
    yield directory, outside
    assert not OPENED, f"files outside the engines directory were opened: {OPENED}"


def _edit(directory: Path, change) -> None:
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _record(data, file):
    return next(a for a in data["artifacts"] if a["file"] == file)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("entry", ["../outside/SENTINEL.dit.fp32.onnx", "ABSOLUTE", "../../../../etc/passwd",
                                   "sub/../../outside/SENTINEL.fifo", "~/SENTINEL"])
def test_file_entries_outside_the_directory_are_refused_before_any_read(engines, entry):
    directory, outside = engines
    name = str(outside / "SENTINEL.dit.fp32.onnx") if entry == "ABSOLUTE" else entry

    def point_outside(data):
        record = _record(data, "dit.fp32.onnx")
        record["file"] = name
        target = (directory / name) if not os.path.isabs(name) else Path(name)
        if target.is_file() and "SENTINEL" in name:
            record["sha256"], record["bytes"] = _sha(outside / "SENTINEL.dit.fp32.onnx"), target.stat().st_size
        data["sets"]["fp32"]["onnx"]["dit"] = name

    _edit(directory, point_outside)
    OPENED.clear()
    with pytest.raises(ArtifactMismatchError, match=r"artifacts\[\d+\]\.file .* is not inside the engines directory"):
        Segmenter.from_engines(directory, backend="onnxruntime", device="cpu")


def test_genmask_info_reports_the_bad_entry_and_fails(engines):
    directory, outside = engines
    _edit(directory, lambda d: _record(d, "dit.fp32.onnx").update(file="../outside/SENTINEL.dit.fp32.onnx"))
    done = subprocess.run([sys.executable, "-m", "genmask_sdk.cli.main", "info", str(directory)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "sha256 OK" not in done.stdout
    assert "is not inside the engines directory" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_external_data_outside_is_refused(engines):
    directory, _ = engines
    _edit(directory, lambda d: _record(d, "dit.fp32.onnx").update(
        external_data=[{"file": "/etc/hostname", "sha256": "0" * 64, "bytes": 1}]))
    with pytest.raises(ArtifactMismatchError, match=r"external_data\[0\]\.file '/etc/hostname' is not inside"):
        load_manifest(directory)


def test_links_leaving_the_directory_are_refused(engines):
    directory, outside = engines
    (directory / "dit.fp32.onnx").unlink()
    (directory / "dit.fp32.onnx").symlink_to(outside / "SENTINEL.dit.fp32.onnx")
    with pytest.raises(ArtifactMismatchError, match="is not inside the engines directory"):
        load_manifest(directory)
    (directory / "dit.fp32.onnx").unlink()
    shutil.copy(outside / "SENTINEL.dit.fp32.onnx", directory / "dit.fp32.onnx")
    OPENED.clear()  # (the copy above is the test's own read)
    (directory / "extra.data").symlink_to(outside / "SENTINEL.fifo")  # unlisted, but ONNX Runtime could open it
    with pytest.raises(ArtifactMismatchError, match=r"symlinks leave the engines directory: \['extra.data'\]"):
        Segmenter.from_engines(directory, backend="onnxruntime", device="cpu")


def test_links_inside_the_directory_are_fine(tmp_path):
    (tmp_path / "a").write_text("x")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert contained(tmp_path, "b") == tmp_path / "b"
    assert contained(tmp_path, "../a") is None and contained(tmp_path, "") is None
    assert contained(tmp_path, "a\x00") is None and contained(tmp_path, None) is None


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: _record(d, "dit.fp32.onnx").pop("sha256"), r"artifacts\[\d+\]\.sha256 must be 64 lowercase hex"),
    (lambda d: _record(d, "dit.fp32.onnx").pop("file"), r"artifacts\[\d+\]\.file must be a file name, got null"),
    (lambda d: d.update(sets=list(d["sets"])), "'sets' must be a JSON object, got an array"),
    (lambda d: d.update(artifacts={"a": 1}), "'artifacts' must be a JSON array, got an object"),
    (lambda d: d.update(max_batch="abc"), "'max_batch' must be an integer >= 1, got 'abc'"),
    (lambda d: d.update(max_batch=-1), "'max_batch' must be an integer >= 1, got -1"),
    (lambda d: d.update(max_batch=0), "'max_batch' must be an integer >= 1, got 0"),
    (lambda d: d.update(max_prompt_tokens="abc"), "'max_prompt_tokens' must be an integer >= 1, got 'abc'"),
    (lambda d: d["sets"]["fp32"]["onnx"].update(dit="nothing.onnx"), "sets.fp32.onnx.dit = 'nothing.onnx' is not a"),
    (lambda d: d["sets"]["fp32"]["onnx"].update(dit="mask_head.fp32.onnx"), "is recorded as stage 'mask_head'"),
    (lambda d: d["config"]["transformer"].update(num_layers=7), r"config differs .*\['transformer'\]"),
    (lambda d: d["config"].update(resolution=256), r"config differs .*\['resolution'\]"),
    (lambda d: d.update(resolution=256), "resolution 256 differs from config.resolution"),
    (lambda d: d["checkpoint"].update(sha256="f" * 64), "checkpoint.sha256 differs"),
])  # fmt: skip
def test_invalid_manifests_are_one_typed_error(engines, change, expected):
    directory, _ = engines
    _edit(directory, change)
    with pytest.raises(ArtifactMismatchError, match=expected) as err:
        Segmenter.from_engines(directory, backend="onnxruntime", device="cpu")
    assert "is not a valid engines manifest" in str(err.value) and "build_engines.py" in str(err.value)


def test_every_problem_is_listed_at_once(engines):
    directory, _ = engines
    _edit(directory, lambda d: d.update(max_batch=0, max_prompt_tokens="abc", sets=[]))
    with pytest.raises(ArtifactMismatchError) as err:
        load_manifest(directory)
    assert all(key in str(err.value) for key in ("'max_batch'", "'max_prompt_tokens'", "'sets'"))


@pytest.mark.parametrize("change", [
    lambda r: r["inputs"][0].update(shape=[None, 16, 9, 9]),
    lambda r: r["inputs"].pop(),
    lambda r: r["outputs"][0].update(dtype="float16"),
])  # fmt: skip
def test_graphs_are_checked_against_their_records_on_onnxruntime(engines, change):
    directory, _ = engines
    _edit(directory, lambda d: change(_record(d, "dit.fp32.onnx")))
    with pytest.raises(ArtifactMismatchError, match="the dit graph 'dit.fp32.onnx' has (inputs|outputs) .* but the "
                                                    "manifest records"):
        Segmenter.from_engines(directory, backend="onnxruntime", device="cpu")


def test_errors_are_genmask_errors_never_library_exceptions(engines):
    directory, _ = engines
    for change in (lambda d: d.update(artifacts=[None]), lambda d: d.update(text_embedder={"graphs": 3}),
                   lambda d: d["sets"].update(fp32=None), lambda d: d.update(checkpoint=[])):
        shutil.copy(directory / "manifest.json", directory / "manifest.backup")
        _edit(directory, change)
        with pytest.raises(GenMaskError):
            Segmenter.from_engines(directory, backend="onnxruntime", device="cpu")
        shutil.move(directory / "manifest.backup", directory / "manifest.json")

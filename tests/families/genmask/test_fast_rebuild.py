"""A rebuild with nothing to do (``genmask_sdk.families.genmask.export.uptodate``): answered without importing torch,
diffusers, transformers or onnx, with the manifest left as it is; anything the full build would act
on (a changed option, other sets, a changed file, --force, another build's leftovers) takes the
full build.

Works on copies of the session's demo engines (``demo_engines`` in conftest.py): nothing is exported
here. Timing belongs in benchmarks; these tests only check the decision and the imports.
"""

from __future__ import annotations

import json
import shutil

import pytest

from genmask_sdk.families.genmask.checkpoints import demo_checkpoint_dir
from genmask_sdk.families.genmask.export import build as pipeline, uptodate
from genmask_sdk.families.genmask.export.options import PRECISIONS, build_options
from genmask_sdk.export.staging import BuildLock, BuildLockedError
from genmask_sdk.families.genmask.export.uptodate import up_to_date
from test_torch_free import run_blocked

HEAVY = ("torch", "diffusers", "transformers", "onnx")


@pytest.fixture
def engines(demo_engines, tmp_path):
    """(a copy of the demo engines directory, its precision sets in manifest order)."""
    out = tmp_path / "engines"
    shutil.copytree(demo_engines[0], out)
    return out, list(json.loads((out / "manifest.json").read_text())["sets"])


def options(precisions, **changes):
    """The options the demo engines were built with (conftest: tensorrt off), with ``changes``."""
    return build_options(precisions, **{"tensorrt": "off", "progress": False, **changes})


def reusable_files(out) -> list[str]:
    """What a rebuild reports as reused: every listed file but the tokenizer, in manifest order."""
    data = json.loads((out / "manifest.json").read_text())
    return [a["file"] for a in data["artifacts"] if a["runtime"] != "tokenizers"]


def test_no_op_rebuild_from_the_command_line_imports_nothing_heavy(engines):
    out, precisions = engines
    before = (out / "manifest.json").read_bytes()
    argv = ["--out", str(out), "--precisions", ",".join(precisions), "--tensorrt", "off", "--no-progress"]
    done = run_blocked(f"""
        import json, sys
        from genmask_sdk.cli.build import main
        code = main({argv!r})
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        print(json.dumps({{"code": code, "loaded": loaded}}))
    """, blocked=HEAVY)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"code": 0, "loaded": []}
    files = reusable_files(out)
    for name in files:
        assert f"reused {name} (same checkpoint, config and options; sha256 verified)" in done.stdout
    assert f"(built 0, reused {len(files)}; manifest unchanged)" in done.stdout
    assert f"{precisions[0]}: vae_encoder." in done.stdout  # the sets, as after a full build
    assert (out / "manifest.json").read_bytes() == before


def test_build_engines_answers_a_no_op_rebuild_the_same_way(engines):
    out, precisions = engines
    before = (out / "manifest.json").read_bytes()
    lines: list[str] = []
    result = pipeline.build_engines("demo", out, precisions, tensorrt="off", progress=False, log=lines.append)
    assert result.built == [] and result.reused == reusable_files(out)
    assert result.manifest.precisions == precisions and result.directory == out
    assert lines[-1].endswith(f"(built 0, reused {len(result.reused)}; manifest unchanged)")
    assert (out / "manifest.json").read_bytes() == before


@pytest.mark.parametrize("change", [
    {"calib_size": 8}, {"calib": "random"}, {"max_batch": 4}, {"max_prompt_tokens": 16}, {"opset": 17},
    {"int8_keep_blocks": 0}, {"check_samples": 2}, {"resolution": 64}, {"text_embedder": False},
    {"workspace_gib": 2.0},  # only the recorded trtexec commands change: still not a no-op
    {"tensorrt": "auto"},  # the recorded reason for skipping plans changes
    {"tensorrt": "on"}, {"force": True},
], ids=lambda change: "-".join(f"{k}={v}" for k, v in change.items()))
def test_a_changed_option_takes_the_full_build(engines, change):
    out, precisions = engines
    assert up_to_date("demo", out, options(precisions), log=lambda _: None) is not None
    assert up_to_date("demo", out, options(precisions, **change), log=lambda _: None) is None


def test_other_precision_sets_take_the_full_build(engines):
    out, precisions = engines
    missing = next(p for p in PRECISIONS if p not in precisions) if len(precisions) < len(PRECISIONS) else None
    others = [precisions[:1], precisions[::-1]] + ([sorted({*precisions, missing}, key=PRECISIONS.index)] if missing else [])
    for wanted in others:
        if wanted != precisions:
            assert up_to_date("demo", out, options(wanted), log=lambda _: None) is None, wanted


def test_a_changed_or_missing_file_takes_the_full_build(engines, tmp_path):
    out, precisions = engines
    missing = tmp_path / "missing"
    shutil.copytree(out, missing)
    name = reusable_files(out)[-1]
    data = bytearray((out / name).read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    (out / name).write_bytes(bytes(data))
    assert up_to_date("demo", out, options(precisions), log=lambda _: None) is None
    (missing / "tokenizer.json").unlink()
    assert up_to_date("demo", missing, options(precisions), log=lambda _: None) is None


def test_another_checkpoint_or_no_manifest_takes_the_full_build(engines, tmp_path):
    out, precisions = engines
    copy = shutil.copytree(demo_checkpoint_dir(), tmp_path / "demo_copy")  # same hash, other source
    assert up_to_date(str(copy), out, options(precisions), log=lambda _: None) is None
    assert up_to_date("owner/model", out, options(precisions), log=lambda _: None) is None  # a hub id: never fetched
    assert up_to_date("demo", tmp_path / "nothing_here", options(precisions), log=lambda _: None) is None


def test_installed_tensorrt_takes_the_full_build(engines, monkeypatch):
    out, precisions = engines
    monkeypatch.setattr(uptodate, "_tensorrt_installed", lambda: True)
    assert up_to_date("demo", out, options(precisions), log=lambda _: None) is not None  # --tensorrt off
    assert up_to_date("demo", out, options(precisions, tensorrt="auto"), log=lambda _: None) is None


@pytest.mark.parametrize("leftover", [".engines.build-{pid}-0a1b2c3d", ".engines.old-{pid}-0a1b2c3d",
                                      "engines/.build-{pid}-0a1b2c3d"])
def test_leftovers_of_another_build_take_the_full_build(engines, leftover):
    out, precisions = engines
    (out.parent / leftover.format(pid=99999999)).mkdir()
    assert up_to_date("demo", out, options(precisions), log=lambda _: None) is None


def test_a_running_build_is_reported_not_raced(engines):
    out, precisions = engines
    with BuildLock(out):
        with pytest.raises(BuildLockedError, match="another build into .*engines is running"):
            up_to_date("demo", out, options(precisions), log=lambda _: None)
    assert up_to_date("demo", out, options(precisions), log=lambda _: None) is not None


def test_a_build_with_the_cpu_set_is_a_no_op_the_second_time(engines):
    """The default precisions include int8-dynamic, which never gets TensorRT plans: the no-op check
    must expect the build's trtexec summary without it (it did not, so every default rebuild ran the
    full build)."""
    out, _ = engines
    wanted = ["fp32", "fp16", "int8-dynamic"]
    pipeline.build_engines("demo", out, wanted, tensorrt="off", progress=False, log=lambda _: None)
    result = up_to_date("demo", out, options(wanted), log=lambda _: None)
    assert result is not None and result.built == [] and "dit.int8-dynamic.onnx" in result.reused

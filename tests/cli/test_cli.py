"""The ``genmask`` command line: segment (text and --json), info, build delegation, help, errors.

Subprocess tests run ``python -m genmask_sdk.cli.main`` as a user would; the rest call ``main(argv)``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from genmask_sdk.cli.main import main
from genmask_sdk.data.examples import EXAMPLE_PROMPT, example_image_path
from genmask_sdk.metrics import decode_rle


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genmask_sdk.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_help_lists_the_commands():
    done = _run("--help")
    assert done.returncode == 0
    for command in ("segment", "build", "info"):
        assert command in done.stdout
    assert "--engines" in _run("segment", "--help").stdout


def test_segment_json_through_a_subprocess(tiny_engines, tmp_path):
    overlay = tmp_path / "overlay.png"
    done = _run("segment", example_image_path(), EXAMPLE_PROMPT, "the orange star", "--engines", tiny_engines[0],
                "--backend", "onnxruntime", "--device", "cpu", "--out", overlay, "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["backend"]["backend"] == "onnxruntime" and payload["size"] == [192, 256]
    assert [r["prompt"] for r in payload["results"]] == [EXAMPLE_PROMPT, "the orange star"]
    for result in payload["results"]:
        mask = decode_rle(result["rle"])
        assert mask.shape == (192, 256) and int(mask.sum()) == result["area"]
        assert 0.0 <= result["score"] <= 1.0 and result["timings"]["total"] > 0
    assert Image.open(overlay).size == (256, 192)
    assert "Traceback" not in done.stderr


def test_info_through_a_subprocess(tiny_engines):
    done = _run("info", tiny_engines[0])
    assert done.returncode == 0, done.stderr
    for text in ("resolution 32", "minilm", "dit.fp32.onnx", "dit.fp16.onnx", "fp16 (onnx)",
                 "verification: sha256 OK"):
        assert text in done.stdout


def test_segment_text_output(tiny_engines, capsys):
    assert main(["segment", str(example_image_path()), EXAMPLE_PROMPT, "--engines", str(tiny_engines[0]),
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime fp32 on cpu" in out and f"{EXAMPLE_PROMPT!r}: area" in out and "score" in out
    assert "dit" in out and "total" in out


def test_info_reports_a_failed_verification(tiny_engines, tmp_path, capsys):
    engines = tmp_path / "engines"
    shutil.copytree(tiny_engines[0], engines)
    (engines / "vae_encoder.fp32.onnx").write_bytes(b"x")
    assert main(["info", str(engines)]) == 2
    captured = capsys.readouterr()
    assert "verification: FAILED" in captured.out and "checksum" in captured.err
    assert main(["info", str(engines), "--json", "--no-verify"]) == 0
    assert json.loads(capsys.readouterr().out)["verification"] == "skipped"


def test_user_errors_exit_2_with_one_line_and_no_traceback(tmp_path, capsys):
    assert main(["segment", str(example_image_path()), "x", "--engines", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "genmask segment: error:" in err and "does not exist" in err and len(err.strip().splitlines()) == 1
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "manifest.json does not exist" in err and len(err.strip().splitlines()) == 1


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["segment", "image.png"])  # no prompt
    assert stop.value.code == 2
    assert main(["segment", "image.png", "x", "--precision", "fp16"]) == 2
    assert "need --engines" in capsys.readouterr().err


def test_build_delegates_every_argument(monkeypatch):
    seen = []
    fake = types.ModuleType("genmask_sdk.cli.build")
    fake.main = lambda argv, prog: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "genmask_sdk.cli.build", fake)
    assert main(["build", "--checkpoint", "demo", "--out", "engines/demo", "--help"]) == 0
    assert seen == [["--checkpoint", "demo", "--out", "engines/demo", "--help"]]


def test_build_reaches_the_exporter_parser(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["build", "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "--precisions" in out and out.startswith("usage: genmask build")


@pytest.mark.parametrize(("out", "match"), [
    ("DIR", "is a directory; pass a file name"),
    ("DIR/missing/o.png", "does not exist; create it first"),
    ("DIR/o.xyz", "names no image format"),
    ("DIR/o", "names no image format"),
])  # fmt: skip
def test_bad_out_paths_fail_before_any_work(tiny_engines, tmp_path, capsys, out, match):
    out = out.replace("DIR", str(tmp_path))
    code = main(["segment", str(example_image_path()), EXAMPLE_PROMPT, "--engines", str(tiny_engines[0]),
                 "--device", "cpu", "--out", out])
    err = capsys.readouterr().err
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1


def test_out_format_follows_the_extension(tiny_engines, tmp_path):
    for name, magic in (("o.jpg", b"\xff\xd8"), ("o.png", b"\x89PNG")):
        assert main(["segment", str(example_image_path()), EXAMPLE_PROMPT, "--engines", str(tiny_engines[0]),
                     "--device", "cpu", "--out", str(tmp_path / name)]) == 0
        assert (tmp_path / name).read_bytes()[:2] == magic[:2]


def test_info_into_a_closed_pipe_is_quiet(tiny_engines):
    """`genmask info ... --json | head`: the reader is gone before we write (stdout's pipe closed)."""
    child = subprocess.Popen([sys.executable, "-m", "genmask_sdk.cli.main", "info", str(tiny_engines[0]), "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()
    _, err = child.communicate(timeout=120)
    assert child.returncode == 0 and b"BrokenPipe" not in err and b"Traceback" not in err, err.decode()


def test_build_without_the_exporter_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "genmask_sdk.cli.build", None)  # import raises ImportError
    assert main(["build", "--help"]) == 2
    assert "no engine builder" in capsys.readouterr().err


def test_overlay_of_several_prompts_in_process(tiny_engines, tmp_path, capsys):
    out = tmp_path / "o.png"
    assert main(["segment", str(example_image_path()), "a", "b", "--engines", str(tiny_engines[0]),
                 "--device", "cpu", "--out", str(out)]) == 0
    assert "overlay written" in capsys.readouterr().out
    assert np.asarray(Image.open(out)).shape == (192, 256, 3)


def test_an_empty_mask_is_reported_as_nothing_found(tiny_engines, monkeypatch, capsys):
    from genmask_sdk.families.genmask.segmenter import Segmenter

    real = Segmenter.predict

    def emptied(self, *args, **kwargs):  # the model found nothing: every mask empty, score 0
        import dataclasses

        return [dataclasses.replace(r, mask=np.zeros_like(r.mask), score=0.0) for r in real(self, *args, **kwargs)]

    monkeypatch.setattr(Segmenter, "predict", emptied)
    image = str(example_image_path())
    assert main(["segment", image, "the cup", "--engines", str(tiny_engines[0])]) == 0
    assert "'the cup': nothing found (empty mask)" in capsys.readouterr().out
    assert main(["segment", image, "the cup", "--engines", str(tiny_engines[0]), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["found"] is False and result["area"] == 0 and result["score"] == 0.0

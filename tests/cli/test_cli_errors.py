"""One-line errors (exit 2) where the probe of issue 34 found tracebacks or misleading messages:
unwritable output, a manifest nested past Python's recursion limit, Ctrl-C during a build, and the
image on standard input (``-``)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from genmask_sdk.cli.main import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines_0.2.0"


def _genmask(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genmask_sdk.cli.main", *args], text=True, timeout=300, **kwargs)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_output_to_a_full_device_is_one_line(extra):
    with open("/dev/full", "w") as full:
        done = _genmask("info", str(FIXTURES / "gen2seg_tiny"), *extra, stdout=full, stderr=subprocess.PIPE)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "could not write the output (No space left on device)" in done.stderr


def test_a_manifest_nested_too_deeply_is_one_line(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nests too deeply" in err


def test_ctrl_c_during_a_build_is_one_line_and_exit_130(monkeypatch, tmp_path, capsys):
    from genmask_sdk.cli import build

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "_up_to_date", interrupted)
    assert build.main(["--checkpoint", "demo", "--out", str(tmp_path / "engines")]) == 130
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "interrupted; nothing was replaced" in err


def test_the_image_can_come_from_standard_input(tmp_path):
    from genmask_sdk.data.examples import example_image_path, example_point

    x, y = example_point()
    with open(example_image_path(), "rb") as image:
        piped = _genmask("segment", "-", "--engines", str(FIXTURES / "gen2seg_tiny"), "--point", f"{x},{y}",
                         "--json", stdin=image, capture_output=True)
    named = _genmask("segment", str(example_image_path()), "--engines", str(FIXTURES / "gen2seg_tiny"), "--point",
                     f"{x},{y}", "--json", capture_output=True)
    assert piped.returncode == 0 == named.returncode, piped.stderr
    assert [r["rle"] for r in json.loads(piped.stdout)["results"]] == [r["rle"] for r in json.loads(named.stdout)["results"]]
    empty = _genmask("segment", "-", "--engines", str(FIXTURES / "gen2seg_tiny"), "--point", "1,1",
                     stdin=subprocess.DEVNULL, capture_output=True)
    assert empty.returncode == 2 and "standard input is empty" in empty.stderr and empty.stderr.count("\n") == 1

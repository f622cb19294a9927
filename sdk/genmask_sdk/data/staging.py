"""Directories written as a whole: staged beside their target, renamed into place at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def staging_dirs(out: Path) -> Iterator[tuple[Path, Path]]:
    """Two hidden directories beside ``out`` (stage, cache), removed whatever happens."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    cache = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".cache", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)  # mkdtemp makes 0700; the renamed result gets normal modes
    try:
        yield stage, cache
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)


def swap_in(stage: Path, out: Path) -> None:
    """Move ``stage`` to ``out``; a previous ``out`` is moved aside first and restored on failure."""
    if not out.exists():
        os.replace(stage, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, old / "previous")
    try:
        os.replace(stage, out)
    except BaseException:
        os.replace(old / "previous", out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)

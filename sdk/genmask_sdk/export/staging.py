"""All-or-nothing builds: files are written to a hidden staging folder inside the engines
directory and moved into place (``os.replace``, atomic per file, same file system) only when every
artefact has been exported and checked; the manifest is written last.

If a build stops early (error, Ctrl-C), the staging folder is deleted and the engines directory
is left as it was: the previous manifest, if any, still describes the previous files. A build
killed outright (SIGKILL, power loss) leaves a ``.build-<pid>-*`` folder, which the next build
removes. The previous manifest is deleted just before the first file is moved, so no manifest
ever claims a file that is being replaced.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterable

from .manifest import MANIFEST_NAME, write_manifest

PREFIX = ".build-"


class Staging:
    """A private folder ``<out>/.build-<pid>-<random>``; use as a context manager (removed on exit)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.root = self.out / f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.root.mkdir()

    def path(self, name: str) -> Path:
        return self.root / name

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def remove_stale_staging(out: Path, log: Callable[[str], None]) -> None:
    """Delete staging folders of builds whose process no longer runs."""
    if not Path(out).is_dir():
        return
    for folder in Path(out).glob(f"{PREFIX}*"):
        pid = folder.name[len(PREFIX):].split("-")[0]
        if folder.is_dir() and not (pid.isdigit() and _alive(int(pid))):
            log(f"removing {folder.name}: left by an interrupted build")
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def commit(staging: Staging, files: Iterable[str], manifest: dict, stale: Iterable[str],
           log: Callable[[str], None]) -> Path:
    """Move staged ``files`` into the engines directory, delete ``stale`` ones (files of the previous
    manifest that this build no longer lists), then write the manifest. Returns its path."""
    out = staging.out
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    mode = 0o666 & ~_umask()
    for name in files:
        os.chmod(staging.path(name), mode)  # temp files are created 0600
        os.replace(staging.path(name), out / name)
    for name in stale:
        if (out / name).is_file():
            log(f"removing {name}: listed by the previous manifest, not part of this build")
            (out / name).unlink()
    path = write_manifest(out, manifest)
    os.chmod(path, mode)
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current

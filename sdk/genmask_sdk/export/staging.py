"""All-or-nothing builds, one at a time.

A build writes into a hidden staging folder beside the engines directory
(``<parent>/.<name>.build-<pid>-<random>``). When every artefact has been exported and checked, the
staging folder is completed into the whole new engines directory -- reused files hard-linked in
(copied where links are not possible), other files of the old directory (caches) carried over, the
manifest written last -- and then swapped with the old directory in one step (``renameat2``
``RENAME_EXCHANGE`` on Linux; elsewhere two renames, repaired by the next build if interrupted
between them). Until that swap the previous build is untouched and usable; after it the new one
is complete. A build that stops early (error, Ctrl-C) deletes its staging folder; one killed
outright leaves it, and the next build removes it.

``BuildLock`` makes a second build into the same directory fail at once with a clear message
instead of racing the first (``fcntl.flock`` on ``<parent>/.<name>.lock``; POSIX only).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from genmask_sdk.errors import ConfigError, GenMaskError
from genmask_sdk.export.manifest import MANIFEST_NAME, write_manifest


class BuildLockedError(GenMaskError, RuntimeError):
    """Another build into the same engines directory is running."""


def real_out(out: str | os.PathLike) -> Path:
    """The engines directory ``out`` names, symbolic links followed (an ``--out`` through a link builds
    the link's target, and the lock, staging and swap all happen beside the real directory, so two
    builds of one directory by two names exclude each other)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(out))))


def staging_prefix(out: Path) -> str:
    return f".{out.name}.build-"


def old_prefix(out: Path) -> str:
    return f".{out.name}.old-"


def check_out(out: Path) -> None:
    """Raise ConfigError unless ``out`` is (or can be made) a writable directory."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a directory for the engines (it is created if missing).")
    ancestor = out
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"--out {out} is under {ancestor}, which is a file; pass a directory path.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the folder for --out {out}: {exc.strerror or exc}.") from None
    try:  # a real write: permission bits say little for root, nothing about read-only mounts or /proc
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as exc:
        raise ConfigError(f"--out {out} is not writable ({exc.strerror or exc}); choose a folder you can "
                          "write to.") from None


class BuildLock:
    """Exclusive lock on builds into ``out``; a context manager. Raises BuildLockedError when held."""

    def __init__(self, out: Path) -> None:
        out = real_out(out)
        self.path = out.parent / f".{out.name}.lock"
        self._fd: int | None = None

    def __enter__(self) -> "BuildLock":
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here; builds are not serialised
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot create the build lock {self.path}: {exc.strerror or exc}.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise BuildLockedError(
                f"another build into {self.path.parent / self.path.name[1:-5]} is running (pid {holder}); wait for it "
                "to finish, or build into another --out."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None


class Staging:
    """A private folder ``<parent>/.<out name>.build-<pid>-<random>``; a context manager (removed on exit
    unless it has become the engines directory)."""

    def __init__(self, out: Path) -> None:
        self.out = real_out(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.root = self.out.parent / f"{staging_prefix(self.out)}{os.getpid()}-{secrets.token_hex(4)}"
        self.root.mkdir()

    def path(self, name: str) -> Path:
        return self.root / name

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def remove_stale_staging(out: Path, log: Callable[[str], None]) -> None:
    """Repair what an interrupted build left: put back an engines directory caught between the two
    renames of a non-atomic swap, and delete staging / old folders of builds that no longer run."""
    out = real_out(out)
    parent = out.parent
    if not parent.is_dir():
        return
    olds = sorted(parent.glob(f"{old_prefix(out)}*"))
    if not out.exists() and olds:
        log(f"restoring {out.name} from {olds[-1].name}: a build was interrupted while swapping directories")
        os.rename(olds[-1], out)
    for folder in build_leftovers(out):
        pid = folder.name.rsplit("-", 2)[-2] if folder.name.count("-") >= 2 else ""
        if folder.is_dir() and not (pid.isdigit() and _alive(int(pid))):
            log(f"removing {folder.name}: left by an interrupted build")
            shutil.rmtree(folder, ignore_errors=True)


def build_leftovers(out: Path) -> list[Path]:
    """What builds into ``out`` leave while they run or when killed: staging folders, old directories
    set aside by a two-rename swap, staging folders inside ``out`` (older versions)."""
    out = real_out(out)
    parent = out.parent
    if not parent.is_dir():
        return []
    return [*parent.glob(f"{staging_prefix(out)}*"), *sorted(parent.glob(f"{old_prefix(out)}*")),
            *out.glob(".build-*")]


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


def commit(staging: Staging, files: Iterable[str], manifest: dict, old_files: Iterable[str],
           log: Callable[[str], None]) -> Path:
    """Complete the staging folder into the new engines directory and swap it in; returns the manifest path.

    ``files``: what this build wrote into staging; every other file the new manifest lists is reused
    from the old directory. ``old_files``: what the previous manifest listed (those the new one drops
    are not carried over). Anything else in the old directory (runtime caches) is carried over.
    """
    out, new = staging.out, staging.root
    mode = 0o666 & ~_umask()
    staged = set(files)
    for entry in list(new.iterdir()):  # intermediates of this build (e.g. an int8 source graph) are not kept
        if entry.name not in staged:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for name in staged:
        os.chmod(new / name, mode)  # temp files are created 0600
    listed = listed_files(manifest)
    old_listed = set(old_files)
    for name in sorted(old_listed - listed):
        log(f"removing {name}: listed by the previous manifest, not part of this build")
    if out.is_dir():
        for entry in sorted(out.iterdir()):
            name = entry.name
            if name in staged or name == MANIFEST_NAME or name.startswith(".build-"):
                continue
            if name in listed or name not in old_listed:  # reused artefact, or a cache / user file
                _link_or_copy(entry, new / name)
    missing = sorted(n for n in listed if not (new / n).exists())
    if missing:
        raise ConfigError(f"the new manifest lists {missing}, which neither this build nor the previous one has.")
    path = write_manifest(new, manifest)
    os.chmod(path, mode)
    os.chmod(new, 0o777 & ~_umask())
    old = _swap(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out / MANIFEST_NAME


def listed_files(manifest: dict) -> set[str]:
    """Every file a manifest's artifacts name (their external data included)."""
    files = set()
    for record in manifest.get("artifacts", []):
        files.add(record["file"])
        files.update(e["file"] for e in record.get("external_data", []))
    return files


def _link_or_copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, copy_function=_link_file, symlinks=True)
    else:
        _link_file(source, target)


def _link_file(source, target) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _swap(new: Path, out: Path) -> Path | None:
    """Put ``new`` at ``out``; return where the old directory went (to delete), or None if there was none."""
    if not out.exists():
        os.rename(new, out)
        return None
    if _exchange(new, out):
        return new  # now holds the old directory
    old = out.parent / f"{old_prefix(out)}{os.getpid()}-{secrets.token_hex(4)}"
    os.rename(out, old)
    os.rename(new, out)
    return old


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current

"""What every family's segmenter shares: one lock, a cached image, ``close()`` / context manager,
the closed-state check, the wrong-family refusal and the version block of ``describe()``.

A family's segmenter subclasses ``SegmenterLifecycle``, sets ``FAMILY`` (a ``registry`` name), calls
``_start_lifecycle()`` in ``__init__`` and implements ``_release()`` (free engines / models). The
public verbs (``set_image`` / ``predict`` / ``describe``) stay the family's own. Torch-free.
"""

from __future__ import annotations

import os
import platform
import sys
import threading
from pathlib import Path
from typing import Any

from genmask_sdk import __version__
from genmask_sdk.errors import ArtifactMismatchError, InputTypeError, InvalidStateError
from genmask_sdk.families.registry import family_of, wrong_family_message


class SegmenterLifecycle:
    """Lock, image cache and closing, shared by ``Segmenter`` and ``InstanceSegmenter``."""

    #: the registry name of the family this segmenter serves ("genmask" | "gen2seg")
    FAMILY: str = ""

    def _start_lifecycle(self) -> None:
        self._lock = threading.RLock()
        self._image: Any = None
        self._closed = False

    # ---------------------------------------------------------------------------------- image
    def reset_image(self) -> None:
        """Forget the image set by ``set_image`` (frees what was computed from it)."""
        with self._lock:
            self._image = None

    @property
    def is_image_set(self) -> bool:
        return self._image is not None

    # ------------------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Release the engines (or model) and the cached image; later calls raise InvalidStateError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._image = None
            self._release()

    def _release(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            name = type(self).__name__
            raise InvalidStateError(f"this {name} was closed; create a new one ({name}.from_engines / from_pretrained).")

    @staticmethod
    def _base_versions() -> dict[str, Any]:
        """genmask_sdk, python and torch (reported when already loaded, never imported for it)."""
        torch = sys.modules.get("torch")
        return {"genmask_sdk": __version__, "torch": torch.__version__ if torch else None,
                "python": platform.python_version()}

    @classmethod
    def _engines_path(cls, directory: Any) -> Path:
        """``directory`` as a Path, or InputTypeError (None, bytes, numbers...: say what to pass)."""
        if isinstance(directory, (bytes, bytearray)) or not isinstance(directory, (str, os.PathLike)):
            raise InputTypeError(f"{cls.__name__}.from_engines needs the engines directory as a str or Path, got "
                                 f"{type(directory).__name__}; pass the folder that holds manifest.json.")
        path = os.fspath(directory)
        if isinstance(path, bytes):
            raise InputTypeError(f"{cls.__name__}.from_engines needs a str or Path, not a bytes path; decode it first.")
        return Path(path)

    @classmethod
    def _refuse_other_family(cls, name_or_path: Any) -> None:
        """Another family's checkpoint or engines directory: say which class opens it, before loading."""
        found = family_of(name_or_path)
        if found is not None and found != cls.FAMILY:
            raise ArtifactMismatchError(wrong_family_message(name_or_path, found, cls.FAMILY))

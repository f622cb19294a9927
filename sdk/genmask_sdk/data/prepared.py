"""Prepared training data: one 🤗 ``datasets`` Arrow dataset per preparation, memory-mapped.

A prepared directory (``write_prepared`` makes it, ``open_prepared`` reads it) holds::

    OUT/data-00000-of-000NN.arrow   the rows, in shards of at most ``max_shard_size``
    OUT/dataset_info.json           🤗 datasets' schema (``datasets.load_from_disk(OUT)`` works too)
    OUT/state.json                  🤗 datasets' shard list
    OUT/prepare_info.json           {"version", "description", "num_samples", "counts", "created_by"}

One row per sample, columns (see ``FEATURES``)::

    id           str    unique within the set, e.g. "refcoco/train/ref123/sent456"
    image        Image  PNG bytes of the uint8 (H, W, 3) RGB image (lossless)
    instruction  str    the referring sentence / class name / caption, non-empty
    task         str    "seg" or "gen"
    source       str    "refcoco", "refcoco+", "refcocog", "coco-stuff", "ade20k", "captions", "scenes"
    mask         {"size": [H, W], "counts": str} COCO compressed RLE of the (H, W) bool mask
                 (column-major runs, as ``pycocotools.mask``); null for "gen" rows

Writing is atomic: rows are staged in hidden directories beside ``OUT`` and renamed into place at
the end, so an error (bad sample, full disk, Ctrl-C) leaves ``OUT`` as it was.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import chain
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from genmask_sdk.runtime.text_checks import check_targets
from genmask_sdk import __version__
from genmask_sdk.errors import (
    ArtifactMismatchError,
    ArtifactNotFoundError,
    BackendUnavailableError,
    ConfigError,
    GenMaskError,
    InvalidInputError,
    InvalidSampleError,
    one_line,
)
from genmask_sdk.io import atomic_write_text
from genmask_sdk.metrics.rle import decode_rle, encode_rle
from genmask_sdk.data.staging import staging_dirs, swap_in

__all__ = [
    "INFO_FILE",
    "PREPARED_VERSION",
    "SOURCES",
    "TASKS",
    "InvalidSampleError",
    "PreparedDataset",
    "PreparedSample",
    "check_sample",
    "decode_row",
    "encode_row",
    "features",
    "open_prepared",
    "write_prepared",
]

PREPARED_VERSION: int = 1
TASKS = ("seg", "gen")
SOURCES = ("refcoco", "refcoco+", "refcocog", "coco-stuff", "ade20k", "captions", "scenes")
INFO_FILE = "prepare_info.json"
PNG_COMPRESS_LEVEL = 1  # lossless either way; level 1 encodes ~3x faster than 6 for ~10 % more bytes
PREPARE_HINT = "python -m genmask_sdk.families.genmask.train.prepare --source ... --out"
INSTALL_HINT = "pip install 'genmask-sdk[train]' (or pip install 'datasets>=3.0')"


@dataclass(frozen=True, eq=False)
class PreparedSample:
    """One training sample (compare fields explicitly: arrays make ``==`` meaningless).

    Attributes:
        id: unique within the set, e.g. ``"refcoco/train/ref123/sent456"``.
        image: uint8 ``(H, W, 3)`` RGB, row ``y`` from the top, column ``x`` from the left.
        instruction: non-empty text the model is conditioned on (referring sentence, class name
            or caption).
        task: ``"seg"`` (segmentation: ``mask`` is the target) or ``"gen"`` (generation).
        source: where it came from, one of ``SOURCES`` for the built-in converters.
        mask: bool ``(H, W)``, same pixel grid as ``image``, for ``"seg"``; ``None`` for ``"gen"``.
    """

    id: str
    image: np.ndarray
    instruction: str
    task: str
    source: str
    mask: np.ndarray | None = None


def _sample_error(sample_id: Any, what: str, fix: str) -> InvalidSampleError:
    return InvalidSampleError(f"sample {sample_id!r}: {what}. {fix}")


def _check_image(sample: PreparedSample) -> None:
    image = sample.image
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = f"{image.dtype} array" if isinstance(image, np.ndarray) else type(image).__name__
        raise _sample_error(sample.id, f"image must be a uint8 numpy array, got a {kind}",
                            "Load it with numpy.asarray(PIL.Image.open(path).convert('RGB')).")
    if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise _sample_error(sample.id, f"image must have shape (H, W, 3) with H, W >= 1, got "
                            f"{image.shape}", "Convert grey or RGBA images to RGB first.")


def _check_mask(sample: PreparedSample) -> None:
    mask, height, width = sample.mask, sample.image.shape[0], sample.image.shape[1]
    if sample.task == "gen":
        if mask is not None:
            raise _sample_error(sample.id, "a 'gen' sample has a mask",
                                "Use task='seg' for masks, or mask=None for generation samples.")
        return
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        kind = f"{mask.dtype} array" if isinstance(mask, np.ndarray) else type(mask).__name__
        raise _sample_error(sample.id, f"a 'seg' sample needs a bool (H, W) mask, got a {kind}",
                            "Binarise label maps explicitly, e.g. labels == class_id.")
    if mask.shape != (height, width):
        raise _sample_error(sample.id, f"mask/image size mismatch: mask is {mask.shape[:2]} "
                            f"(H, W) but the image is ({height}, {width})",
                            "The mask must be on the image's pixel grid; check that the label "
                            "file belongs to this image (and is not resized or transposed).")


def check_sample(sample: PreparedSample) -> None:
    """Raise InvalidSampleError, naming ``sample.id``, unless the sample is usable as documented
    on :class:`PreparedSample` (types, shapes, non-empty instruction, known task)."""
    if not isinstance(sample, PreparedSample):
        raise InvalidSampleError(f"expected PreparedSample objects, got {type(sample).__name__}.")
    if not isinstance(sample.id, str) or not sample.id:
        raise _sample_error(sample.id, "id must be a non-empty str", "Give every sample a unique id.")
    if sample.task not in TASKS:
        raise _sample_error(sample.id, f"task must be one of {TASKS}, got {sample.task!r}",
                            "Use 'seg' for mask targets and 'gen' for captions.")
    if not isinstance(sample.source, str) or not sample.source:
        raise _sample_error(sample.id, "source must be a non-empty str", f"Use one of {SOURCES}.")
    if not isinstance(sample.instruction, str) or not sample.instruction.strip():
        raise _sample_error(sample.id, f"empty instruction {sample.instruction!r} (source "
                            f"{sample.source!r})", "Every sample needs the text the model is "
                            "conditioned on; fix the annotation or leave the sample out.")
    try:
        check_targets([sample.instruction])  # the limits inference applies: no sample is stored that it refuses
    except GenMaskError as exc:
        raise _sample_error(sample.id, f"instruction not accepted at inference ({one_line(exc)})",
                            "Fix the annotation or leave the sample out.") from None
    _check_image(sample)
    _check_mask(sample)


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(image).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def encode_row(sample: PreparedSample, png: bytes | None = None) -> dict[str, Any]:
    """The Arrow row of a (checked) sample; ``png`` reuses already-encoded image bytes."""
    return {
        "id": sample.id,
        "image": {"bytes": png if png is not None else _png_bytes(sample.image), "path": None},
        "instruction": sample.instruction,
        "task": sample.task,
        "source": sample.source,
        "mask": None if sample.mask is None else encode_rle(sample.mask),
    }


def _rgb_array(image: Any) -> np.ndarray:
    if isinstance(image, dict):  # undecoded Image feature: {"bytes": ..., "path": ...}
        image = PILImage.open(io.BytesIO(image["bytes"]))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode_row(row: dict[str, Any]) -> PreparedSample:
    """A :class:`PreparedSample` from a row of ``PreparedDataset.hf`` (image decoded or not)."""
    mask = None if row["mask"] is None else decode_rle(row["mask"])
    return PreparedSample(id=row["id"], image=_rgb_array(row["image"]), instruction=row["instruction"],
                          task=row["task"], source=row["source"], mask=mask)


def _datasets():
    """The ``datasets`` module, or BackendUnavailableError saying how to install it."""
    try:
        import datasets
    except ImportError as exc:
        raise BackendUnavailableError(f"prepared datasets need the 'datasets' package: {INSTALL_HINT}.") from exc
    return datasets


def features():
    """The ``datasets.Features`` of a prepared set (the columns in the module docstring)."""
    ds = _datasets()
    rle = {"size": ds.Sequence(ds.Value("int32"), length=2), "counts": ds.Value("string")}
    return ds.Features({"id": ds.Value("string"), "image": ds.Image(), "instruction": ds.Value("string"),
                        "task": ds.Value("string"), "source": ds.Value("string"), "mask": rle})


class _Tally:
    """Counts per task and source, and the ids seen (duplicates are an error)."""

    def __init__(self):
        self.tasks: Counter = Counter()
        self.sources: Counter = Counter()
        self.ids: set[str] = set()

    def add(self, sample: PreparedSample) -> None:
        if sample.id in self.ids:
            raise _sample_error(sample.id, "duplicate id", "Ids must be unique within a prepared set; "
                                "do not feed the same converter output twice.")
        self.ids.add(sample.id)
        self.tasks[sample.task] += 1
        self.sources[sample.source] += 1


def _rows(samples: Iterable[PreparedSample], tally: _Tally, progress: bool) -> Iterator[dict]:
    """Check, count and encode every sample; a run of samples sharing one image array (all the
    sentences of one COCO image) encodes it once."""
    from tqdm.auto import tqdm

    last_image, last_png = None, None
    for sample in tqdm(samples, desc="preparing", unit="sample", disable=not progress):
        check_sample(sample)
        tally.add(sample)
        if sample.image is not last_image:
            last_image, last_png = sample.image, _png_bytes(sample.image)
        yield encode_row(sample, last_png)


@contextlib.contextmanager
def _datasets_bars(enabled: bool) -> Iterator[None]:
    """🤗 datasets' own progress bars on or off for the block, restored afterwards."""
    ds = _datasets()
    was_disabled = ds.are_progress_bars_disabled()
    (ds.enable_progress_bars if enabled else ds.disable_progress_bars)()
    try:
        yield
    finally:
        (ds.disable_progress_bars if was_disabled else ds.enable_progress_bars)()


_PENDING_ROWS: dict[str, Iterator[dict]] = {}


def _pending_rows(token: str) -> Iterator[dict]:
    """The generator handed to ``Dataset.from_generator``: the rows registered under ``token``.

    datasets fingerprints a generator by pickling the function and its arguments; a module-level
    function and a token string pickle (by reference) in every datasets version, a live
    generator of samples would not.
    """
    yield from _PENDING_ROWS.pop(token)


def _build(rows: Iterator[dict], cache: Path):
    """``Dataset.from_generator`` over ``rows`` with its cache in ``cache``; a sample error raised
    inside the generator comes out as itself, not wrapped in DatasetGenerationError."""
    ds = _datasets()
    from datasets.exceptions import DatasetGenerationError

    token = uuid.uuid4().hex
    _PENDING_ROWS[token] = rows
    try:
        with _datasets_bars(False):
            return ds.Dataset.from_generator(_pending_rows, features=features(), cache_dir=str(cache),
                                             gen_kwargs={"token": token})
    except DatasetGenerationError as exc:
        if exc.__cause__ is None:
            raise
        failure = exc.__cause__
    finally:
        _PENDING_ROWS.pop(token, None)
    raise failure  # outside the handler: the sample error with its own traceback, unwrapped


def _check_target(out: Path) -> None:
    """Refuse, before any work, an ``out`` that is a file or a non-empty non-prepared directory."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory path for the prepared dataset.")
    if out.is_dir() and any(out.iterdir()) and not (out / INFO_FILE).is_file():
        raise ConfigError(f"{out} exists, is not empty and is not a prepared dataset (no {INFO_FILE}); "
                          f"refusing to replace it. Choose another --out or remove it.")


def _check_shard_size(max_shard_size: str | int) -> None:
    _datasets()
    from datasets.utils.py_utils import convert_file_size_to_int

    try:
        convert_file_size_to_int(max_shard_size)
    except (ValueError, TypeError, AttributeError):
        raise ConfigError(f"max_shard_size must be bytes or a size like '500MB' or '2GB', got "
                          f"{max_shard_size!r}.") from None


def _info(description: str, tally: _Tally) -> dict[str, Any]:
    return {
        "version": PREPARED_VERSION,
        "description": description,
        "num_samples": len(tally.ids),
        "counts": {"task": dict(sorted(tally.tasks.items())), "source": dict(sorted(tally.sources.items()))},
        "created_by": f"genmask-sdk {__version__} (genmask_sdk.data.prepared)",
    }


def write_prepared(samples: Iterable[PreparedSample], out: Path, *, description: str,
                   max_shard_size: str = "500MB", progress: bool = True) -> Path:
    """Check and write ``samples`` as a prepared dataset at ``out`` (layout: module docstring).

    Args:
        samples: any iterable of :class:`PreparedSample` (the converters are generators; nothing
            is held in memory beyond one sample).
        out: target directory; it must not exist, be empty, or be a previous prepared set (which
            is replaced only once the new one is complete).
        description: free text stored in ``prepare_info.json`` (e.g. the command line).
        max_shard_size: largest Arrow shard, bytes or e.g. ``"500MB"``.
        progress: tqdm bars while preparing and saving.

    Returns:
        ``out``.

    Raises:
        InvalidSampleError: a sample is unusable; the message names its id and what is wrong.
        InvalidInputError: ``samples`` is empty.
        ConfigError: ``out`` is a file or an unrelated non-empty directory; bad ``max_shard_size``.

    On any error ``out`` is left exactly as it was. Peak disk use is about twice the set's size
    (the Arrow cache, then the shards), both beside ``out``.
    """
    out = Path(out)
    _check_target(out)
    _check_shard_size(max_shard_size)
    samples = iter(samples)
    first = next(samples, None)
    if first is None:
        raise InvalidInputError("no samples to write: the converter produced nothing. Check the "
                                "dataset root, split and filters (e.g. --min-pixels).")
    tally = _Tally()
    with staging_dirs(out) as (stage, cache):
        hf = _build(_rows(chain([first], samples), tally, progress), cache)
        with _datasets_bars(progress):
            hf.save_to_disk(str(stage), max_shard_size=max_shard_size)
        del hf
        atomic_write_text(stage / INFO_FILE, json.dumps(_info(description, tally), indent=2) + "\n")
        swap_in(stage, out)
    return out


class PreparedDataset:
    """A prepared set opened by :func:`open_prepared`; rows are memory-mapped, decoded on access.

    Attributes:
        hf: the underlying ``datasets.Dataset`` (columns in the module docstring; ``image``
            decodes to a PIL image, ``mask`` is the RLE dict).
        info: the contents of ``prepare_info.json``.
        directory: where it was opened from.
    """

    def __init__(self, hf, info: dict[str, Any], directory: Path):
        self.hf, self.info, self.directory = hf, info, Path(directory)
        self._indices: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.hf)

    def __getitem__(self, i: int) -> PreparedSample:
        """Row ``i`` (negative counts from the end) decoded into a :class:`PreparedSample`."""
        n = len(self)
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(i).__name__}")
        if not -n <= i < n:
            raise IndexError(f"sample index {i} out of range for {n} samples")
        return decode_row(self.hf[int(i) % n])

    def __iter__(self) -> Iterator[PreparedSample]:
        return (self[i] for i in range(len(self)))

    def indices(self, task: str) -> np.ndarray:
        """int64 row indices (ascending) of the samples of ``task`` ("seg" or "gen")."""
        if task not in TASKS:
            raise InvalidInputError(f"task must be one of {TASKS}, got {task!r}.")
        if task not in self._indices:
            column = self.hf.data.column("task").to_numpy(zero_copy_only=False)
            self._indices[task] = np.flatnonzero(column == task).astype(np.int64)
        return self._indices[task]

    def __repr__(self) -> str:
        return f"PreparedDataset({str(self.directory)!r}, {len(self)} samples, {self.info.get('counts')})"


def _read_info(directory: Path) -> dict[str, Any]:
    path = directory / INFO_FILE
    if not path.is_file():
        raise ArtifactNotFoundError(f"{directory} has no {INFO_FILE}: it is not a prepared dataset, or its "
                                    f"preparation did not finish. Make it with {PREPARE_HINT} {directory}.")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactMismatchError(f"{path} is unreadable ({exc}); re-run {PREPARE_HINT} {directory}.") from None
    if not isinstance(info, dict) or info.get("version") != PREPARED_VERSION:
        found = info.get("version") if isinstance(info, dict) else None
        raise ArtifactMismatchError(
            f"prepared dataset {directory} has preparation version {found!r}, but this genmask-sdk reads "
            f"version {PREPARED_VERSION}. Re-run {PREPARE_HINT} {directory} to prepare it again.")
    return info


def open_prepared(directory: Path) -> PreparedDataset:
    """Open a prepared dataset written by :func:`write_prepared` (memory-mapped, nothing decoded).

    Raises:
        ArtifactNotFoundError: ``directory`` or its ``prepare_info.json`` is missing.
        ArtifactMismatchError: another preparation version, or shards missing / not matching the
            info; the message says to re-run ``python -m genmask_sdk.families.genmask.train.prepare``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactNotFoundError(f"no prepared dataset at {directory}; make one with {PREPARE_HINT} {directory}.")
    info = _read_info(directory)
    ds = _datasets()
    try:
        hf = ds.load_from_disk(str(directory))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise ArtifactMismatchError(f"the Arrow shards in {directory} cannot be loaded ({exc}); "
                                    f"re-run {PREPARE_HINT} {directory}.") from None
    if set(hf.column_names) != set(features()) or len(hf) != info.get("num_samples"):
        raise ArtifactMismatchError(
            f"{directory} holds {len(hf)} rows with columns {hf.column_names}, but {INFO_FILE} promises "
            f"{info.get('num_samples')} rows with columns {list(features())}; re-run {PREPARE_HINT} {directory}.")
    return PreparedDataset(hf, info, directory)

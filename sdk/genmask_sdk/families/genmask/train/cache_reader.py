"""Read a complete frozen-stage cache (``cache_format``) row by row, lazily (memory-mapped safetensors).

``open_cache(DATA)`` checks that ``DATA/cache`` is complete and still matches the prepared set, and
(optionally) that it was computed by the expected frozen stages; every refusal says which command fixes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError
from genmask_sdk.families.genmask.train.cache_format import (
    CACHE_HINT,
    COMPLETE_FILE,
    INFO_FILE,
    NULL_FILE,
    TASK_CODES,
    CacheInfo,
    cache_dir,
    prepared_fingerprint,
    shard_name,
)


@dataclass(frozen=True)
class CachedBatch:
    """Rows of the cache, stacked.

    Attributes:
        rows: (B,) int64 the rows asked for (prepared-row indices for one cache; global rows of a ``CacheSet``).
        sizes: (B, 2) int64 original image (H, W).
        z_image: (B, 16, h, w) float32 normalised image latents.
        z_mask: (B, 16, h, w) float32 normalised mask latents (zeros for generation rows).
        states: (B, L, D) float32 embedder states, right-padded with zeros to the longest row.
        mask: (B, L) bool, True for real tokens.
    """

    rows: torch.Tensor
    sizes: torch.Tensor
    z_image: torch.Tensor
    z_mask: torch.Tensor
    states: torch.Tensor
    mask: torch.Tensor


class _Rows:
    """What ``CacheReader`` and ``CacheSet`` share: batches from ``states(row)`` and ``_stack(rows, name)``."""

    info: CacheInfo

    def states(self, row: int) -> torch.Tensor:
        raise NotImplementedError

    def _stack(self, rows: Sequence[int], name: str) -> torch.Tensor:
        raise NotImplementedError

    def masks(self, rows: Sequence[int]) -> torch.Tensor:
        """(B, R, R) bool engine-resolution masks of ``rows``."""
        return self._stack(rows, "mask")

    def latents(self, rows: Sequence[int], name: str) -> torch.Tensor:
        """(B, 16, h, w) float32 ``"z_image"`` or ``"z_mask"`` latents of ``rows``."""
        return self._stack(rows, name).float()

    def batch(self, rows: Sequence[int]) -> CachedBatch:
        """The rows ``rows`` (any order, repeats allowed) as one ``CachedBatch``."""
        rows = [int(r) for r in rows]
        states = [self.states(r) for r in rows]
        width = max(s.shape[0] for s in states)
        padded = torch.zeros(len(rows), width, self.info.hidden_size)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, s in enumerate(states):
            padded[i, : s.shape[0]] = s.float()
            mask[i, : s.shape[0]] = True
        return CachedBatch(torch.tensor(rows, dtype=torch.int64), self._stack(rows, "size").long(),
                           self.latents(rows, "z_image"), self.latents(rows, "z_mask"), padded, mask)


class CacheReader(_Rows):
    """A complete cache. Row ``i`` of the cache is row ``i`` of the prepared set."""

    def __init__(self, directory: Path, info: CacheInfo) -> None:
        self.directory, self.info = Path(directory), info
        self._handles: dict[int, object] = {}
        self._offsets: dict[int, torch.Tensor] = {}
        self.tasks = np.concatenate([self._handle(k).get_tensor("task").numpy() for k in range(info.shards)])

    def __len__(self) -> int:
        return self.info.prepared_rows

    def fingerprints(self) -> list[str]:
        """The prepared-set fingerprint of the cache (what a resumed run must train on again)."""
        return [self.info.prepared_fingerprint]

    def indices(self, task: str) -> np.ndarray:
        """int64 cache rows (ascending) of ``task``: ``"seg"`` or ``"gen"``."""
        return np.flatnonzero(self.tasks == TASK_CODES[task]).astype(np.int64)

    def null_states(self) -> torch.Tensor:
        """(L0, D) float32: the empty instruction's states (CFG dropout)."""
        from safetensors.torch import load_file

        return load_file(str(self.directory / NULL_FILE))["states"].float()

    def _handle(self, shard: int):
        if shard not in self._handles:
            from safetensors import SafetensorError, safe_open

            path = self.directory / shard_name(shard, self.info.shards)
            try:
                self._handles[shard] = safe_open(str(path), framework="pt")
            except (SafetensorError, OSError) as exc:
                raise ArtifactMismatchError(f"{path} cannot be read as a cache shard ({exc}); delete "
                                            f"{self.directory / COMPLETE_FILE} and run the cache command again to "
                                            "compute it.") from None
        return self._handles[shard]

    def _locate(self, row: int) -> tuple[object, int, int]:
        shard, local = divmod(int(row), self.info.shard_rows)
        if shard not in self._offsets:
            self._offsets[shard] = self._handle(shard).get_tensor("offsets")
        return self._handle(shard), shard, local

    def states(self, row: int) -> torch.Tensor:
        """(L, D) bfloat16 states of one row."""
        handle, shard, local = self._locate(row)
        start, end = self._offsets[shard][local: local + 2].tolist()
        return handle.get_slice("states")[start:end]

    def _stack(self, rows: Sequence[int], name: str) -> torch.Tensor:
        out = []
        for row in rows:
            handle, _, local = self._locate(row)
            out.append(handle.get_slice(name)[local: local + 1])
        return torch.cat(out)


class CacheSet(_Rows):
    """Several caches (one per prepared set: RefCOCO, COCO-Stuff, captions, ...) read as one: row
    ``offsets[k] + i`` is row ``i`` of ``readers[k]``. All must share frozen stages and resolution."""

    def __init__(self, readers: Sequence[CacheReader]) -> None:
        first = readers[0].info
        for reader in readers[1:]:
            if (reader.info.identity, reader.info.resolution) != (first.identity, first.resolution):
                raise ArtifactMismatchError(
                    f"the caches of {readers[0].directory} and {reader.directory} come from different frozen stages or "
                    "resolutions; cache every prepared set with the same --checkpoint (or --vae/--embedder) and --resolution.")
        self.readers, self.info = list(readers), first
        self.offsets = np.cumsum([0] + [len(r) for r in readers])
        self.directory = readers[0].directory

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def fingerprints(self) -> list[str]:
        return [fingerprint for reader in self.readers for fingerprint in reader.fingerprints()]

    def indices(self, task: str) -> np.ndarray:
        return np.concatenate([r.indices(task) + o for r, o in zip(self.readers, self.offsets)])

    def null_states(self) -> torch.Tensor:
        return self.readers[0].null_states()

    def _split(self, row: int) -> tuple[CacheReader, int]:
        k = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return self.readers[k], int(row - self.offsets[k])

    def states(self, row: int) -> torch.Tensor:
        reader, local = self._split(row)
        return reader.states(local)

    def _stack(self, rows: Sequence[int], name: str) -> torch.Tensor:
        return torch.cat([reader._stack([local], name) for reader, local in map(self._split, rows)])


def open_cache(data: str | Path, identity: str | None = None) -> CacheReader:
    """The complete cache of the prepared set ``data``.

    Args:
        identity: when given, the ``source_identity`` the cache must have been computed with.

    Raises:
        ArtifactNotFoundError: no cache, or an unfinished one (the message gives the command).
        ArtifactMismatchError: computed from other frozen stages than ``identity``, or the prepared
            set was prepared again since (the cache is stale).
    """
    data = Path(data)
    directory, hint = cache_dir(data), CACHE_HINT.format(data=data)
    if not (directory / INFO_FILE).is_file():
        raise ArtifactNotFoundError(f"{data} has no frozen-stage cache ({directory}/{INFO_FILE} is missing); "
                                    f"compute it first: {hint}")
    info = CacheInfo.load(directory)
    if not (directory / COMPLETE_FILE).is_file():
        raise ArtifactNotFoundError(f"the cache in {directory} is unfinished; run the command that started it again "
                                    f"(it resumes): {info.command(data)}")
    if identity is not None and identity != info.identity:
        raise ArtifactMismatchError(
            f"the cache in {directory} was computed from other frozen stages ({info.source!r}: another VAE or "
            f"embedder) than the checkpoint given; recompute it with {hint} --overwrite, or drop --checkpoint.")
    if (data / "prepare_info.json").is_file() and prepared_fingerprint(data) != info.prepared_fingerprint:
        raise ArtifactMismatchError(f"{data} was prepared again after its cache was computed; recompute the cache: "
                                    f"{info.command(data)} --overwrite")
    complete = json.loads((directory / COMPLETE_FILE).read_text())
    if complete.get("rows") != info.prepared_rows:
        raise ArtifactMismatchError(f"{directory}/{COMPLETE_FILE} disagrees with {INFO_FILE}; recompute the cache "
                                    f"with --overwrite.")
    _check_shard_sizes(directory, complete.get("shards") or [], info, data)
    return CacheReader(directory, info)


def _check_shard_sizes(directory: Path, shards: list, info: CacheInfo, data: Path) -> None:
    """Every shard has the size recorded when the cache was finished (cheap; the SHA-256 is checked
    when a run resumes). Caches finished before sizes were recorded are taken as they are."""
    for entry in shards:
        path = directory / str(entry.get("file"))
        if "bytes" in entry and (not path.is_file() or path.stat().st_size != entry["bytes"]):
            raise ArtifactMismatchError(f"{path} is missing or not the shard that was written (size differs from "
                                        f"{COMPLETE_FILE}); delete {directory / COMPLETE_FILE} and run "
                                        f"{info.command(data)} to compute it again.")


def open_caches(data: Sequence[str | Path], identity: str | None = None) -> CacheSet:
    """The complete caches of several prepared sets, read as one ``CacheSet`` (``open_cache`` checks each)."""
    return CacheSet([open_cache(d, identity) for d in data])

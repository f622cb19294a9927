"""On-disk layout of the frozen-stage cache (``python -m genmask_sdk.families.genmask.train.cache``).

The VLM (or MiniLM) and the VAE are frozen in GenMask's recipe (DESIGN.md §2, §8), so their outputs
are computed once per prepared sample and stored beside the prepared set, in ``DATA/cache/``::

    cache_info.json                   CacheInfo: source identity, embedder, resolution, VAE μ/σ, prepared-set fingerprint
    shard-00000-of-00004.safetensors  rows [0, shard_rows), one safetensors file per shard (tensors below)
    ...
    null_states.safetensors           "states" (L0, D) bf16: the empty instruction (CFG dropout)
    vae/                              the frozen VAE (diffusers save_pretrained), copied into the final checkpoint
    shard-00000-of-00004.safetensors.json  {"bytes", "sha256"} of that shard, written after it
    cache_complete.json               written last: every shard is there (rows, bytes, sha256 per shard)

Tensors of one shard holding ``n`` rows (prepared rows ``first .. first + n - 1``, in order)::

    row        (n,)          int64    index of the row in the prepared set
    task       (n,)          uint8    0 = "seg", 1 = "gen"
    size       (n, 2)        int32    original image (H, W)
    offsets    (n + 1,)      int64    row i's states are states[offsets[i]:offsets[i + 1]]
    states     (T, D)        bfloat16 final-layer embedder states, every row's real tokens, concatenated
    z_image    (n, 16, h, w) float32  normalised VAE latent of the letterboxed image, h = w = R / 8
    z_mask     (n, 16, h, w) float32  normalised VAE latent of the letterboxed mask image (zeros for "gen")
    mask       (n, R, R)     bool     the letterboxed mask at engine resolution R (False for "gen")

Shards are independent: each is written atomically and then its record (size and SHA-256), so an
interrupted run resumes by skipping the shards whose file matches its record (a shard without one, or
truncated or changed since, is computed again), and several processes fill disjoint shards (rank r
takes shards r, r + W, ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError
from genmask_sdk.io import atomic_write_text, sha256_file

CACHE_VERSION = 1
CACHE_DIR = "cache"
INFO_FILE = "cache_info.json"
COMPLETE_FILE = "cache_complete.json"
NULL_FILE = "null_states.safetensors"
VAE_DIR = "vae"
TASK_CODES = {"seg": 0, "gen": 1}
CACHE_HINT = "python -m genmask_sdk.families.genmask.train.cache --data {data} --checkpoint CKPT"


def cache_dir(data: str | Path) -> Path:
    """``DATA/cache``: where the cache of the prepared set ``data`` lives."""
    return Path(data) / CACHE_DIR


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}.safetensors"


def shard_record_path(shard: Path) -> Path:
    """Where a shard's record (``{"bytes", "sha256"}``) lives: beside it, ``<shard>.json``."""
    return shard.with_name(shard.name + ".json")


def write_shard_record(shard: Path) -> dict[str, Any]:
    """Record a just-written shard's size and SHA-256 (atomically, after the shard)."""
    record = {"bytes": shard.stat().st_size, "sha256": sha256_file(shard)}
    atomic_write_text(shard_record_path(shard), json.dumps(record) + "\n")
    return record


def verified_shard(shard: Path) -> dict[str, Any] | None:
    """The shard's record when the file is there and matches it (size, then SHA-256), else None."""
    try:
        record = json.loads(shard_record_path(shard).read_text())
        if not shard.is_file() or shard.stat().st_size != record["bytes"]:
            return None
        return record if sha256_file(shard) == record["sha256"] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def shard_ranges(rows: int, shard_rows: int) -> list[range]:
    """Prepared-row ranges of the shards: ``[0, s), [s, 2s), ...``, the last one shorter."""
    return [range(start, min(start + shard_rows, rows)) for start in range(0, rows, shard_rows)]


def rank_shards(count: int, rank: int, world: int) -> list[int]:
    """The shards process ``rank`` of ``world`` fills: ``rank, rank + world, ...``."""
    return list(range(rank, count, world))


def prepared_fingerprint(data: str | Path) -> str:
    """SHA-256 of the prepared set's metadata (``prepare_info.json`` and 🤗 datasets' ``state.json``,
    which names its shards and their fingerprint): changes whenever the set is prepared again."""
    digest = hashlib.sha256()
    for name in ("prepare_info.json", "state.json"):
        path = Path(data) / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"") + b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheInfo:
    """What a cache was computed from; saved as ``cache_info.json`` beside the shards.

    Attributes:
        source: what the user passed (checkpoint path, ``"demo"``, or ``"vae:<wan id>"``).
        identity: SHA-256 of the embedder spec and the VAE's files (``cache_source.source_identity``):
            two caches with equal identities were computed by the same frozen stages.
        embedder: ``EmbedderSpec`` fields of the embedder (kind, name_or_path, hidden_size, ...).
        resolution: engine resolution R the images were letterboxed to.
        vae_config: the VAE's constructor kwargs, including ``latents_mean`` / ``latents_std`` (μ, σ).
        prepared_rows: rows of the prepared set; prepared_fingerprint: ``prepared_fingerprint(data)``;
            prepared_version: its ``PREPARED_VERSION``.
        shard_rows: rows per shard (the last shard may hold fewer); shards: number of shards.
        hidden_size: D of the stored states; state_dtype: their dtype name.
    """

    source: str
    identity: str
    embedder: Mapping[str, Any]
    resolution: int
    vae_config: Mapping[str, Any]
    prepared_rows: int
    prepared_fingerprint: str
    prepared_version: int
    shard_rows: int
    shards: int
    hidden_size: int
    state_dtype: str = "bfloat16"
    version: int = CACHE_VERSION

    @property
    def latent_size(self) -> int:
        return self.resolution // 8

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def save(self, directory: Path) -> None:
        atomic_write_text(Path(directory) / INFO_FILE, self.to_json() + "\n")

    @classmethod
    def load(cls, directory: Path) -> "CacheInfo":
        path = Path(directory) / INFO_FILE
        if not path.is_file():
            raise ArtifactNotFoundError(f"{path} does not exist: {directory} holds no frozen-stage cache.")
        try:
            data = json.loads(path.read_text())
            info = cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ArtifactMismatchError(f"{path} is not a cache description ({exc}); delete {directory} and "
                                        "run python -m genmask_sdk.families.genmask.train.cache again.") from None
        if info.version != CACHE_VERSION:
            raise ArtifactMismatchError(f"{directory} is a version-{info.version} cache; this SDK reads version "
                                        f"{CACHE_VERSION}. Delete it and run python -m genmask_sdk.families.genmask.train.cache again.")
        return info

    def command(self, data: str | Path) -> str:
        """The ``train.cache`` command that (re)computes this cache for the prepared set ``data``."""
        if self.source.startswith("vae:"):
            kind = self.embedder.get("kind")
            embedder = "minilm" if kind == "minilm" else self.embedder.get("name_or_path")
            origin = f"--vae {self.source[4:]} --embedder {embedder}"
        else:
            origin = f"--checkpoint {self.source}"
        return f"python -m genmask_sdk.families.genmask.train.cache --data {data} {origin} --resolution {self.resolution}"

    def differences(self, other: "CacheInfo") -> list[str]:
        """Names of the fields that differ (``source`` excluded: the same files may be named twice)."""
        mine, theirs = dataclasses.asdict(self), dataclasses.asdict(other)
        return [k for k in mine if k != "source" and mine[k] != theirs[k]]

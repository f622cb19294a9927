"""Cache the frozen stages of a prepared set: ``python -m genmask_sdk.families.genmask.train.cache --data DIR --checkpoint CKPT``.

GenMask trains only the DiT; the instruction embedder (Qwen2.5-VL, or MiniLM for the demo) and the
VAE are frozen (DESIGN.md §2, §8). This computes, once per prepared sample, the embedder's
final-layer states (bf16) and the VAE latents of the image and of the mask, and writes them to
``DIR/cache/`` (layout: ``cache_format``). ``train.finetune`` then needs neither model in memory.

* Resumable: shards are written atomically; a re-run skips the shards already there.
* Data-parallel: ``accelerate launch --num_processes N -m genmask_sdk.families.genmask.train.cache ...`` gives
  process r the shards r, r + N, ...; the main process writes the completion marker at the end.
* Safe: a cache computed from other frozen stages, another resolution or another preparation of the
  data is refused (``--overwrite`` replaces it).

Examples::

    python -m genmask_sdk.families.genmask.train.cache --data data/scenes --checkpoint demo
    accelerate launch --num_processes 8 -m genmask_sdk.families.genmask.train.cache --data data/refcoco \\
        --vae Wan-AI/Wan2.1-T2V-1.3B-Diffusers --embedder qwen2.5-vl-7b --resolution 512
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError, ConfigError, GenMaskError, one_line
from genmask_sdk.io import atomic_path, atomic_write_text
from genmask_sdk.families.genmask.train.cache_format import (
    COMPLETE_FILE,
    INFO_FILE,
    NULL_FILE,
    VAE_DIR,
    CacheInfo,
    cache_dir,
    prepared_fingerprint,
    rank_shards,
    shard_name,
    shard_ranges,
    verified_shard,
    write_shard_record,
)
from genmask_sdk.families.genmask.train.cache_source import FrozenSource, resolve_source

DEFAULT_SHARD_ROWS = 256


def describe(source: FrozenSource, data: Path, rows: int, shard_rows: int) -> CacheInfo:
    """The ``CacheInfo`` a cache of ``data`` (``rows`` prepared rows) made by ``source`` will carry."""
    from diffusers import AutoencoderKLWan

    from genmask_sdk.data.prepared import PREPARED_VERSION

    vae_config = {k: v for k, v in AutoencoderKLWan.load_config(source.vae_dir).items() if not k.startswith("_")}
    return CacheInfo(
        source=source.label, identity=source.identity, embedder=dataclasses.asdict(source.embedder),
        resolution=source.resolution, vae_config=json.loads(json.dumps(vae_config)), prepared_rows=rows,
        prepared_fingerprint=prepared_fingerprint(data), prepared_version=PREPARED_VERSION, shard_rows=shard_rows,
        shards=len(shard_ranges(rows, shard_rows)),
        hidden_size=source.embedder.hidden_size)


def claim(out: Path, info: CacheInfo, overwrite: bool) -> None:
    """Make ``out`` a cache directory for ``info``: new, resumed (same inputs), or replaced (``overwrite``)."""
    if out.exists() and overwrite:
        shutil.rmtree(out)
    if (out / INFO_FILE).is_file():
        differs = CacheInfo.load(out).differences(info)
        if differs:
            raise ArtifactMismatchError(
                f"{out} holds a cache of other inputs (it differs in {', '.join(differs)}): another checkpoint, "
                "resolution, shard size or preparation of the data. Pass --overwrite to replace it.")
        return
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not a frozen-stage cache (no {INFO_FILE}); move it away or pass --overwrite.")
    out.mkdir(parents=True, exist_ok=True)
    info.save(out)


def write_shard(out: Path, index: int, info: CacheInfo, dataset, stages, batch: int) -> int:
    """Encode shard ``index`` and write it atomically; returns its row count."""
    from safetensors.torch import save_file

    from genmask_sdk.families.genmask.train.cache_encode import encode_shard

    rows = shard_ranges(info.prepared_rows, info.shard_rows)[index]
    samples = [dataset[i] for i in rows]
    vae_encoder, _, embedder = stages
    tensors = encode_shard(samples, rows, vae_encoder, embedder, info.resolution, batch)
    path = out / shard_name(index, info.shards)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"rows": str(len(rows))})
    write_shard_record(path)
    return len(rows)


def write_shared_files(out: Path, source: FrozenSource, embedder) -> None:
    """The empty instruction's states and a copy of the VAE (main process; skipped when present)."""
    import torch
    from safetensors.torch import save_file

    from genmask_sdk.families.genmask.train.cache_encode import null_states

    if not (out / NULL_FILE).is_file():
        with atomic_path(out / NULL_FILE) as tmp:
            save_file({"states": null_states(embedder).to(torch.bfloat16).contiguous()}, str(tmp))
    if not (out / VAE_DIR).is_dir():
        staging = Path(tempfile.mkdtemp(prefix=".vae.", dir=out))
        try:
            shutil.copytree(source.vae_dir, staging / VAE_DIR)
            (staging / VAE_DIR).replace(out / VAE_DIR)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def finish(out: Path, info: CacheInfo) -> None:
    """Check that every shard is there and write ``cache_complete.json`` (the marker train.finetune needs)."""
    ranges = shard_ranges(info.prepared_rows, info.shard_rows)
    records = {k: verified_shard(out / shard_name(k, info.shards)) for k in range(info.shards)}
    missing = [shard_name(k, info.shards) for k, record in records.items() if record is None]
    if missing:
        raise ArtifactMismatchError(f"{len(missing)} shards of {out} are missing or damaged ({missing[:3]}...); run the "
                                    "same command again to compute them.")
    shards = [{"file": shard_name(k, info.shards), "rows": len(r), **records[k]} for k, r in enumerate(ranges)]
    atomic_write_text(out / COMPLETE_FILE, json.dumps({"rows": info.prepared_rows, "shards": shards}, indent=2) + "\n")


def process_state():
    """accelerate's ``PartialState`` of this process; on CPU (``ACCELERATE_USE_CPU``, which ``accelerate
    launch --cpu`` sets, and which CPU-only multi-process launches need) the gloo process group."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def build_cache(data: str | Path, source: FrozenSource, *, shard_rows: int = DEFAULT_SHARD_ROWS, batch: int = 16,
                overwrite: bool = False, progress: bool = True) -> Path:
    """Compute the cache of the prepared set ``data`` with ``source``'s frozen stages; returns ``data/cache``.

    Runs in every process of an ``accelerate launch`` (or alone); each process fills its own shards.
    """
    from tqdm.auto import tqdm

    from genmask_sdk.data.prepared import open_prepared
    from genmask_sdk.families.genmask.train.cache_source import load_frozen_stages

    if shard_rows < 1 or batch < 1:
        raise ConfigError(f"--shard-rows and --batch must be >= 1, got {shard_rows} and {batch}.")
    state, data, started = process_state(), Path(data), time.time()
    dataset = open_prepared(data)
    out = cache_dir(data)
    info = describe(source, data, len(dataset), shard_rows)
    if state.is_main_process:
        claim(out, info, overwrite)
    state.wait_for_everyone()
    mine = rank_shards(info.shards, state.process_index, state.num_processes)
    todo = [k for k in mine if verified_shard(out / shard_name(k, info.shards)) is None]
    damaged = [k for k in todo if (out / shard_name(k, info.shards)).exists()]
    if damaged:
        print(f"recomputing {len(damaged)} shard(s) whose file does not match its record (truncated, changed or "
              f"unfinished): {[shard_name(k, info.shards) for k in damaged[:3]]}", flush=True)
    stages = load_frozen_stages(source, state.device)
    bar = tqdm(total=sum(len(shard_ranges(info.prepared_rows, shard_rows)[k]) for k in todo), desc="cache",
               unit="row", disable=not (progress and state.is_main_process))
    for index in todo:
        bar.update(write_shard(out, index, info, dataset, stages, batch))
    bar.close()
    if state.is_main_process:
        write_shared_files(out, source, stages[2])
    state.wait_for_everyone()
    if state.is_main_process:
        finish(out, info)
        print(f"cache of {info.prepared_rows} rows ({info.shards} shards, {len(todo)} computed by the main process, "
              f"{state.num_processes} process(es)) in {out} after {time.time() - started:.1f} s")
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m genmask_sdk.families.genmask.train.cache", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset directory (train.prepare)")
    parser.add_argument("--checkpoint", default=None,
                        help="GenMask checkpoint giving VAE + embedder: 'demo', a directory or a hub id")
    parser.add_argument("--vae", default=None,
                        help="instead of --checkpoint: Wan2.1 diffusers checkpoint (hub id or directory) for the VAE")
    parser.add_argument("--embedder", default=None,
                        help="with --vae: qwen2.5-vl-7b (default), qwen2.5-vl-3b, minilm, or a Qwen2.5-VL id/dir")
    parser.add_argument("--resolution", type=int, default=None,
                        help="engine resolution R (default: the checkpoint's, or 512)")
    parser.add_argument("--shard-rows", type=int, default=DEFAULT_SHARD_ROWS, help="rows per shard (default 256)")
    parser.add_argument("--batch", type=int, default=16, help="samples per VAE / embedder call (default 16)")
    parser.add_argument("--overwrite", action="store_true", help="replace a cache made from other inputs")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (default: torch's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> Path | int:
    """The command line: the cache's directory, or 2 after a one-line error (a user error)."""
    args = parse_args(argv)
    try:
        return run(args)
    except GenMaskError as exc:
        print(f"python -m genmask_sdk.families.genmask.train.cache: error: {one_line(exc)}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> Path:
    """Compute the cache for parsed arguments (raises the typed errors ``main`` prints in one line)."""
    if not (args.data / "prepare_info.json").is_file():
        raise ArtifactNotFoundError(f"--data {args.data} is not a prepared dataset (no prepare_info.json); prepare it "
                                    "with python -m genmask_sdk.families.genmask.train.prepare first.")
    if args.checkpoint is None and args.vae is None:
        raise ConfigError("name the frozen stages: --checkpoint CKPT (a GenMask checkpoint: 'demo', a directory or a "
                          "hub id), or --vae WAN --embedder NAME.")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    source = resolve_source(args.checkpoint, args.vae, args.embedder, args.resolution)
    return build_cache(args.data, source, shard_rows=args.shard_rows, batch=args.batch, overwrite=args.overwrite,
                       progress=not args.no_progress)


if __name__ == "__main__":
    result = main()
    sys.exit(result if isinstance(result, int) else 0)

"""``genmask info DIR``: summarise and verify an engines directory (torch-free)."""

from __future__ import annotations

import argparse
import json
import sys

from genmask_sdk.errors import GenMaskError, one_line



def info(args: argparse.Namespace) -> int:
    from genmask_sdk.families.genmask.engines import open_manifest, describe_manifest

    verify = not args.no_verify
    failure = None
    try:
        manifest = open_manifest(args.directory, verify=verify)
    except GenMaskError as exc:
        if not verify:
            raise
        failure = exc
        manifest = open_manifest(args.directory, verify=False)  # still summarise; raises if unreadable
    summary = describe_manifest(manifest.data)
    summary["verification"] = f"FAILED: {one_line(failure)}" if failure else ("sha256 OK" if verify else "skipped")
    if failure:
        print(f"genmask info: error: {one_line(failure)}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 2 if failure else 0
    embedder = summary["embedder"]
    print(f"engines: {args.directory}")
    print(f"  model {summary['model']}, resolution {summary['resolution']}, max_batch {summary['max_batch']}, "
          f"max_prompt_tokens {summary['max_prompt_tokens']}")
    print(f"  embedder {embedder.get('kind')} ({embedder.get('name_or_path')}, D={embedder.get('hidden_size')})")
    print(f"  format {summary['format_version']}, built by genmask-sdk {summary['sdk_version']}, "
          f"checkpoint {summary['checkpoint'].get('source')}")
    for artifact in summary["artifacts"]:
        print(f"  {artifact['stage']:<12} {artifact['precision']:<12} {artifact['runtime']:<9} {artifact['file']}  "
              f"sha256 {str(artifact['sha256'])[:12]}")
    sets = ", ".join(f"{p} ({'+'.join(r) or 'nothing built'})" for p, r in sorted(summary["sets"].items()))
    print(f"  sets: {sets}")
    timing = summary.get("cpu_timing")
    if timing:
        times = ", ".join(f"{p} {t['p50_ms']:.1f} ms" for p, t in timing["sets"].items())
        print(f"  CPU timing at build (p50 per image, batch 1): {times} on {timing.get('cpu')}")
    print(f"verification: {summary['verification']} ({len(summary['artifacts'])} files)")
    return 2 if failure else 0

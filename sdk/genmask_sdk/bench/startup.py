"""Startup and warm latency of the deployed runtime, each timed in fresh processes.

* ``import``: ``from genmask_sdk import Segmenter`` in a new interpreter;
* ``from_engines``: that import + ``Segmenter.from_engines(engines)``;
* ``cli``: ``genmask segment IMAGE PROMPT --engines DIR`` end to end (the whole process);
* ``warm``: ``Segmenter.predict(image, prompt)`` repeated in one process after a warm-up.

Each process reports whether torch / transformers were imported. Times are wall-clock seconds of
the measured region (the interpreter's own start-up is included only in ``cli``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from genmask_sdk.bench.stats import summarize
from genmask_sdk.bench.system import hardware, versions

_PROBE = """
import json, sys, time
start = time.perf_counter()
from genmask_sdk import Segmenter
imported = time.perf_counter()
seg = Segmenter.from_engines({engines!r}, backend={backend!r}, precision={precision!r})
opened = time.perf_counter()
for _ in range({warmup}):
    seg.predict({image!r}, {prompt!r})
calls = []
for _ in range({calls}):
    t = time.perf_counter(); seg.predict({image!r}, {prompt!r}); calls.append(time.perf_counter() - t)
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "transformers", "diffusers"}})
print(json.dumps({{"import": imported - start, "from_engines": opened - start, "calls": calls, "heavy": heavy,
                  "embedder": seg.describe()["embedder"]["runs_on"]}}))
"""


def _probe(engines: Path, image: str, prompt: str, backend: str, precision: str, warmup: int, calls: int) -> dict:
    code = _PROBE.format(engines=str(engines), image=image, prompt=prompt, backend=backend, precision=precision,
                         warmup=warmup, calls=calls)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"startup probe failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cli_seconds(engines: Path, image: str, prompt: str, backend: str, precision: str) -> float:
    command = [sys.executable, "-m", "genmask_sdk.cli.main", "segment", image, prompt, "--engines", str(engines),
               "--backend", backend, "--precision", precision]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"genmask segment failed: {done.stderr[-2000:]}")
    return seconds


def run_startup(engines: str | Path, image: str, prompt: str, *, backend: str = "onnxruntime", precision: str = "fp32",
                runs: int = 5, warm_calls: int = 20, progress: bool = True) -> dict[str, Any]:
    """Time ``runs`` fresh processes of each kind and ``warm_calls`` warm predicts; return the result."""
    from tqdm.auto import tqdm

    engines = Path(engines)
    seconds: dict[str, list[float]] = {"import": [], "from_engines": [], "cli": [], "warm_predict": []}
    heavy, runs_on = set(), None
    for run in tqdm(range(runs), desc="fresh processes", disable=not progress):
        probe = _probe(engines, image, prompt, backend, precision, warmup=3 if run == 0 else 0,
                       calls=warm_calls if run == 0 else 0)
        seconds["import"].append(probe["import"])
        seconds["from_engines"].append(probe["from_engines"])
        seconds["warm_predict"] += probe["calls"]
        heavy.update(probe["heavy"])
        runs_on = probe["embedder"]
        seconds["cli"].append(_cli_seconds(engines, image, prompt, backend, precision))
    return {"schema": "genmask-bench/startup/1", "engines": str(engines), "backend": backend, "precision": precision,
            "timings": {k: summarize(v) for k, v in seconds.items() if v}, "raw_seconds": seconds,
            "heavy_modules_imported": sorted(heavy), "embedder_runs_on": runs_on,
            "settings": {"runs": runs, "warm_calls": warm_calls, "image": image, "prompt": prompt},
            "hardware": hardware(), "versions": versions(), "model": engines.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def startup_markdown(result: dict[str, Any]) -> str:
    cpu = result["hardware"]["cpu"]
    lines = [f"# Startup of the deployed runtime ({result['backend']} {result['precision']}, {result['model']})", "",
             f"- machine: {cpu.get('model')}, {cpu.get('usable_cpus')} usable CPUs; onnxruntime "
             f"{result['versions'].get('onnxruntime')}",
             f"- embedder runs on: {result['embedder_runs_on']}; heavy modules imported: "
             f"{', '.join(result['heavy_modules_imported']) or 'none'}", "",
             "| what | n | p50 ms | p90 ms | p99 ms | min ms | max ms |", "|---|---:|---:|---:|---:|---:|---:|"]
    names = {"import": "`from genmask_sdk import Segmenter`", "from_engines": "import + `Segmenter.from_engines`",
             "cli": "`genmask segment` whole process", "warm_predict": "warm `predict(image, prompt)`"}
    for key, row in result["timings"].items():
        lines.append(f"| {names[key]} | {row['n']} | {row['p50_ms']:.1f} | {row['p90_ms']:.1f} | {row['p99_ms']:.1f} | "
                     f"{row['min_ms']:.1f} | {row['max_ms']:.1f} |")
    return "\n".join(lines) + "\n"

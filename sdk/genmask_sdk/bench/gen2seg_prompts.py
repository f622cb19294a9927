"""Peak memory and time of gen2seg's host step on real camera frame sizes (issue 34): point prompts
and *segment everything* after ``InstanceSegmenter.set_image`` on 1, 3 and 12 MP frames, through the
public loader (``InstanceSegmenter.from_engines``) in fresh, torch-free processes.

Each (frame size, task) runs in its own child process, which reports its peak RSS (``VmHWM``)
after opening the engines, after ``set_image`` and after the task, and the task's wall time per
repeat; the parent summarises (p50/p90/p99 over repeats). The frame is the example image resized
(bicubic) to the size, so the colour map holds the example's objects at that scale.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any, Sequence

from genmask_sdk.bench.stats import summarize

#: name -> (width, height): 1, 3 and 12 MP frames of a 4:3 camera
SIZES = {"1MP": (1152, 864), "3MP": (2048, 1536), "12MP": (4000, 3000)}
TASKS = ("everything", "points100", "point1")

_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    from PIL import Image
    from genmask_sdk import InstanceSegmenter
    from genmask_sdk.data.examples import example_image_path

    def peak_mib():  # VmHWM: this process's high-water mark (ru_maxrss would carry the parent's across fork)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    engines, width, height, task, repeats, grid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
    frame = np.asarray(Image.open(example_image_path()).convert("RGB").resize((width, height), Image.BICUBIC))
    seg = InstanceSegmenter.from_engines(engines, backend="onnxruntime", device="cpu")
    opened = peak_mib()
    start = time.perf_counter()
    seg.set_image(frame)
    set_image_s = time.perf_counter() - start
    after_set = peak_mib()
    rng = np.random.default_rng(0)
    seconds, found = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        if task == "everything":
            found = len(seg.segment_everything(grid=grid))
        elif task == "points100":
            points = np.stack([rng.uniform(0, width - 1, 100), rng.uniform(0, height - 1, 100)], axis=1)
            found = int(seg.predict(points=points).mask.sum())
        else:
            found = int(seg.predict(points=[(width * 0.25, height * 0.5)]).mask.sum())
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"peak_rss_mib": peak_mib(), "peak_after_open_mib": opened, "peak_after_set_image_mib": after_set,
                      "set_image_s": set_image_s, "seconds": seconds, "found": found,
                      "torch_loaded": "torch" in sys.modules}))
""")


def measure(engines: str, size: str, task: str, repeats: int, grid: int = 16, timeout: float = 3600) -> dict[str, Any]:
    """One child process: ``task`` on a ``size`` frame, ``repeats`` times."""
    width, height = SIZES[size]
    done = subprocess.run([sys.executable, "-c", _CHILD, str(engines), str(width), str(height), task, str(repeats),
                           str(grid)], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{task} on {size} failed:\n{done.stderr[-3000:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    data.update(size=size, megapixels=round(width * height / 1e6, 2), width=width, height=height, task=task,
                grid=grid if task == "everything" else None, time=summarize(data.pop("seconds")))
    return data


def run(engines: str, sizes: Sequence[str], tasks: Sequence[str], repeats: int, grid: int = 16,
        progress: bool = True) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        for task in tasks:
            rows.append(measure(engines, size, task, repeats, grid))
            if progress:
                row = rows[-1]
                print(f"[gen2seg_prompts] {size} {task}: peak RSS {row['peak_rss_mib']:.0f} MiB, "
                      f"p50 {row['time']['p50_ms']:.0f} ms", file=sys.stderr, flush=True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    hw = result["machine"]
    lines = [f"# gen2seg host step on camera-size frames ({result['precision']} engines, {result['engines_model']})", "",
             f"- machine: {hw['cpu']}, {hw['logical_cpus']} logical CPUs; genmask-sdk {result['genmask_sdk']}, "
             f"onnxruntime {result['onnxruntime']}, numpy {result['numpy']}, opencv {result['opencv']}",
             f"- each row: one fresh torch-free process; `set_image` (model + colour map at the frame size), then "
             f"the task {result['repeats']} times; peak RSS is the process's high-water mark (VmHWM)", "",
             "| frame | task | peak RSS MiB | after set_image MiB | task p50 ms | p90 ms | p99 ms | n | set_image s | found |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        t = row["time"]
        task = row["task"] + (f" (grid {row['grid']})" if row["grid"] else "")
        lines.append(f"| {row['size']} ({row['width']}×{row['height']}) | {task} | {row['peak_rss_mib']:.0f} | "
                     f"{row['peak_after_set_image_mib']:.0f} | {t['p50_ms']:.0f} | {t['p90_ms']:.0f} | {t['p99_ms']:.0f} | "
                     f"{t['n']} | {row['set_image_s']:.2f} | {row['found']} |")
    return "\n".join(lines) + "\n"

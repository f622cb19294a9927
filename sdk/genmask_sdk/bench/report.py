"""Benchmark outputs: ``<name>.json`` (everything), ``<name>.md`` (tables), ``<name>.png`` (plots)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from genmask_sdk.io import atomic_write_text

STAGE_ORDER = ("embed", "vae_encoder", "dit", "mask_head", "end_to_end")


def jsonable(value: Any) -> Any:
    """Plain JSON types; numpy scalars/arrays converted, paths as strings, NaN/inf as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def script_command(script: str, argv) -> list[str]:
    """The command line a result records: ``["python", "benchmarks/<script>.py", *args]`` (``argv``
    None = this process's own arguments)."""
    import sys

    return ["python", f"benchmarks/{script}.py", *(sys.argv[1:] if argv is None else list(argv))]


def write_outputs(result: dict[str, Any], out_dir: str | Path, name: str, markdown: str,
                  plot: Any = None) -> dict[str, str | None]:
    """Write JSON + Markdown (+ PNG through ``plot(result, path)``); return the paths written
    (``png`` None with ``plot_error`` when matplotlib is missing or plotting failed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str | None] = {"json": str(out / f"{name}.json"), "md": str(out / f"{name}.md"), "png": None}
    if plot is not None:
        png = out / f"{name}.png"
        try:
            plot(result, png)
            paths["png"] = str(png)
        except ImportError as exc:
            paths["plot_error"] = f"matplotlib is not installed ({exc}); pip install 'genmask-sdk[dev]'"
        except Exception as exc:  # noqa: BLE001 - a plot never loses the numbers
            paths["plot_error"] = f"{type(exc).__name__}: {exc}"
    result["outputs"] = {k: (Path(v).name if k in ("json", "md", "png") and v else v) for k, v in paths.items()}
    atomic_write_text(paths["json"], json.dumps(jsonable(result), indent=2, allow_nan=False) + "\n")
    atomic_write_text(paths["md"], markdown + ("\n" if not markdown.endswith("\n") else ""))
    return paths


# ------------------------------------------------------------------------------------ helpers
def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-4):
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return str(value)


def _ms(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def header_lines(result: dict[str, Any]) -> list[str]:
    hw, ver, settings = result["hardware"], result["versions"], result["settings"]
    cpu = hw["cpu"]
    gpu = hw.get("gpu")
    gpu_text = (f"{gpu['name']} (SM {gpu['compute_capability'][0]}.{gpu['compute_capability'][1]}, "
                f"{gpu['memory_gib']} GiB, CUDA {gpu['cuda']})" if gpu else "none")
    tools = ", ".join(f"{k} {ver.get(k) or '–'}" for k in ("torch", "diffusers", "onnx", "onnxruntime", "tensorrt"))
    lines = [
        f"- **CPU**: {cpu['model']} — {cpu['usable_cpus']} usable / {cpu['logical_cpus']} logical CPUs, "
        f"{cpu['physical_cores'] or '?'} physical cores, flags {', '.join(cpu['flags']) or '–'}; "
        f"{hw['memory_gib']} GiB RAM; torch threads {hw['torch_threads']}",
        f"- **GPU**: {gpu_text}",
        f"- **Versions**: genmask-sdk {ver['genmask_sdk']}, {tools}; Python {hw['python']}",
        f"- **Created**: {result['created']} (took {result.get('seconds', '?')} s); command: "
        f"`{' '.join(result.get('command') or []) or '(library call)'}`",
    ]
    if "warmup" in settings:
        lines.append(f"- **Settings**: warm-up {settings['warmup']} (first call timed separately), "
                     f"{settings['repeats']} timed repeats per figure, threads {settings.get('threads') or 'default'}")
    return lines


# ------------------------------------------------------------------------------------ latency
def latency_markdown(result: dict[str, Any]) -> str:
    model = result["model"]
    peak = result["peak"]
    lines = [f"# Latency — {model['name']} ({model['kind']}), {result['settings']['mode']} mode", ""]
    lines += header_lines(result)
    other = "; ".join(f"{o['dtype']} {o['tflops'] * 1000:.0f} GFLOP/s" for o in peak.get("other_measured", [])
                      if "tflops" in o)
    lines.append(f"- **Peak reference**: {peak['tflops'] * 1000:.1f} GFLOP/s ({peak['source']})"
                 + (f"; also measured {other}" if other else ""))
    lines += ["", "Latency is p50/p90/p99 over the timed repeats (n). **× ref** is the p50 over PyTorch eager "
              "fp32's p50 for the same stage and batch in this run (< 1 = faster). TFLOP/s use analytic FLOPs "
              "(`genmask_sdk.bench.flops`) over the p50; % peak is against the peak reference above.", ""]
    for res in result["resolutions"]:
        lines += latency_resolution_markdown(res)
    return "\n".join(lines)


def latency_resolution_markdown(res: dict[str, Any]) -> list[str]:
    flops = res["flops"]
    dit1 = flops["dit"].get("1") or next(iter(flops["dit"].values()))
    prompt = res["prompt_tokens"].get("1") or next(iter(res["prompt_tokens"].values()))
    lines = [f"## {res['resolution']}² — {res['mode']}", "",
             f"DiT: {res['tokens_per_frame']} tokens per frame (2 frames), {prompt} prompt tokens, "
             f"{_flops(dit1)} per prompt."
             + (f" VAE encoder {_flops(flops['vae_encoder']['1'])} (useful; "
                f"{_flops(res['vae_encoder_executed_flops'])} executed by PyTorch eager's 3-D kernels; the ONNX graphs run 2-D ones)."
                if flops.get("vae_encoder") else ""), ""]
    lines += headline(res)
    lines += ["| backend | stage | batch | p50 ms | p90 ms | p99 ms | n | 1st call ms | × ref | prompts/s | TFLOP/s | % peak |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in res.get("shared", {}).get("embed", []):
        lines.append(f"| embedder (PyTorch, all backends) | embed | {row['batch']} | {_ms(row['p50_ms'])} | "
                     f"{_ms(row['p90_ms'])} | {_ms(row['p99_ms'])} | {row['n']} | {_ms(row['first_call_ms'])} | – | "
                     f"{row['prompts_per_s']:.1f} | {_f(row.get('tflops'), 4)} | {_pct(row.get('peak_fraction'))} |")
    for entry in res["targets"]:
        if entry["status"] != "ok":
            continue
        for stage in STAGE_ORDER:
            for row in entry["stages"].get(stage, []):
                lines.append(
                    f"| {entry['label']} | {stage} | {row['batch']} | {_ms(row['p50_ms'])} | {_ms(row['p90_ms'])} | "
                    f"{_ms(row['p99_ms'])} | {row['n']} | {_ms(row['first_call_ms'])} | {_f(row.get('ratio_vs_reference'), 2)} | "
                    f"{row['prompts_per_s']:.2f} | {_f(row.get('tflops'), 4)} | {_pct(row.get('peak_fraction'))} |")
    lines += ["", "**Memory** (host peak RSS during the backend's section — load and runs; device: torch "
              "allocator peak / whole-GPU use at the end)", "",
              "| backend | status | open s | host peak MiB | host start MiB | device peak MiB | device used MiB |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for entry in res["targets"]:
        memory = entry.get("memory") or {}
        lines.append(f"| {entry['label']} | {entry['status']} | {_f(entry.get('open_seconds'), 2)} | "
                     f"{_f(memory.get('host_peak_rss_mib'), 0)} | {_f(memory.get('host_rss_start_mib'), 0)} | "
                     f"{_f(memory.get('device_peak_allocated_mib'), 0)} | {_f(memory.get('device_used_end_mib'), 0)} |")
    fid = [e for e in res["targets"] if e.get("fidelity")]
    if fid:
        lines += ["", "**Fidelity** against PyTorch eager fp32 on the same inputs (DiT batch 1; end to end: the "
                  "Segmenter's logits at the original image size)", "",
                  "| backend | DiT max abs diff | DiT cosine | DiT mask IoU | e2e max abs logit diff | e2e mask IoU |",
                  "|---|---:|---:|---:|---:|---:|"]
        for entry in fid:
            f = entry["fidelity"]
            lines.append(f"| {entry['label']} | {_f(f.get('dit_max_abs_diff'), 4)} | {_f(f.get('dit_cosine'), 6)} | "
                         f"{_f(f.get('dit_mask_iou'), 4)} | {_f(f.get('e2e_max_abs_logit_diff'), 4)} | "
                         f"{_f(f.get('e2e_mask_iou'), 4)} |")
    methods = res.get("artifacts", {}).get("methods") or {}
    if methods:
        lines += ["", "**DiT graphs**", ""]
        for precision, method in methods.items():
            text = method.get("method") if isinstance(method, dict) else method
            lines.append(f"- `{precision}`: {text}")
    problems = [e for e in res["targets"] if e["status"] != "ok"]
    if problems:
        lines += ["", "**Not measured**", ""]
        lines += [f"- {e['label']} (`{e['target']}`): **{e['status']}** — {e['reason']}" for e in problems]
    lines.append("")
    return lines


def headline(res: dict[str, Any]) -> list[str]:
    """One line per backend: DiT (batch 1) and end to end p50 against the reference, and fidelity."""
    lines = ["**Summary** (batch 1; × ref = p50 / PyTorch eager fp32 p50, same run)", "",
             "| backend | DiT p50 ms | DiT × ref | end-to-end p50 ms | e2e × ref | DiT cosine | mask IoU vs ref |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for entry in res["targets"]:
        if entry["status"] != "ok":
            continue
        dit = (entry["stages"].get("dit") or [{}])[0]
        e2e = (entry["stages"].get("end_to_end") or [{}])[0]
        fid = entry.get("fidelity") or {}
        iou = fid.get("e2e_mask_iou", fid.get("dit_mask_iou"))
        reference = entry["target"] == "torch-eager"
        lines.append(f"| {entry['label']} | {_ms(dit.get('p50_ms'))} | {_f(dit.get('ratio_vs_reference'), 2)} | "
                     f"{_ms(e2e.get('p50_ms'))} | {_f(e2e.get('ratio_vs_reference'), 2)} | "
                     f"{'ref' if reference else _f(fid.get('dit_cosine'), 5)} | {'ref' if reference else _f(iou, 4)} |")
    return lines + [""]


def _flops(value: float) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} FLOP"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def latency_plot(result: dict[str, Any], path: Path) -> None:
    """Per resolution: p50 per stage and backend (whiskers to p99, log scale, × ref labels), and
    DiT throughput against batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["resolutions"]
    fig, axes = plt.subplots(len(rows), 2, figsize=(13, 4.6 * len(rows)), squeeze=False)
    for (ax, ax2), res in zip(axes, rows):
        ok = [e for e in res["targets"] if e["status"] == "ok"]
        stages = [s for s in STAGE_ORDER if any(s in e["stages"] for e in ok)]
        width = 0.8 / max(1, len(ok))
        for i, entry in enumerate(ok):
            xs, p50, err, labels = [], [], [], []
            for j, stage in enumerate(stages):
                first = (entry["stages"].get(stage) or [None])[0]
                if first is None:
                    continue
                xs.append(j + (i - (len(ok) - 1) / 2) * width)
                p50.append(first["p50_ms"])
                err.append(max(0.0, first["p99_ms"] - first["p50_ms"]))
                ratio = first.get("ratio_vs_reference")
                labels.append("" if ratio is None else f"×{ratio:.2f}")
            bars = ax.bar(xs, p50, width, yerr=[[0] * len(err), err], capsize=2, label=entry["target"])
            for bar, text in zip(bars, labels):
                ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="top",
                            fontsize=7, rotation=90, xytext=(0, -3), textcoords="offset points", color="white")
        ax.set_xticks(range(len(stages)), [f"{s}\n(batch {(ok[0]['stages'].get(s) or [{}])[0].get('batch', 1)})"
                                           if ok else s for s in stages], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("p50 latency, ms (whisker: p99)")
        ax.set_title(f"{result['model']['name']} {res['resolution']}² — {res['mode']}", fontsize=10)
        ax.legend(fontsize=7)
        for entry in ok:
            dit = entry["stages"].get("dit") or []
            ax2.plot([r["batch"] for r in dit], [r["prompts_per_s"] for r in dit], marker="o", label=entry["target"])
        ax2.set_xlabel("prompts per DiT call (batch)")
        ax2.set_ylabel("DiT throughput, prompts/s (p50)")
        ax2.set_xscale("log", base=2)
        batches = sorted({r["batch"] for e in ok for r in e["stages"].get("dit") or []})
        if batches:
            ax2.set_xticks(batches, [str(b) for b in batches])
            ax2.minorticks_off()
        ax2.set_title("DiT throughput", fontsize=10)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------ accuracy
def accuracy_markdown(result: dict[str, Any]) -> str:
    lines = [f"# Accuracy — {result['model']['name']}", ""]
    lines += header_lines(result)
    lines += ["", "mIoU (= gIoU) is the mean of per-expression IoU; oIoU (= cIoU) is total intersection over total "
              "union. Fidelity compares each backend's masks and logits with the PyTorch fp32 reference on the same "
              "inputs (IoU of the two predicted masks; max |logit difference| at the original image size).", ""]
    for dataset in result["datasets"]:
        lines += [f"## {dataset['name']}", "", dataset.get("description", ""), ""]
        if dataset.get("status") != "ok":
            lines += [f"**{dataset.get('status')}** — {dataset.get('reason')}", ""]
            continue
        lines += ["| backend | n | mIoU | oIoU | Pr@0.5 | Pr@0.9 | mask IoU vs torch (mean / min) | max abs logit diff | ms / sample |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for entry in dataset["backends"]:
            if entry["status"] != "ok":
                continue
            s, fid = entry["scores"], entry.get("fidelity") or {}
            vs = ("reference" if entry.get("reference") else
                  f"{_f(fid.get('mask_iou_mean'), 4)} / {_f(fid.get('mask_iou_min'), 4)}")
            lines.append(f"| {entry['label']} | {s['count']} | {s['miou']:.4f} | {s['oiou']:.4f} | "
                         f"{_f(s['precision'].get('Pr@0.5'), 3)} | {_f(s['precision'].get('Pr@0.9'), 3)} | {vs} | "
                         f"{'–' if entry.get('reference') else _f(fid.get('max_abs_logit_diff'), 4)} | "
                         f"{_f(entry.get('ms_per_sample'), 1)} |")
        groups = sorted({g for e in dataset["backends"] if e["status"] == "ok" for g in e["scores"]["groups"]})
        ok = [e for e in dataset["backends"] if e["status"] == "ok"]
        if groups and ok:
            lines += ["", "Per group (mIoU / oIoU):", "",
                      "| group | n | " + " | ".join(e["target"] for e in ok) + " |",
                      "|---|---:|" + "---:|" * len(ok)]
            for group in groups:
                count = ok[0]["scores"]["groups"].get(group, {}).get("count", 0)
                cells = []
                for e in ok:
                    g = e["scores"]["groups"].get(group)
                    cells.append("–" if g is None else f"{g['miou']:.3f} / {g['oiou']:.3f}")
                lines.append(f"| {group} | {count} | " + " | ".join(cells) + " |")
        problems = [e for e in dataset["backends"] if e["status"] != "ok"]
        if problems:
            lines += ["", "**Not measured**", ""]
            lines += [f"- {e['label']} (`{e['target']}`): **{e['status']}** — {e['reason']}" for e in problems]
        lines.append("")
    return "\n".join(lines)


def accuracy_plot(result: dict[str, Any], path: Path) -> None:
    """mIoU and oIoU per backend, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in result["datasets"] if d.get("status") == "ok"]
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(5.5 * max(1, len(datasets)), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        ok = [e for e in dataset["backends"] if e["status"] == "ok"]
        xs = np.arange(len(ok))
        ax.bar(xs - 0.2, [e["scores"]["miou"] for e in ok], 0.4, label="mIoU")
        ax.bar(xs + 0.2, [e["scores"]["oiou"] for e in ok], 0.4, label="oIoU")
        ax.set_xticks(xs, [e["target"] for e in ok], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(dataset["name"], fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if not datasets:
        axes[0][0].text(0.5, 0.5, "no dataset evaluated", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_written(paths: dict[str, str | None], markdown: str) -> None:
    """Print the Markdown table, then (on stderr) which files were written or why the plot was not."""
    import sys

    print(markdown)
    print("\nwrote " + ", ".join(str(p) for k, p in paths.items() if p and k != "plot_error"), file=sys.stderr)
    if paths.get("plot_error"):
        print(f"plot not written: {paths['plot_error']}", file=sys.stderr)

"""Latency of the Qwen2.5-VL conditioning stage through the public embedder API.

Per image (a new frame each run): ``encode_image`` (vision tower + prefix prefill) and the first
``encode_prompts``; then, on the cached prefix, each extra prompt alone, a batch of prompts, and
the reasoning mode's stage 1 (``answer``, the generation behind ``reason``); and, for comparison,
the full prefill of one prompt without the cache (what every prompt cost before the prefix cache).
Stage 1 is timed at its bound: exactly ``reason_max_new_tokens`` generated tokens
(``min_new_tokens``), since random weights answer arbitrarily (often a stop token at once). Also records the cache's fidelity (max |cached - full| on the same prompt).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from genmask_sdk.bench.stats import summarize
from genmask_sdk.bench.system import hardware, peak_memory, versions

TARGETS = ("the red circle", "the cup on the left of the plate", "the smallest shape", "the robot's left gripper",
           "the bottle behind the bowl")
INSTRUCTION = "what could I pour water into?"


def _frame(seed: int, height: int = 480, width: int = 640) -> Image.Image:
    """A 640×480 RGB frame of smooth random colour (no two runs see the same image)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run_vlm_stage(embedder, *, runs: int = 3, extra_prompts: int = 3, batch: int = 4, full_runs: int = 2,
                  reason_runs: int = 2, warmup: bool = True, progress: bool = True, log=print) -> dict[str, Any]:
    """Time ``embedder`` (a ``QwenVLEmbedder``); return the result dict (seconds summarised in ms)."""
    from tqdm.auto import tqdm

    seconds: dict[str, list[float]] = {k: [] for k in ("image_prefix", "first_prompt", "first_total", "extra_prompt",
                                                        f"batch_{batch}", "reason", "full_prefill")}
    lengths: dict[str, Any] = {}
    if warmup:
        log("warm-up: one image, one prompt")
        embedder.encode_prompts(embedder.encode_image(_frame(999)), [TARGETS[0]])
    fidelity = []
    for run in tqdm(range(runs), desc="images", disable=not progress):
        image = _frame(run)
        t_prefix, prefix = _timed(lambda: embedder.encode_image(image))
        t_first, first = _timed(lambda: embedder.encode_prompts(prefix, [TARGETS[0]]))
        seconds["image_prefix"].append(t_prefix)
        seconds["first_prompt"].append(t_first)
        seconds["first_total"].append(t_prefix + t_first)
        lengths.update(prefix_tokens=prefix.length, image_tokens=prefix.image_tokens,
                       first_sequence_tokens=int(first.mask.sum()))
        for k in range(extra_prompts):
            seconds["extra_prompt"].append(_timed(lambda: embedder.encode_prompts(prefix, [TARGETS[1 + k % 4]]))[0])
        seconds[f"batch_{batch}"].append(
            _timed(lambda: embedder.encode_prompts(prefix, [TARGETS[k % len(TARGETS)] for k in range(batch)]))[0])
        if run < reason_runs:
            limit = embedder.reason_max_new_tokens
            t_reason, (_, tokens) = _timed(lambda: embedder.answer(prefix, INSTRUCTION, limit, min_new_tokens=limit))
            seconds["reason"].append(t_reason)
            lengths["reason_generated_tokens"] = len(tokens)
        if run < full_runs:
            t_full, full = _timed(lambda: embedder.full_prefill([image], [TARGETS[0]]))
            seconds["full_prefill"].append(t_full)
            fidelity.append(float((full.states - first.states).abs().max()))
    summary = {k: summarize(v) for k, v in seconds.items() if v}
    first_ms = summary["first_total"]["p50_ms"]
    ratios = {"extra_prompt_over_first": summary["extra_prompt"]["p50_ms"] / first_ms,
              f"batch_{batch}_over_first": summary[f"batch_{batch}"]["p50_ms"] / first_ms}
    if "reason" in summary:
        ratios["reason_over_first"] = summary["reason"]["p50_ms"] / first_ms
    if "full_prefill" in summary:
        ratios["full_prefill_over_first"] = summary["full_prefill"]["p50_ms"] / first_ms
    return {"timings": summary, "raw_seconds": seconds, "ratios": ratios, "lengths": lengths,
            "reason_max_new_tokens": embedder.reason_max_new_tokens,
            "cache_vs_full_max_abs": max(fidelity) if fidelity else None}


def benchmark_qwen(size: str = "3b", dtype: str = "float32", image_size: int = 448, device: str = "cpu",
                   **options: Any) -> dict[str, Any]:
    """Random-weight Qwen2.5-VL of ``size`` ("3b", "7b", "tiny") in ``dtype`` on ``device``, wrapped in
    ``QwenVLEmbedder`` with the fixed ``image_size`` budget, then ``run_vlm_stage``."""
    from types import SimpleNamespace

    from genmask_sdk.families.genmask.config import qwen_max_prompt_tokens
    from genmask_sdk.families.genmask.modeling.embedders.qwen import QwenVLEmbedder
    from genmask_sdk.bench.random_qwen import image_processor, qwen_config, random_qwen, word_tokenizer

    log = options.get("log", print)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    tokenizer = word_tokenizer()
    with peak_memory(device) as memory:
        start = time.perf_counter()
        log(f"building Qwen2.5-VL-{size.upper()} with random weights in {dtype}")
        model = random_qwen(qwen_config(size, tokenizer), torch_dtype).to(device)
        build_s = time.perf_counter() - start
        params = sum(p.numel() for p in model.parameters())
        log(f"{params / 1e9:.3f} B parameters, built in {build_s:.0f} s")
        pieces = SimpleNamespace(tokenizer=tokenizer, image_processor=image_processor())
        embedder = QwenVLEmbedder(model, pieces, image_size=image_size,
                                  max_prompt_tokens=qwen_max_prompt_tokens(image_size))
        result = run_vlm_stage(embedder, **options)
    settings = {k: v for k, v in options.items() if k not in ("log", "progress")}
    result.update(schema="genmask-bench/vlm-stage/1", settings=settings, device=device, model={"size": size, "dtype": dtype, "parameters": params, "weights": "random N(0, 0.02)",
                         "image_size": image_size, "build_seconds": round(build_s, 1)},
                  memory=memory, hardware=hardware(), versions=versions(),
                  created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return result


def vlm_markdown(result: dict[str, Any]) -> str:
    """A Markdown report of ``benchmark_qwen``'s result."""
    model, cpu = result["model"], result["hardware"]["cpu"]
    lines = [f"# Qwen2.5-VL-{model['size'].upper()} conditioning stage ({model['dtype']}, {model['weights']} weights)", "",
             f"- machine: {cpu.get('model')}, {cpu.get('usable_cpus')} usable CPUs, ISA flags "
             f"{', '.join(cpu.get('flags') or []) or 'none of ' + 'avx2/avx512/amx'}",
             f"- torch {result['versions'].get('torch')}, transformers {result['versions'].get('transformers')}; "
             f"{model['parameters'] / 1e9:.3f} B parameters; peak RSS {result['memory'].get('host_peak_rss_mib')} MiB",
             f"- image budget {model['image_size']}² -> {result['lengths'].get('image_tokens')} image tokens; prefix "
             f"{result['lengths'].get('prefix_tokens')} tokens; first sequence {result['lengths'].get('first_sequence_tokens')} tokens",
             f"- cached prefix vs full prefill, max |Δ| of the states: {result['cache_vs_full_max_abs']}", "",
             "| what | n | p50 ms | p90 ms | p99 ms | min ms | max ms | × first prompt |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    first = result["timings"]["first_total"]["p50_ms"]
    for key, row in result["timings"].items():
        lines.append(f"| {key} | {row['n']} | {row['p50_ms']:.0f} | {row['p90_ms']:.0f} | {row['p99_ms']:.0f} | "
                     f"{row['min_ms']:.0f} | {row['max_ms']:.0f} | {row['p50_ms'] / first:.3f} |")
    lines += ["", "first_total = image_prefix + first_prompt (a new image); extra_prompt = one more prompt on the "
              f"cached image; reason = stage 1 of reasoning mode ({result['reason_max_new_tokens']} generated tokens, "
              "the bound, forced with min_new_tokens); full_prefill = one prompt without the cache."]
    return "\n".join(lines) + "\n"

"""Analytic FLOP counts of GenMask's stages, from the ``GenMaskConfig`` alone (no tracing).

One multiply-add is 2 FLOPs. Element-wise work (norms, activations, RoPE, modulation, softmax)
and bias additions are not counted: they are a few percent at most and no peak figure covers
them. Everything is per image / per prompt and scales linearly with the batch.

**DiT** (``OneStepDiT``; D = heads·head_dim, F = ffn_dim, K = num_layers, D_txt = text_dim,
T = (R/16)² tokens per frame, N = 2·T tokens over the two frames, L = prompt tokens)::

    patch embedding   2 · T · (16·2·2) · D            image frame only (the noise frame is folded)
    text projection   2 · L · (D_txt·D + D·D)          condition_embedder.text_embedder
    per block:
      self-attn proj  2 · N · 4·D²                     q, k, v, out
      self-attn core  4 · N² · D                       Q·Kᵀ and P·V over both frames
      cross-attn proj 2 · N · 2·D²  +  2 · L · 2·D²    q, out over N tokens; k, v over L tokens
      cross-attn core 4 · N · L · D
      FFN             2 · N · 2·D·F
    output proj       2 · T · D · (16·2·2)             mask frame only

i.e. ``2 · params_matmul · tokens + K · (4·N²·D + 4·N·L·D)`` with each weight counted over the
tokens it multiplies. The time embedding, AdaLN modulation and RoPE tables are folded at export
(DESIGN.md §2) and cost nothing at run time. Real size, L = 32: R = 256 gives 1.29 TFLOP of
projections + 0.05 of attention (1.34 in all); R = 512 gives 5.13 + 0.79 (5.92). DESIGN.md §6's
rounder 5.8 + 0.8 counts the cross-attention k/v projections over all N tokens instead of L.
The real-size VAE encoder is 0.64 TFLOP useful (1.77 executed) at R = 512, 0.15 (0.44) at 256.

**VAE encoder** (Wan ``AutoencoderKLWan`` encoder at T = 1 frame, channels
C_i = base_dim·[1, *dim_mult]_i, spatial side s halving after every stage but the last)::

    conv k×k, C_in → C_out, output s×s:   2 · C_in · C_out · k² · s²
    residual block (C_in → C_out):          conv 3×3 C_in→C_out + conv 3×3 C_out→C_out
                                            (+ 1×1 shortcut when C_in ≠ C_out)
    downsample:                             conv 3×3 stride 2, output (s/2)²
    attention block (C, s):                 2·C·3C·s² + 2·C²·s² + 4·(s²)²·C
    mid block:                              res + attention + res at the last stage's width
    conv_in 3 → C_0, conv_out C_last → 2·z (3×3), quant_conv 2·z → 2·z (1×1)

These are the *useful* FLOPs: with one frame, a causal 3×3×3 convolution sees two zero-padded
frames, so only its last temporal slice touches data. diffusers' eager code executes the full 3-D
kernel, 3× the work in those convolutions (``vae_encoder_flops(..., executed=True)`` counts that);
the exported graph runs the 2-D equivalent (``genmask_sdk.families.genmask.modeling.vae.single_frame_convolutions``).

**Mask head** (linear probe): ``2 · (R/8)² · 16 · 64``.

**Embedder**: ``2 · (parameters of its Linear layers) · L + K_e · 4 · L² · D_e`` when the embedder
exposes its torch module; the tokeniser and embedding lookups are free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genmask_sdk.families.genmask.config import GenMaskConfig

DIT_FORMULA = ("2·T·64·D + 2·L·(D_txt·D + D²) + K·[2·N·(4D² + 2D² + 2DF) + 2·L·2D² + 4·N²·D + 4·N·L·D] + 2·T·D·64; "
               "T=(R/16)², N=2T")
VAE_FORMULA = "Σ_conv 2·C_in·C_out·k²·s_out² + Σ_attn (2·C·4C·s² + 4·s⁴·C), useful 2-D work at T=1 (×3 for executed 3×3×3 kernels)"
HEAD_FORMULA = "2·(R/8)²·16·64"
EMBED_FORMULA = "2·params_linear·L + layers·4·L²·D_e"


@dataclass
class FlopCount:
    """A FLOP total with its parts (``parts`` name -> FLOPs); ``total`` is their sum."""

    parts: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return float(sum(self.parts.values()))

    def scaled(self, factor: float) -> "FlopCount":
        return FlopCount({k: v * factor for k, v in self.parts.items()})

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "parts": dict(self.parts)}


def dit_flops(config: GenMaskConfig, prompt_tokens: int, batch: int = 1, resolution: int | None = None) -> FlopCount:
    """FLOPs of one ``OneStepDiT`` call on ``batch`` prompts of ``prompt_tokens`` tokens each
    (module docstring for the formula)."""
    tf = config.transformer
    r = resolution or config.resolution
    d = int(tf["num_attention_heads"]) * int(tf["attention_head_dim"])
    f, k, d_txt = int(tf["ffn_dim"]), int(tf["num_layers"]), int(tf["text_dim"])
    pt, ph, pw = tf.get("patch_size", (1, 2, 2))
    patch = pt * ph * pw * int(tf["in_channels"])
    out = pt * ph * pw * int(tf["out_channels"])
    t = (r // (8 * ph)) * (r // (8 * pw))
    n, l = 2 * t, int(prompt_tokens)
    parts = {
        "patch_embedding": 2.0 * t * patch * d,
        "text_projection": 2.0 * l * (d_txt * d + d * d),
        "self_attention_projections": k * 2.0 * n * 4 * d * d,
        "self_attention_core": k * 4.0 * n * n * d,
        "cross_attention_projections": k * (2.0 * n * 2 * d * d + 2.0 * l * 2 * d * d),
        "cross_attention_core": k * 4.0 * n * l * d,
        "ffn": k * 2.0 * n * 2 * d * f,
        "output_projection": 2.0 * t * d * out,
    }
    return FlopCount(parts).scaled(batch)


def vae_encoder_flops(config: GenMaskConfig, batch: int = 1, resolution: int | None = None,
                      executed: bool = False) -> FlopCount:
    """FLOPs of the VAE encoder on ``batch`` images at the engine resolution (module docstring).

    ``executed=True`` counts the full 3×3×3 causal kernels as eager diffusers runs them (3× the
    useful work in those convolutions; the exported graph runs the 2-D equivalent)."""
    vae = config.vae
    if vae.get("is_residual"):
        raise NotImplementedError("FLOPs of the residual (Wan2.2) VAE encoder are not modelled")
    if vae.get("patch_size"):
        raise NotImplementedError("FLOPs of a patchified VAE encoder are not modelled")
    r = resolution or config.resolution
    base, mult = int(vae["base_dim"]), [int(m) for m in vae["dim_mult"]]
    nres, z = int(vae["num_res_blocks"]), int(vae.get("z_dim", 16))
    attn_scales = [float(a) for a in vae.get("attn_scales", [])]
    causal = 3 if executed else 1  # temporal kernel slices actually multiplied, per 3×3×3 kernel
    dims = [base * m for m in [1, *mult]]
    parts = {"convolutions": 0.0, "attention": 0.0}

    def conv(cin: int, cout: int, k: int, side: int, temporal: int = 1) -> None:
        parts["convolutions"] += 2.0 * cin * cout * k * k * side * side * temporal

    def res_block(cin: int, cout: int, side: int) -> None:
        conv(cin, cout, 3, side, causal)
        conv(cout, cout, 3, side, causal)
        if cin != cout:
            conv(cin, cout, 1, side)

    def attention(c: int, side: int) -> None:
        conv(c, 3 * c, 1, side)
        conv(c, c, 1, side)
        parts["attention"] += 4.0 * (side * side) ** 2 * c

    side = r
    conv(3, dims[0], 3, side, causal)  # conv_in
    scale = 1.0
    for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        for _ in range(nres):
            res_block(cin, cout, side)
            if scale in attn_scales:
                attention(cout, side)
            cin = cout
        if i != len(mult) - 1:
            side //= 2
            conv(cout, cout, 3, side)  # stride-2 downsample (the temporal conv does not run at T=1)
            scale /= 2.0
    width = dims[-1]
    res_block(width, width, side)  # mid block
    attention(width, side)
    res_block(width, width, side)
    conv(width, 2 * z, 3, side, causal)  # conv_out
    conv(2 * z, 2 * z, 1, side)  # quant_conv
    return FlopCount(parts).scaled(batch)


def mask_head_flops(config: GenMaskConfig, batch: int = 1, resolution: int | None = None) -> FlopCount:
    """FLOPs of the linear-probe mask head; the optional VAE-decoder head is not modelled."""
    r = resolution or config.resolution
    z = int(config.vae.get("z_dim", 16))
    return FlopCount({"linear_probe": 2.0 * (r // 8) ** 2 * z * 64}).scaled(batch)


def embedder_flops(embedder: Any, prompt_tokens: int, batch: int = 1) -> FlopCount | None:
    """Approximate FLOPs of the instruction embedder on ``batch`` prompts of ``prompt_tokens``
    tokens, from its torch module (``embedder.model``); None when it exposes none."""
    import torch

    module = getattr(embedder, "model", None)
    if not isinstance(module, torch.nn.Module):
        return None
    linear = sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))
    config = getattr(module, "config", None)
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    width = int(getattr(config, "hidden_size", 0) or 0)
    l = int(prompt_tokens)
    parts = {"linear": 2.0 * linear * l, "attention_core": layers * 4.0 * l * l * width}
    return FlopCount(parts).scaled(batch)

"""The Wan DiT forward pass as GenMask uses it, on diffusers' unchanged ``WanTransformer3DModel``.

Why not call ``transformer(...)`` directly: diffusers' block passes no attention mask to the
cross-attention, so padded prompts would change the result, and its per-token timestep path
materialises a (B, L, 6, D) modulation table. Here the same modules and parameters run with

* a key mask on the cross-attention (padded prompt tokens are ignored), and
* timesteps given **per frame** (B, F): every token of a frame shares its frame's value. This is
  the per-token timestep of DESIGN.md §2 (0 for the image frame, t for the mask frame) with the
  modulation broadcast over a frame axis instead of copied per token.

Attention is ``attention`` below: diffusers' ``WanAttnProcessor`` arithmetic on the same modules,
written so that the exported graph stays lean for every runtime (ONNX Runtime, OpenVINO, TensorRT):
the rotary embedding interleaves its two halves with ``stack`` + ``flatten`` instead of strided
index assignment (which exports as ScatterND), the RoPE tables are pre-sliced to the halves each
uses, and the prompt key mask is an additive bias (0 / dtype minimum) rather than a boolean mask
(whose export adds a NaN repair after every softmax). Masked keys get exactly zero weight either way.

``tests/test_model.py`` checks this against diffusers' own forward with 2-D per-token timesteps.

Shapes: latents (B, C=16, F, h, w) with h, w even; tokens are ordered frame-major
(f, h/2, w/2) exactly as ``patch_embedding(...).flatten(2)`` orders them.

Precision: the residual stream, norms, AdaLN modulation and time embedding are always float32;
the Linear/Conv layers run in the weights' dtype. Casting the transformer to float16 therefore
gives mixed precision by construction (what the fp16 ONNX export traces). For float32 weights
this is diffusers' arithmetic exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from diffusers import WanTransformer3DModel


class FrameModulation(NamedTuple):
    """Time conditioning per frame.

    temb: (B|1, F, 1, D) float32, input of the output norm modulation.
    proj: (B|1, F, 1, 6, D) float32, input of every block's AdaLN modulation.
    """

    temb: torch.Tensor
    proj: torch.Tensor


def frame_modulation(transformer: WanTransformer3DModel, frame_timesteps: torch.Tensor) -> FrameModulation:
    """Time embedding of per-frame timesteps ``frame_timesteps`` (B, F), values in [0, 1000]."""
    embedder = transformer.condition_embedder
    batch, frames = frame_timesteps.shape
    sinusoid = embedder.timesteps_proj(frame_timesteps.reshape(-1))
    weight_dtype = next(iter(embedder.time_embedder.parameters())).dtype
    temb = embedder.time_embedder(sinusoid.to(weight_dtype))
    proj = embedder.time_proj(embedder.act_fn(temb))
    dim = temb.shape[-1]
    return FrameModulation(
        temb=temb.float().reshape(batch, frames, 1, dim),
        proj=proj.float().reshape(batch, frames, 1, 6, dim),
    )


def rope_tables(transformer: WanTransformer3DModel, frames: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan's real-valued 3-D RoPE as the halves ``rotate`` uses: (cos[..., 0::2], sin[..., 1::2]),
    each (1, F·h/2·w/2, 1, head_dim / 2) float32 (diffusers' tables hold each value twice)."""
    buffer = transformer.rope.freqs_cos
    shape_probe = torch.empty((1, 1, frames, height, width), device=buffer.device, dtype=torch.float32)
    cos, sin = transformer.rope(shape_probe)
    return cos[..., 0::2].contiguous(), sin[..., 1::2].contiguous()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x (B, L, H, Dh) with the ``rope_tables`` halves: the pairs (x[2i],
    x[2i+1]) rotate by the token's angle — diffusers' ``apply_rotary_emb`` without index assignment."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2).type_as(x)


def attention(attn, hidden: torch.Tensor, context: torch.Tensor | None = None, key_bias: torch.Tensor | None = None,
              rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``WanAttention`` (text-to-video layout: no added image K/V, unfused projections) on hidden
    (B, T, D): self-attention with ``rope`` when ``context`` is None, else cross-attention to
    context (B, L, D) with the additive ``key_bias`` (B, 1, 1, L) (``cross_attention_mask``)."""
    if attn.add_k_proj is not None or attn.fused_projections:  # layouts GenMask does not use: diffusers' own path
        mask = None if key_bias is None else key_bias == 0
        return attn(hidden, context, mask, None if rope is None else _full_rope(rope))
    source = hidden if context is None else context
    query, key, value = attn.to_q(hidden), attn.to_k(source), attn.to_v(source)
    query, key = attn.norm_q(query), attn.norm_k(key)
    query, key, value = (t.unflatten(2, (attn.heads, -1)) for t in (query, key, value))
    if rope is not None:
        query, key = rotate(query, *rope), rotate(key, *rope)
    bias = None if key_bias is None else key_bias.to(query.dtype)
    out = torch.nn.functional.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2),
                                                           value.transpose(1, 2), attn_mask=bias)
    out = out.transpose(1, 2).flatten(2, 3).type_as(query)
    return attn.to_out[1](attn.to_out[0](out))


def _full_rope(rope: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The halves back to diffusers' (cos, sin) layout (each value repeated for its pair)."""
    return tuple(t.repeat_interleave(2, dim=-1) for t in rope)


def weight_dtype(transformer: WanTransformer3DModel) -> torch.dtype:
    return transformer.proj_out.weight.dtype


def patch_tokens(transformer: WanTransformer3DModel, latents: torch.Tensor) -> torch.Tensor:
    """Patch embedding: latents (B, 16, F, h, w) -> float32 tokens (B, F·h/2·w/2, D)."""
    embedded = transformer.patch_embedding(latents.to(weight_dtype(transformer)))
    return embedded.flatten(2).transpose(1, 2).float().contiguous()


def context_states(transformer: WanTransformer3DModel, context: torch.Tensor) -> torch.Tensor:
    """Project embedder states (B, L, text_dim) to the DiT width (B, L, D), weights' dtype."""
    return transformer.condition_embedder.text_embedder(context.to(weight_dtype(transformer)))


def cross_attention_mask(context_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Key mask (B, L) bool (True = real token) -> additive SDPA bias (B, 1, 1, L) float32: 0 for
    real tokens, the float32 minimum for padding (exactly zero attention weight after softmax)."""
    if context_mask is None:
        return None
    keep = context_mask.to(torch.bool)[:, None, None, :]
    return torch.where(keep, 0.0, torch.finfo(torch.float32).min).to(torch.float32)


def _modulate(normed: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, frames: int) -> torch.Tensor:
    """``normed * (1 + scale) + shift`` with (B|1, F, 1, D) modulation broadcast per frame."""
    batch, tokens, dim = normed.shape
    framed = normed.reshape(batch, frames, tokens // frames, dim)
    return (framed * (1 + scale) + shift).reshape(batch, tokens, dim)


def _gate(residual: torch.Tensor, update: torch.Tensor, gate: torch.Tensor, frames: int) -> torch.Tensor:
    """``residual + update * gate`` in float32, gate (B|1, F, 1, D) broadcast per frame."""
    batch, tokens, dim = residual.shape
    framed = update.float().reshape(batch, frames, tokens // frames, dim) * gate
    return residual.float() + framed.reshape(batch, tokens, dim)


def block_forward(block, hidden, context, attn_mask, proj, rope, frames: int) -> torch.Tensor:
    """One ``WanTransformerBlock`` (diffusers' arithmetic) with a cross-attention key mask.

    hidden (B, F·T, D) float32 residual stream; context (B, L, D) projected; attn_mask
    (B, 1, 1, L) additive bias (``cross_attention_mask``) or None; proj (B|1, F, 1, 6, D) float32;
    rope = the ``rope_tables`` halves (cos, sin).
    """
    compute = block.ffn.net[2].weight.dtype
    table = block.scale_shift_table.float().reshape(1, 1, 1, 6, -1)
    shift_msa, scale_msa, gate_msa, c_shift, c_scale, c_gate = (table + proj).unbind(dim=3)

    normed = _modulate(block.norm1(hidden.float()), scale_msa, shift_msa, frames).to(compute)
    hidden = _gate(hidden, attention(block.attn1, normed, rope=rope), gate_msa, frames)

    normed = block.norm2(hidden.float()).to(compute)
    hidden = hidden + attention(block.attn2, normed, context, attn_mask).float()

    normed = _modulate(block.norm3(hidden.float()), c_scale, c_shift, frames).to(compute)
    return _gate(hidden, block.ffn(normed), c_gate, frames)


def output_projection(transformer: WanTransformer3DModel, hidden: torch.Tensor, temb: torch.Tensor, frames: int) -> torch.Tensor:
    """Final AdaLN + ``proj_out``: hidden (B, F·T, D), temb (B|1, F, 1, D) -> (B, F·T, 16·4)."""
    shift, scale = (transformer.scale_shift_table.float().reshape(1, 1, 2, -1) + temb).chunk(2, dim=2)
    normed = _modulate(transformer.norm_out(hidden.float()), scale, shift, frames)
    return transformer.proj_out(normed.to(weight_dtype(transformer))).float()


def unpatchify(tokens: torch.Tensor, frames: int, height: int, width: int, patch=(1, 2, 2)) -> torch.Tensor:
    """Tokens (B, F·h/2·w/2, pt·ph·pw·C) -> latents (B, C, F, h, w), diffusers' ordering."""
    p_t, p_h, p_w = patch
    batch = tokens.shape[0]
    grid = tokens.reshape(batch, frames // p_t, height // p_h, width // p_w, p_t, p_h, p_w, -1)
    return grid.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)


def wan_velocity(
    transformer: WanTransformer3DModel,
    latents: torch.Tensor,
    frame_timesteps: torch.Tensor,
    context: torch.Tensor,
    context_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Velocity prediction for all frames (training path).

    Args:
        latents: (B, 16, F, h, w) normalised latents; frame 0 the clean image for segmentation.
        frame_timesteps: (B, F) DiT timestep values in [0, 1000] (``1000 * t``), one per frame.
        context: (B, L, text_dim) embedder states.
        context_mask: (B, L) bool, True for real tokens; None means all real.
    Returns:
        (B, 16, F, h, w) float32 velocity.
    """
    _, _, frames, height, width = latents.shape
    rope = rope_tables(transformer, frames, height, width)
    hidden = patch_tokens(transformer, latents)
    modulation = frame_modulation(transformer, frame_timesteps)
    ctx = context_states(transformer, context)
    mask = cross_attention_mask(context_mask)
    for block in transformer.blocks:
        hidden = block_forward(block, hidden, ctx, mask, modulation.proj, rope, frames)
    out = output_projection(transformer, hidden, modulation.temb, frames)
    return unpatchify(out, frames, height, width, tuple(transformer.config.patch_size))


class OneStepDiT(torch.nn.Module):
    """GenMask's one-step DiT with everything that depends only on t*, ε* and R folded.

    Constants (registered as buffers, so an ONNX export stores them as initialisers):
    the mask frame's noisy latent x_t* = t*·ε* and its patch tokens, the two frames' time
    modulations (image frame t = 0, mask frame t = t*) and the RoPE tables.

    forward(z_img (B, 16, h, w) float32 normalised latent, context (B, L, text_dim) float32,
    context_mask (B, L) bool) -> x0_hat (B, 16, h, w) float32, the predicted clean mask latent
    ``x_t* − t*·v``.

    The constants are computed from the transformer's weights at construction: rebuild this
    module after changing those weights.
    """

    def __init__(self, transformer: WanTransformer3DModel, noise: torch.Tensor, t_star: float) -> None:
        super().__init__()
        self.transformer = transformer
        self.t_star = float(t_star)
        _, _, height, width = noise.shape
        self.latent_hw = (height, width)
        param = next(transformer.parameters())
        with torch.no_grad():
            x_t = (self.t_star * noise).to(param.device, param.dtype)
            timesteps = torch.tensor([[0.0, 1000.0 * self.t_star]], device=param.device)
            modulation = frame_modulation(transformer, timesteps)
            cos, sin = rope_tables(transformer, 2, height, width)
            noise_tokens = patch_tokens(transformer, x_t[:, :, None])
        self.register_buffer("x_t", x_t, persistent=False)
        self.register_buffer("noise_tokens", noise_tokens, persistent=False)
        self.register_buffer("block_proj", modulation.proj, persistent=False)
        self.register_buffer("mask_frame_temb", modulation.temb[:, 1:], persistent=False)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, z_img: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        tf = self.transformer
        batch = z_img.shape[0]
        height, width = self.latent_hw
        image_tokens = patch_tokens(tf, z_img[:, :, None])
        hidden = torch.cat([image_tokens, self.noise_tokens.expand(batch, -1, -1)], dim=1)
        ctx = context_states(tf, context)
        mask = cross_attention_mask(context_mask)
        rope = (self.rope_cos, self.rope_sin)
        for block in tf.blocks:
            hidden = block_forward(block, hidden, ctx, mask, self.block_proj, rope, 2)
        mask_tokens = hidden[:, image_tokens.shape[1]:]
        out = output_projection(tf, mask_tokens, self.mask_frame_temb, 1)
        velocity = unpatchify(out, 1, height, width, tuple(tf.config.patch_size))[:, :, 0]
        return self.x_t - self.t_star * velocity

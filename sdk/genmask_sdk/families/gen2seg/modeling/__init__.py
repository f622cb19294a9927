"""gen2seg (PyTorch reference): one-step instance colouring with SD 2 or ViT-MAE (DESIGN.md §2b).

Our own implementation from the paper and notes/gen2seg.md (the upstream code has no licence).

    from genmask_sdk.families.gen2seg.modeling import load_gen2seg
    model = load_gen2seg("reachomk/gen2seg-sd")          # or a local directory
    colours = model.colorize("photo.jpg")                 # (H, W, 3) uint8
"""

from genmask_sdk.families.gen2seg.config import CONFIG_NAME, Gen2SegConfig
from genmask_sdk.families.gen2seg.modeling.loading import (
    KNOWN_HUB_IDS,
    detect_variant,
    load_gen2seg,
    load_mae,
    load_sd,
    resolve_source,
)
from genmask_sdk.families.gen2seg.modeling.mae import Gen2SegMAE, MAEColorStage, unpatchify
from genmask_sdk.families.gen2seg.modeling.processing import (
    SDInput,
    min_max_gamma,
    min_max_sd,
    preprocess_mae,
    preprocess_sd,
    resize_to_original,
    unpad,
)
from genmask_sdk.families.gen2seg.modeling.schedule import (
    alphas_cumprod,
    one_step_inference_timestep,
    x0_clip,
    x0_coefficients,
)
from genmask_sdk.families.gen2seg.modeling.sd import (
    Gen2SegSD,
    SDDecoderStage,
    SDEncoderStage,
    SDUNetStage,
    empty_prompt_embedding,
)

__all__ = [
    "CONFIG_NAME", "Gen2SegConfig", "Gen2SegMAE", "Gen2SegSD", "KNOWN_HUB_IDS", "MAEColorStage", "SDDecoderStage",
    "SDEncoderStage", "SDInput", "SDUNetStage", "alphas_cumprod", "detect_variant", "empty_prompt_embedding",
    "load_gen2seg", "load_mae", "load_sd", "min_max_gamma", "min_max_sd", "one_step_inference_timestep",
    "preprocess_mae", "preprocess_sd", "resize_to_original", "resolve_source", "unpad", "unpatchify",
    "x0_clip", "x0_coefficients",
]

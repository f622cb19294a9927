"""gen2seg instance colour maps on the host: point prompts and *segment everything*.

numpy only; OpenCV contrib (``pip install 'genmask-sdk[instance]'``) is imported when a prompt
is refined (``PromptConfig(refine=True)``, the default), never at import time. No torch.
"""

from genmask_sdk.families.gen2seg.everything import InstanceMask, segment_everything
from genmask_sdk.families.gen2seg.prompts import PromptConfig, point_prompt_mask, query_color, similarity

__all__ = ["InstanceMask", "PromptConfig", "point_prompt_mask", "query_color", "segment_everything", "similarity"]

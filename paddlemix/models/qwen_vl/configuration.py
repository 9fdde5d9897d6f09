"""Qwen-VL's configuration: PaddleNLP's QWen LLM config plus a ``visual`` dict, and named presets.

The ``visual`` keys follow the Hugging Face Qwen-VL ``config.json`` (``width``, ``layers``,
``heads``, ``mlp_ratio``, ``image_size``, ``patch_size``, ``output_dim``, ``image_start_id``) with
two additions that the published code hard-codes: ``n_queries`` (the resampler's learned queries,
which is also the number of ids an image occupies between ``<img>`` and ``</img>``) and
``pos_embed_size`` (rows of the ViT's learned positional table; 256 = a 16x16 grid, resized to the
patch grid at run time).
"""

import copy
import math
from typing import Any, Dict, Optional

from paddlenlp.transformers.qwen.configuration import QWenConfig

from paddlemix.processors.special_tokens import CHAT_STOP_IDS, ENDOFTEXT_ID, IMG_START_ID

__all__ = ["QWenVLConfig", "get_preset", "PRESETS"]

DEFAULT_VISUAL: Dict[str, Any] = {
    "width": 1664,
    "layers": 48,
    "heads": 16,
    "mlp_ratio": 4.9231,
    "image_size": 448,
    "patch_size": 14,
    "n_queries": 256,
    "output_dim": 4096,
    "pos_embed_size": 256,
    "image_start_id": IMG_START_ID,
}


class QWenVLConfig(QWenConfig):
    """QWen LLM hyper-parameters (see PaddleNLP's ``QWenConfig``) plus the vision tower's ``visual``."""

    model_type = "qwen_vl"

    def __init__(
        self,
        visual: Optional[Dict[str, Any]] = None,
        seq_length: int = 2048,
        pad_token_id: int = ENDOFTEXT_ID,
        bos_token_id: int = ENDOFTEXT_ID,
        eos_token_id=CHAT_STOP_IDS,
        **kwargs,
    ):
        # ``eos_token_id`` is a list so PaddleNLP's generate stops at any of the chat stop ids.
        super().__init__(
            seq_length=seq_length,
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=list(eos_token_id) if isinstance(eos_token_id, (list, tuple)) else eos_token_id,
            **kwargs,
        )
        unknown = set(visual or {}) - set(DEFAULT_VISUAL)
        if unknown:
            raise ValueError(
                f"unknown keys in QWenVLConfig.visual: {sorted(unknown)}; expected {sorted(DEFAULT_VISUAL)}"
            )
        self.visual = {**DEFAULT_VISUAL, **(visual or {})}
        self._check()

    def _check(self):
        if self.hidden_size != self.num_attention_heads * self.kv_channels:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must equal num_attention_heads ({self.num_attention_heads})"
                f" * kv_channels ({self.kv_channels}) for PaddleNLP's QWen attention"
            )
        v = self.visual
        if v["output_dim"] != self.hidden_size:
            raise ValueError(
                f"visual.output_dim ({v['output_dim']}) must equal the LLM hidden_size ({self.hidden_size})"
            )
        if v["width"] % v["heads"]:
            raise ValueError(f"visual.width ({v['width']}) must be divisible by visual.heads ({v['heads']})")
        if v["output_dim"] % self.resampler_heads:
            raise ValueError(
                f"visual.output_dim ({v['output_dim']}) must be divisible by the resampler's head count"
                f" ({self.resampler_heads} = output_dim // 128)"
            )
        for key in ("n_queries", "pos_embed_size"):
            if math.isqrt(v[key]) ** 2 != v[key]:
                raise ValueError(f"visual.{key} ({v[key]}) must be a square number (a square grid)")
        if v["image_size"] % v["patch_size"]:
            raise ValueError(
                f"visual.image_size ({v['image_size']}) must be a multiple of patch_size ({v['patch_size']})"
            )

    # Ids an image occupies in text, and the special ids around it.
    @property
    def image_span(self) -> int:
        return self.visual["n_queries"]

    @property
    def img_start_id(self) -> int:
        return self.visual["image_start_id"]

    @property
    def img_end_id(self) -> int:
        return self.visual["image_start_id"] + 1

    @property
    def img_pad_id(self) -> int:
        return self.visual["image_start_id"] + 2

    @property
    def resampler_heads(self) -> int:
        # The published resampler uses 128-wide heads (4096 // 128 = 32); a tiny model keeps >= 1 head.
        return max(1, self.visual["output_dim"] // 128)


# Qwen-VL-Chat as published (config.json of Qwen/Qwen-VL-Chat) and a tiny model of the same
# architecture for tests and CPU demos. The tiny image is 224/14 = a 16x16 patch grid, so, as in the
# real model (16x16 table -> 32x32 grid), both the ViT positional table (8x8) and the resampler's
# key positions (8x8) are resized at run time.
PRESETS: Dict[str, Dict[str, Any]] = {
    "qwen-vl-chat-7b": dict(
        vocab_size=151936,
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        kv_channels=128,
        intermediate_size=22016,
        layer_norm_epsilon=1e-6,
        rotary_emb_base=10000,
        rotary_pct=1.0,
        seq_length=2048,
        max_position_embeddings=8192,
        use_dynamic_ntk=True,
        use_logn_attn=True,
        no_bias=True,
        tie_word_embeddings=False,
        visual=dict(DEFAULT_VISUAL),
    ),
}
# The tiny model keeps every architectural switch of the published one and shrinks only the sizes.
PRESETS["tiny"] = dict(
    copy.deepcopy(PRESETS["qwen-vl-chat-7b"]),
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    kv_channels=32,
    intermediate_size=512,
    visual=dict(
        DEFAULT_VISUAL,
        width=64,
        layers=2,
        heads=4,
        image_size=224,
        patch_size=14,
        n_queries=64,
        output_dim=128,
        pos_embed_size=64,
    ),
)
# The CPU demo's model: ``tiny`` at half the width and three times the depth. With the real
# 151,936-id vocabulary the LM head and its softmax cost most of a small model's step, and that cost
# grows with the width, so the narrower model takes more optimizer steps in the demo's time budget;
# decoder layers at this width are cheap, and 6 layers of 4 heads fit the demo data better than 2
# of 2 (docs/RESULTS.md, "What was tried").
PRESETS["demo"] = dict(
    copy.deepcopy(PRESETS["tiny"]),
    hidden_size=64,
    num_hidden_layers=6,  # tiny's 4 heads, each 16 wide
    kv_channels=16,
    intermediate_size=256,
    # The published initialisation std (0.02) is for width 4096: at width 64 it makes every attention
    # score near zero and slows learning which token to attend to. This keeps std * sqrt(width) as at
    # 4096 (0.02 * 8 = 0.16); docs/GROUNDING_RUNS.md, "Third attempt", measures what it changes.
    initializer_range=0.02 * (4096 / 64) ** 0.5,
    visual=dict(PRESETS["tiny"]["visual"], output_dim=64),
)


def get_preset(name: str, **overrides) -> QWenVLConfig:
    """A named configuration (``qwen-vl-chat-7b``, ``tiny`` or ``demo``); keyword overrides replace fields,
    and ``visual=`` is merged into the preset's visual dict."""
    if name not in PRESETS:
        raise KeyError(f"unknown Qwen-VL preset {name!r}; known: {sorted(PRESETS)}")
    kwargs = copy.deepcopy(PRESETS[name])
    visual = {**kwargs.pop("visual"), **overrides.pop("visual", {})}
    kwargs.update(overrides)
    return QWenVLConfig(visual=visual, architectures=["QWenVLForCausalLM"], **kwargs)

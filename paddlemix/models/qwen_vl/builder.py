"""The one place that builds Qwen-VL: a preset or a checkpoint's model, its tokenizer, and what inference loads.

Training, inference, serving, LoRA merging and checkpoint initialisation all come through here, so
"a checkpoint's tokenizer, else the default Qwen vocabulary" and "a seeded preset" mean one thing.
The error messages name the training config's keys (``model_preset``, ``model_name_or_path``),
which is where a user sets these.
"""

import os
from typing import Optional, Sequence, Union

import paddle

from paddlemix.processors.image_processing import QWenVLImageProcessor

from .configuration import QWenVLConfig, get_preset
from .modeling import QWenVLForCausalLM
from .tokenizer import QWenVLTokenizer

__all__ = [
    "RESAMPLER_INITS",
    "check_resampler_init",
    "check_source",
    "load_config",
    "build_model",
    "load_tokenizer",
    "load_model",
]

RESAMPLER_INITS = ("random", "spatial", "layout")
TOKENIZER_CONFIG = "tokenizer_config.json"


def check_resampler_init(resampler_init: str) -> None:
    """Raise unless ``resampler_init`` is one of :data:`RESAMPLER_INITS`."""
    if resampler_init not in RESAMPLER_INITS:
        raise ValueError(f"resampler_init must be one of {', '.join(RESAMPLER_INITS)}, got {resampler_init!r}")


def check_source(preset: Optional[str], checkpoint: Optional[str], resampler_init: str = "random") -> None:
    """Raise unless exactly one of ``preset`` and ``checkpoint`` (a directory with a config.json) is
    given, and ``resampler_init`` is known and asked of a preset only."""
    if bool(checkpoint) == bool(preset):
        raise ValueError("set exactly one of model_name_or_path (a checkpoint) or model_preset (random init)")
    if checkpoint and not os.path.isfile(os.path.join(checkpoint, "config.json")):
        raise FileNotFoundError(f"checkpoint {checkpoint}: no config.json there (expected a model directory)")
    check_resampler_init(resampler_init)
    if resampler_init != "random" and not preset:
        raise ValueError(
            f"resampler_init {resampler_init!r} initialises a model_preset; {checkpoint} keeps its own weights"
        )


def load_config(preset: Optional[str] = None, checkpoint: Optional[str] = None) -> QWenVLConfig:
    """The configuration of ``preset`` or of the ``checkpoint`` directory, without building weights."""
    check_source(preset, checkpoint)
    return get_preset(preset) if preset else QWenVLConfig.from_pretrained(checkpoint)


def build_model(
    preset: Optional[str] = None,
    checkpoint: Optional[str] = None,
    seed: Optional[int] = None,
    resampler_init: str = "random",
    dtype: Optional[str] = None,
) -> QWenVLForCausalLM:
    """``preset`` initialised at random after ``paddle.seed(seed)`` (the resampler's queries laid out
    by :meth:`Resampler.init_spatial` if ``resampler_init="spatial"``, and the ViT's positional
    table smooth too if ``"layout"``: :meth:`QWenVisionTransformer.init_layout`), or the weights of
    ``checkpoint`` in ``dtype`` (default: as saved; load a large model in its training dtype, since a
    7B model read as float32 first needs ~38 GB)."""
    check_source(preset, checkpoint, resampler_init)
    if checkpoint:
        return QWenVLForCausalLM.from_pretrained(checkpoint, **({"dtype": dtype} if dtype else {}))
    if seed is not None:
        paddle.seed(seed)
    model = QWenVLForCausalLM(get_preset(preset))
    if resampler_init == "spatial":
        model.transformer.visual.attn_pool.init_spatial()
    elif resampler_init == "layout":
        model.transformer.visual.init_layout()
    return model


def load_tokenizer(checkpoint_dirs: Union[None, str, Sequence[Optional[str]]], image_span: int) -> QWenVLTokenizer:
    """The tokenizer saved in the first of ``checkpoint_dirs`` that holds one, else the default Qwen
    vocabulary with ``image_span`` ids per image (the model's ``visual.n_queries``)."""
    dirs = [checkpoint_dirs] if isinstance(checkpoint_dirs, str) else list(checkpoint_dirs or [])
    for directory in dirs:
        if directory and os.path.isfile(os.path.join(directory, TOKENIZER_CONFIG)):
            return QWenVLTokenizer.from_pretrained(directory)
    return QWenVLTokenizer(image_span=image_span)


def load_model(checkpoint: str, dtype: Optional[str] = None):
    """``(model, tokenizer, image_processor)`` for inference from a checkpoint directory written by
    training or conversion; the model in eval mode, in ``dtype`` if given."""
    if not os.path.isdir(checkpoint):
        raise FileNotFoundError(f"checkpoint directory {checkpoint} not found")
    model = build_model(checkpoint=checkpoint, dtype=dtype)
    model.eval()
    tokenizer = load_tokenizer(checkpoint, model.config.image_span)
    return model, tokenizer, QWenVLImageProcessor.from_config(model.config)

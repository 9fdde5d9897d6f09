"""Qwen-VL(-Chat) on PaddlePaddle: the model BiRD fine-tunes.

Names are imported on first use, so ``import paddlemix.models.qwen_vl.tokenizer`` (or this package)
does not build paddle's model stack until a model class is asked for.
"""

import importlib

_EXPORTS = {
    "QWenVLConfig": "configuration",
    "get_preset": "configuration",
    "PRESETS": "configuration",
    "QWenVisionTransformer": "vision",
    "Resampler": "vision",
    "QWenVLPretrainedModel": "modeling",
    "QWenVLModel": "modeling",
    "QWenVLForCausalLM": "modeling",
    "generate_batch": "generation",
    "left_padded_batch": "generation",
    "build_model": "builder",
    "load_model": "builder",
    "load_tokenizer": "builder",
    "convert_checkpoint": "convert",
    "ConversionError": "convert",
    "QWenVLTokenizer": "tokenizer",
}
# ``chat`` lives in ``paddlemix.models.qwen_vl.chat`` (same name as its module, so not re-exported).

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

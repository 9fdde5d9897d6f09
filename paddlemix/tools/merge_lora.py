"""Merge LoRA adapters from a LoRA training run into a plain Qwen-VL checkpoint.

    python -m paddlemix.tools.merge_lora --lora_dir OUTPUT_DIR [--base_model DIR] --output_dir MERGED

A LoRA run of ``supervised_finetune`` (``"lora": true``) saves only what it trained
(``lora_config.json`` + ``lora_model_state.pdparams``), in its ``output_dir`` and in every
``checkpoint-N``. Its ``lora_config.json`` records the base model in ``base_model_name_or_path``:
the ``model_name_or_path`` the run started from, or ``<output_dir>/base_model`` (written by the run)
for a randomly initialised preset. ``--base_model`` overrides it, e.g. after moving the files.

Each adapted linear layer ``y = x W + (x A B) * scaling`` becomes ``W' = W + A B * scaling`` (added in
float32, stored in the base dtype). The result has the base model's config, the merged weights and
the run's tokenizer files, and loads with ``QWenVLForCausalLM.from_pretrained`` and
``paddlemix.models.qwen_vl.builder.load_model``.
"""

import argparse
import math
import os
import re
import sys
from typing import Dict, List, Optional

LORA_CONFIG_NAME = "lora_config.json"
LORA_WEIGHTS_NAME = "lora_model_state.pdparams"


def merge_lora_weights(model, lora_state: Dict[str, "object"], lora_config) -> List[str]:
    """Fold the adapters in ``lora_state`` (keys ``<layer>.lora_A`` [in, r] / ``<layer>.lora_B`` [r, out],
    as saved by PaddleNLP's ``LoRAModel``) into ``model``'s weights in place. Any other key in
    ``lora_state`` (a module trained alongside the adapters) replaces the model's tensor. Returns the
    merged layer names; raises if an adapter is incomplete, matches no layer, or if a layer the
    config targets has no adapter."""
    import paddle

    if getattr(lora_config, "pissa", False):
        raise NotImplementedError(
            "PiSSA adapters rewrite the frozen base weights during training; merging them is not supported"
        )
    if (getattr(lora_config, "tensor_parallel_degree", -1) or -1) > 1:
        raise NotImplementedError(
            "merge tensor-parallel LoRA shards into one file first (LoRAModel merge_tensor_parallel)"
        )
    scaling = lora_config.lora_alpha / (math.sqrt(lora_config.r) if lora_config.rslora else lora_config.r)
    targets = lora_config.target_modules
    targets = [targets] if isinstance(targets, str) else list(targets or [])
    params = dict(model.state_dict())

    layers = sorted({k.rsplit(".", 1)[0] for k in lora_state if k.endswith((".lora_A", ".lora_B"))})
    targeted = sorted(n for n, _ in model.named_sublayers() if any(re.fullmatch(t, n) for t in targets))
    if layers != targeted:
        raise ValueError(
            f"the adapters do not fit this base model: layers the LoRA config targets without an adapter "
            f"{sorted(set(targeted) - set(layers))}, adapters for layers it does not have or target "
            f"{sorted(set(layers) - set(targeted))}"
        )

    for layer in layers:
        weight = params.get(f"{layer}.weight")
        a, b = lora_state.get(f"{layer}.lora_A"), lora_state.get(f"{layer}.lora_B")
        if a is None or b is None:
            raise ValueError(f"adapter of {layer} is incomplete: lora_A {'found' if a is not None else 'missing'}, "
                             f"lora_B {'found' if b is not None else 'missing'}")
        if weight is None or a.shape[0] != weight.shape[0] or b.shape[1] != weight.shape[1] or a.shape[1] != b.shape[0]:
            raise ValueError(
                f"{layer}: lora_A {list(a.shape)} @ lora_B {list(b.shape)} does not fit the base weight "
                f"{None if weight is None else list(weight.shape)}"
            )
        delta = paddle.matmul(a.astype("float32"), b.astype("float32")) * scaling  # [in, out]
        weight.set_value((weight.astype("float32") + delta).astype(weight.dtype))

    for key, value in lora_state.items():
        if key.endswith((".lora_A", ".lora_B")):
            continue
        if key not in params or list(params[key].shape) != list(value.shape):
            raise ValueError(
                f"{key} {list(value.shape)} in the LoRA weights has no matching tensor in the base model "
                f"({'absent' if key not in params else list(params[key].shape)})"
            )
        params[key].set_value(value.astype(params[key].dtype))
    return layers


def merge_lora(lora_dir: str, output_dir: str, base_model: Optional[str] = None, dtype: Optional[str] = None) -> str:
    """Write base model + adapters of ``lora_dir`` as a plain checkpoint to ``output_dir``; returns it.

    ``base_model`` defaults to the ``base_model_name_or_path`` in ``lora_dir/lora_config.json``;
    ``dtype`` (e.g. ``float32``) to the dtype the adapters were trained in."""
    import paddle
    from paddlenlp.peft import LoRAConfig

    from paddlemix.models.qwen_vl.builder import build_model, load_tokenizer

    for name in (LORA_CONFIG_NAME, LORA_WEIGHTS_NAME):
        if not os.path.isfile(os.path.join(lora_dir, name)):
            raise FileNotFoundError(
                f"{os.path.join(lora_dir, name)} not found: --lora_dir must be the output_dir or a checkpoint-N "
                f"of a LoRA run (lora: true)"
            )
    if os.path.abspath(output_dir) == os.path.abspath(lora_dir):
        raise ValueError("--output_dir must differ from --lora_dir (the merged weights would mix with the adapters)")
    lora_config = LoRAConfig.from_pretrained(lora_dir)
    named_by = "--base_model" if base_model else os.path.join(lora_dir, LORA_CONFIG_NAME)
    base_model = base_model or lora_config.base_model_name_or_path
    if not base_model:
        raise ValueError(f"{named_by} names no base model; pass --base_model DIR")
    if not os.path.isfile(os.path.join(base_model, "config.json")):
        raise FileNotFoundError(
            f"base model {base_model} (named by {named_by}) has no config.json; "
            f"pass --base_model with the checkpoint the adapters were trained on"
        )
    dtype = dtype or lora_config.dtype or "float32"

    model = build_model(checkpoint=base_model, dtype=dtype)
    lora_state = paddle.load(os.path.join(lora_dir, LORA_WEIGHTS_NAME))
    merged = merge_lora_weights(model, lora_state, lora_config)
    model.save_pretrained(output_dir)
    # The run's tokenizer files, else the base model's, else the built-in Qwen vocabulary.
    load_tokenizer([lora_dir, base_model], model.config.image_span).save_pretrained(output_dir)
    print(f"merged {len(merged)} LoRA layers of {lora_dir} into {base_model} -> {output_dir} ({dtype})")
    return output_dir


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lora_dir", required=True, help="output_dir or checkpoint-N of a LoRA training run")
    p.add_argument("--output_dir", required=True, help="folder for the merged checkpoint")
    p.add_argument("--base_model", default=None, help="base checkpoint (default: the one recorded in lora_config.json)")
    p.add_argument("--dtype", default=None, help="dtype of the merged weights (default: the adapters' training dtype)")
    p.add_argument("--device", default="cpu", help="paddle device to merge on (default cpu)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import paddle

    paddle.set_device(args.device)
    merge_lora(args.lora_dir, args.output_dir, base_model=args.base_model, dtype=args.dtype)
    return 0


if __name__ == "__main__":
    from paddlemix.cli import run

    sys.exit(run(main))

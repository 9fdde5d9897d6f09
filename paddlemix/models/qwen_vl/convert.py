"""Convert a Hugging Face Qwen-VL / Qwen-VL-Chat checkpoint into this project's checkpoint format.

Input: a directory with ``config.json`` and weights as ``model.safetensors`` /
``model-XXXXX-of-YYYYY.safetensors`` + ``model.safetensors.index.json``, or ``pytorch_model.bin`` /
shards + ``pytorch_model.bin.index.json`` (``.bin`` needs torch; safetensors does not).

Output: ``config.json`` and safetensors weights (one output shard per input shard, with
``model.safetensors.index.json``) that ``QWenVLForCausalLM.from_pretrained`` loads.

This model keeps the Hugging Face parameter names, so the map is short: PyTorch ``nn.Linear``
weights ([out, in]) are transposed to Paddle's [in, out] — including the resampler's fused
``attn.in_proj_weight`` [3E, E] -> [E, 3E], whose column blocks stay [q | k | v] — and everything
else (embeddings, norms, biases, the conv kernel, positional tables, ``visual.proj``, which is
applied as ``x @ proj`` in both frameworks) is copied. Shards are converted one at a time.

Every safetensors shard's header is checked against the shard's size before anything is written
(a truncated download names its shard), and the output is written to ``<dst>.partial`` and moved to
``dst`` only when complete, so a failed or killed conversion never leaves a ``dst`` that looks usable.
"""

import copy
import json
import os
import re
import shutil
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .configuration import DEFAULT_VISUAL, QWenVLConfig

__all__ = [
    "ConversionError",
    "convert_checkpoint",
    "config_from_hf",
    "expected_parameter_shapes",
    "target_action",
    "check_source",
    "SKIPPED_SOURCE",
]

# PyTorch nn.Linear weights: [out, in] in the source, [in, out] here.
LINEAR_WEIGHTS = [
    r"transformer\.h\.\d+\.attn\.(c_attn|c_proj)\.weight",
    r"transformer\.h\.\d+\.mlp\.(w1|w2|c_proj)\.weight",
    r"lm_head\.weight",
    r"transformer\.visual\.transformer\.resblocks\.\d+\.attn\.(in_proj|out_proj)\.weight",
    r"transformer\.visual\.transformer\.resblocks\.\d+\.mlp\.(c_fc|c_proj)\.weight",
    r"transformer\.visual\.attn_pool\.kv_proj\.weight",
    r"transformer\.visual\.attn_pool\.attn\.in_proj_weight",
    r"transformer\.visual\.attn_pool\.attn\.out_proj\.weight",
]
# Buffers some exports include; they are recomputed at run time.
SKIPPED_SOURCE = [r"(.*\.)?rotary_emb\.inv_freq", r".*\.attn\.masked_bias"]
_LINEAR_RE = re.compile("|".join(f"(?:{p})" for p in LINEAR_WEIGHTS))
_SKIP_RE = re.compile("|".join(f"(?:{p})" for p in SKIPPED_SOURCE))
# The resampler's sin-cos table is a function of the config; filled in if a checkpoint omits it.
POS_EMBED = "transformer.visual.attn_pool.pos_embed"

DTYPES = ("float32", "bfloat16", "float16")
HF_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "kv_channels",
    "intermediate_size",
    "layer_norm_epsilon",
    "initializer_range",
    "rotary_emb_base",
    "rotary_pct",
    "seq_length",
    "max_position_embeddings",
    "use_dynamic_ntk",
    "use_logn_attn",
    "no_bias",
    "emb_dropout_prob",
    "attn_dropout_prob",
)


class ConversionError(ValueError):
    """The source checkpoint does not match the model; the message lists the offending tensors."""


def target_action(name: str) -> str:
    """What happens to a source tensor: ``"skip"``, ``"transpose"`` or ``"copy"`` (same name)."""
    if _SKIP_RE.fullmatch(name):
        return "skip"
    return "transpose" if _LINEAR_RE.fullmatch(name) else "copy"


# ---- configuration ----


def config_from_hf(hf_config: dict, source: str = "config.json") -> QWenVLConfig:
    """A ``QWenVLConfig`` from a Hugging Face Qwen-VL ``config.json`` dict."""
    if "visual" not in hf_config:
        raise ConversionError(f"{source}: no 'visual' section; this is not a Qwen-VL checkpoint")
    if hf_config.get("tie_word_embeddings"):
        raise ConversionError(f"{source}: tied word embeddings are not supported (Qwen-VL unties them)")
    kwargs = {k: hf_config[k] for k in HF_CONFIG_KEYS if k in hf_config}
    visual = {k: v for k, v in hf_config["visual"].items() if k in DEFAULT_VISUAL}
    return QWenVLConfig(visual=visual, architectures=["QWenVLForCausalLM"], **kwargs)


def expected_parameter_shapes(config: QWenVLConfig) -> Dict[str, Tuple[int, ...]]:
    """Every parameter name of ``QWenVLForCausalLM(config)`` with its shape, read off a lazily built
    one-layer copy of the model (nothing is allocated) and expanded to all layers."""
    import paddle
    from paddlenlp.transformers.model_utils import no_init_weights

    from .modeling import QWenVLForCausalLM

    small = copy.deepcopy(config)
    small.num_hidden_layers = 1
    small.visual = dict(config.visual, layers=1)
    with paddle.LazyGuard(), no_init_weights():
        model = QWenVLForCausalLM(small)
    layer_counts = {"transformer.h.0.": config.num_hidden_layers, "resblocks.0.": config.visual["layers"]}
    shapes: Dict[str, Tuple[int, ...]] = {}
    for name, tensor in model.state_dict().items():
        marker = next((m for m in layer_counts if m in name), None)
        if marker is None:
            shapes[name] = tuple(tensor.shape)
            continue
        for i in range(layer_counts[marker]):
            shapes[name.replace(marker, marker.replace("0", str(i)))] = tuple(tensor.shape)
    return shapes


# ---- reading the source ----


def _weight_files(src: str) -> Tuple[List[str], Optional[Dict[str, str]]]:
    """The source weight files in order, and the index's name -> file map if there is one."""
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index_path = os.path.join(src, index_name)
        if os.path.isfile(index_path):
            with open(index_path, encoding="utf-8") as f:
                try:
                    weight_map = json.load(f)["weight_map"]
                except (ValueError, KeyError) as exc:
                    raise ConversionError(f"{index_path}: not a weight index ({type(exc).__name__}: {exc})") from None
            files = sorted(set(weight_map.values()))
            for fn in files:
                if not os.path.isfile(os.path.join(src, fn)):
                    raise ConversionError(f"{index_path} names {fn}, which is not in {src}")
            return files, weight_map
        if os.path.isfile(os.path.join(src, single)):
            return [single], None
    raise ConversionError(f"{src}: no model.safetensors(.index.json) or pytorch_model.bin(.index.json) found")


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise ConversionError(
            "this checkpoint is stored as PyTorch .bin files, which need torch to read; install torch "
            "(CPU build is enough) or use the checkpoint's .safetensors files"
        ) from exc
    return torch


def _safetensors_header(path: str) -> Dict[str, dict]:
    """Names, dtypes and shapes of a safetensors file without reading its data; a
    :class:`ConversionError` naming the file when the file is shorter than its header says."""
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if file_size < 8 or size > file_size - 8:
            raise ConversionError(f"{path}: truncated or not safetensors ({file_size} bytes, header claims {size})")
        try:
            header = json.loads(f.read(size))
        except ValueError as exc:
            raise ConversionError(f"{path}: unreadable safetensors header ({exc})") from None
    header.pop("__metadata__", None)
    data_end = max((int(info["data_offsets"][1]) for info in header.values()), default=0)
    if 8 + size + data_end > file_size:
        raise ConversionError(
            f"{path}: truncated: its header places tensor data up to byte {8 + size + data_end}, "
            f"the file has {file_size} (download it again)"
        )
    return header


def _source_names_and_shapes(src: str, files: List[str], weight_map) -> Dict[str, Optional[Tuple[int, ...]]]:
    """Every source tensor name (with its shape when it can be read cheaply)."""
    names: Dict[str, Optional[Tuple[int, ...]]] = {}
    for fn in files:
        path = os.path.join(src, fn)
        if fn.endswith(".safetensors"):
            for name, info in _safetensors_header(path).items():
                names[name] = tuple(info["shape"])
        elif weight_map is not None:
            names.update({n: None for n, f in weight_map.items() if f == fn})
        else:
            names.update({n: tuple(t.shape) for n, t in _read_bin(path)})
    return names


def _read_bin(path: str) -> Iterator[Tuple[str, np.ndarray]]:
    torch = _import_torch()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise ConversionError(f"{path}: cannot be read ({type(exc).__name__}: {exc}); download it again") from None
    for name in list(state):
        tensor = state.pop(name)
        yield name, (tensor.float() if tensor.is_floating_point() else tensor).numpy()


def _read_safetensors(path: str) -> Iterator[Tuple[str, np.ndarray]]:
    # The paddle framework reads bfloat16 (numpy cannot); tensors are handed over one at a time.
    import paddle
    from safetensors import safe_open

    with safe_open(path, framework="paddle") as f:
        for name in f.keys():
            tensor = f.get_tensor(name)
            yield name, (tensor.astype("float32") if paddle.is_floating_point(tensor) else tensor).numpy()


def _read_shard(path: str) -> Iterator[Tuple[str, np.ndarray]]:
    return _read_safetensors(path) if path.endswith(".safetensors") else _read_bin(path)


# ---- writing ----


def _to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 (round to nearest even), as the uint16 bit pattern PaddleNLP stores."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def _cast(x: np.ndarray, dtype: str) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.floating):
        return x
    if dtype == "bfloat16":
        return _to_bfloat16_bits(x)
    return np.ascontiguousarray(x, dtype=np.float16 if dtype == "float16" else np.float32)


def check_source(source: Dict[str, Optional[tuple]], expected: Dict[str, tuple], where: str = "checkpoint"):
    """Raise :class:`ConversionError` unless the source tensors (name -> PyTorch shape, or None when
    unknown) fill exactly the expected parameters (name -> Paddle shape) with matching shapes."""
    unknown, wrong_shape, targets = [], [], set()
    for name, shape in source.items():
        action = target_action(name)
        if action == "skip":
            continue
        if name not in expected:
            unknown.append(name)
            continue
        targets.add(name)
        if shape is not None:
            want = expected[name][::-1] if action == "transpose" else expected[name]
            if tuple(shape) != tuple(want):
                wrong_shape.append(f"{name}: {list(shape)} (expected {list(want)})")
    missing = sorted(set(expected) - targets - {POS_EMBED})
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} tensor(s) the model has no parameter for: {sorted(unknown)}")
    if missing:
        problems.append(f"{len(missing)} model parameter(s) with no source tensor: {missing}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} tensor(s) with the wrong shape: {wrong_shape}")
    if problems:
        raise ConversionError(f"{where} does not match the Qwen-VL model:\n  " + "\n  ".join(problems))


def convert_checkpoint(
    src: str, dst: str, dtype: str = "float32", log: Callable[[str], None] = print
) -> Dict[str, str]:
    """Convert the Hugging Face checkpoint in ``src`` into ``dst``; returns the output weight map.

    Every source tensor must be used (apart from recomputed buffers such as ``rotary_emb.inv_freq``)
    and every model parameter filled, else :class:`ConversionError` lists the names — checked from
    the index/headers before anything is written.
    """
    if dtype not in DTYPES:
        raise ConversionError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    config_path = os.path.join(src, "config.json")
    if not os.path.isfile(config_path):
        raise ConversionError(f"{src}: config.json not found")
    with open(config_path, encoding="utf-8") as f:
        config = config_from_hf(json.load(f), source=config_path)
    expected = expected_parameter_shapes(config)
    files, weight_map = _weight_files(src)
    source = _source_names_and_shapes(src, files, weight_map)
    check_source(source, expected, where=src)

    if os.path.isdir(dst) and os.listdir(dst):
        raise ConversionError(f"{dst} exists and is not empty; remove it or choose another --dst")
    final, dst = dst, dst.rstrip(os.sep) + ".partial"
    if os.path.isdir(dst):
        shutil.rmtree(dst)  # what an earlier, interrupted conversion left
    os.makedirs(dst)
    try:
        out_map = _write_converted(src, dst, files, source, expected, config, dtype, log)
    except BaseException:
        shutil.rmtree(dst, ignore_errors=True)
        raise
    if os.path.isdir(final):
        os.rmdir(final)  # empty, checked above
    os.replace(dst, final)
    return out_map


def _write_converted(src, dst, files, source, expected, config, dtype, log) -> Dict[str, str]:
    from safetensors.numpy import save_file

    out_map: Dict[str, str] = {}
    total_bytes = 0
    for k, fn in enumerate(files, 1):
        out_name = "model.safetensors" if len(files) == 1 else f"model-{k:05d}-of-{len(files):05d}.safetensors"
        shard: Dict[str, np.ndarray] = {}
        for name, array in _read_shard(os.path.join(src, fn)):
            action = target_action(name)
            if action == "skip":
                continue
            array = array.T if action == "transpose" else array
            if tuple(array.shape) != expected[name]:
                raise ConversionError(
                    f"{fn}: {name} has shape {list(array.shape)} after conversion, expected {list(expected[name])}"
                )
            shard[name] = _cast(array, dtype)
        if k == len(files) and POS_EMBED not in source:
            from .vision import sincos_pos_embed_2d

            grid = int(round(config.visual["n_queries"] ** 0.5))
            shard[POS_EMBED] = _cast(sincos_pos_embed_2d(config.visual["output_dim"], grid), dtype)
            log(f"{POS_EMBED} is not in the checkpoint; filled with its fixed sin-cos values")
        save_file(shard, os.path.join(dst, out_name), metadata={"format": "np"})
        out_map.update({name: out_name for name in shard})
        total_bytes += sum(a.nbytes for a in shard.values())
        log(f"[{k}/{len(files)}] {fn} -> {out_name} ({len(shard)} tensors)")
        del shard
    if len(files) > 1:
        with open(os.path.join(dst, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
            json.dump({"metadata": {"total_size": total_bytes}, "weight_map": out_map}, f, indent=2, sort_keys=True)
    config.dtype = dtype
    config.save_pretrained(dst)
    for extra in ("qwen.tiktoken",):
        if os.path.isfile(os.path.join(src, extra)):
            shutil.copy(os.path.join(src, extra), os.path.join(dst, extra))
    return out_map

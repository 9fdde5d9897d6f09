"""Generation for Qwen-VL: prompts of different lengths answered as one left-padded batch.

Greedy decoding with the KV cache runs this module's own loop (:func:`greedy_decode`); sampling, or
decoding without the cache, runs PaddleNLP's ``generate`` through the model's generation hooks.
"""

from typing import List, Optional, Sequence

import numpy as np
import paddle

from paddlemix.processors.special_tokens import CHAT_STOP_IDS

from .cpu_kernels import as_numpy
from .modeling import QWenVLForCausalLM

__all__ = ["greedy_decode", "left_padded_batch", "generate_batch"]


def _row_argmax(logits: paddle.Tensor) -> np.ndarray:
    """The first index of each row's maximum, int64 [B]. On CPU float32 NumPy reads the logits in
    place: Paddle's CPU argmax over 8 x 151,936 logits took 2.2 ms a step, NumPy's 0.7 with the view
    (``benchmarks/bench_generation.py``'s batch 8 pays it at every new token)."""
    if logits.place.is_cpu_place() and logits.dtype == paddle.float32:
        return np.argmax(as_numpy(logits), axis=-1).astype(np.int64)
    return paddle.argmax(logits, axis=-1).numpy().astype(np.int64)


def greedy_decode(
    model: QWenVLForCausalLM,
    input_ids: paddle.Tensor,
    attention_mask: paddle.Tensor,
    images: Optional[paddle.Tensor],
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
) -> np.ndarray:
    """Greedy decoding with the KV cache: [B, <= max_new_tokens] new ids, ``pad_id`` after a row's stop id.

    The same tokens as PaddleNLP's ``greedy_search`` (its ``adjust_logits_during_generation`` hook is
    honoured too), without what only sampling needs: PaddleNLP takes a log-softmax over the whole
    vocabulary at every step and runs its logits processors; an arg-max of the logits needs neither.
    Stops as soon as every row has emitted a stop id."""
    batch = input_ids.shape[0]
    # The model derives each step's rotary positions from attention_mask, so padding is not counted.
    out = model(
        input_ids=input_ids,
        images=images,
        attention_mask=attention_mask,
        use_cache=True,
        logits_to_keep=1,
        return_dict=True,
    )
    one_column = paddle.ones([batch, 1], dtype=attention_mask.dtype)
    stops = np.asarray(list(stop_ids))
    done = np.zeros(batch, dtype=bool)
    new_ids = []
    for step in range(max_new_tokens):
        logits = model.adjust_logits_during_generation(out.logits[:, -1])  # [B, V]
        token = _row_argmax(logits)  # [B]
        token[done] = pad_id
        new_ids.append(token)
        done |= np.isin(token, stops)
        if done.all() or step == max_new_tokens - 1:
            break
        attention_mask = paddle.concat([attention_mask, one_column], axis=1)
        out = model(
            input_ids=paddle.to_tensor(token[:, None]),
            attention_mask=attention_mask,
            past_key_values=out.past_key_values,
            use_cache=True,
            logits_to_keep=1,
            return_dict=True,
        )
    return np.stack(new_ids, axis=1) if new_ids else np.zeros([batch, 0], dtype=np.int64)


def left_padded_batch(sequences: Sequence[Sequence[int]], pad_id: int, images=None):
    """``(ids, mask, images)`` for sequences of different lengths: ids and mask [B, L] int64 numpy,
    each row LEFT-padded with ``pad_id`` (mask 0 there), so every row ends at the last column where
    generation continues; ``images`` as a float32 tensor (or None)."""
    longest = max(len(s) for s in sequences)
    if min(len(s) for s in sequences) == 0:
        raise ValueError("every prompt needs at least one token")
    ids = np.full([len(sequences), longest], pad_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, seq in enumerate(sequences):
        ids[row, longest - len(seq) :] = seq
        mask[row, longest - len(seq) :] = 1
    if images is not None and not isinstance(images, paddle.Tensor):
        images = paddle.to_tensor(np.asarray(images, dtype=np.float32))
    return ids, mask, images


@paddle.no_grad()
def generate_batch(
    model: QWenVLForCausalLM,
    tokenizer,
    prompts_input_ids: Sequence[Sequence[int]],
    images=None,
    max_new_tokens: int = 512,
    decode_strategy: str = "greedy_search",
    use_cache: bool = True,
    stop_ids: Sequence[int] = CHAT_STOP_IDS,
    **generate_kwargs,
) -> List[List[int]]:
    """Generate for prompts of different lengths at once: LEFT-pads them, decodes, and returns each
    sample's new ids, cut before its first stop id (by default Qwen-VL-Chat's: ``<|im_end|>``,
    ``<|im_start|>``, ``<|endoftext|>``).

    Greedy decoding with the cache runs ``greedy_decode``; sampling, or decoding without the cache,
    runs PaddleNLP's ``model.generate``.
    ``images``: pixels [n_images, 3, S, S] (numpy or paddle) for the prompts' image slots in order.
    ``generate_kwargs`` go to PaddleNLP ``generate`` (e.g. ``top_p``, ``top_k``, ``temperature``).
    """
    if not prompts_input_ids:
        return []
    pad_id = tokenizer.eod_id if tokenizer is not None else model.config.pad_token_id
    stop_ids = list(stop_ids)
    ids, mask, images = left_padded_batch(prompts_input_ids, pad_id, images)
    was_training = model.training
    model.eval()
    try:
        if decode_strategy == "greedy_search" and use_cache and not generate_kwargs:
            new_ids = greedy_decode(
                model, paddle.to_tensor(ids), paddle.to_tensor(mask), images, max_new_tokens, stop_ids, pad_id
            )
        else:
            new_ids, _ = model.generate(
                input_ids=paddle.to_tensor(ids),
                attention_mask=paddle.to_tensor(mask),
                images=images,
                max_new_tokens=max_new_tokens,
                decode_strategy=decode_strategy,
                eos_token_id=stop_ids,
                pad_token_id=pad_id,
                use_cache=use_cache,
                **generate_kwargs,
            )
            new_ids = new_ids.numpy()
    finally:
        if was_training:
            model.train()
    results = []
    for row in new_ids.tolist():
        cut = next((i for i, t in enumerate(row) if t in stop_ids), len(row))
        results.append(row[:cut])
    return results

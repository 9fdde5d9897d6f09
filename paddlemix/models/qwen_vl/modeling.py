"""Qwen-VL as a causal LM on PaddleNLP's QWen: image features spliced into the token embeddings.

Layout (parameter names as in the Hugging Face checkpoint):

    transformer              QWenVLModel = PaddleNLP QWenModel (wte, h.{i}, ln_f) + visual
    transformer.visual       QWenVisionTransformer (vision.py)
    lm_head                  PaddleNLP QWenLMHead, weight [hidden, vocab]

Images enter as pixels [n_images, 3, S, S], in the order their ``<img>`` tags appear in the batch
read row by row. At prefill the model replaces the embeddings strictly between each ``<img>`` and
its ``</img>`` (exactly ``n_queries`` positions) with that image's features; decoding steps with a
KV cache never see images again.

Labels follow the Hugging Face convention: ``labels`` is aligned with ``input_ids`` and position t
is trained to predict ``labels[t + 1]``; -100 is ignored. The LM head (151,936 columns) runs only
at positions that carry a label, which is most of a small model's training cost otherwise, and on
CPU fused with its cross-entropy (linear_cross_entropy.py).
"""

from typing import List, Optional, Sequence

import numpy as np
import paddle
from paddlenlp.transformers.model_outputs import CausalLMOutputWithPast
from paddlenlp.transformers.qwen.modeling import QWenLMHead, QWenModel, QWenPretrainedModel

from .configuration import CHAT_STOP_IDS, QWenVLConfig
from .linear_cross_entropy import linear_cross_entropy
from .vision import QWenVisionTransformer

__all__ = [
    "QWenVLPretrainedModel",
    "QWenVLModel",
    "QWenVLForCausalLM",
    "image_span_positions",
    "splice_image_features",
    "positions_from_attention_mask",
    "freeze_vision",
    "greedy_decode",
    "left_padded_batch",
    "generate_batch",
]

IGNORE_INDEX = -100


def image_span_positions(input_ids: np.ndarray, img_start_id: int, img_end_id: int, span: int) -> np.ndarray:
    """Flat positions (row * seq_len + column) of every image slot, image by image in row-major
    order: [n_images, span]. Raises on unpaired tags or a slot that is not exactly ``span`` long."""
    ids = np.asarray(input_ids)
    batch, seq_len = ids.shape
    slots: List[np.ndarray] = []
    for row in range(batch):
        starts = np.flatnonzero(ids[row] == img_start_id)
        ends = np.flatnonzero(ids[row] == img_end_id)
        if len(starts) != len(ends) or np.any(starts >= ends) or np.any(starts[1:] < ends[:-1]):
            raise ValueError(
                f"input_ids row {row}: <img> at {starts.tolist()} and </img> at {ends.tolist()} do not pair up"
            )
        for start, end in zip(starts, ends):
            if end - start - 1 != span:
                raise ValueError(
                    f"input_ids row {row}: the image slot between <img> at {start} and </img> at {end} holds "
                    f"{end - start - 1} ids; the model expects exactly {span} (visual.n_queries)"
                )
            slots.append(row * seq_len + np.arange(start + 1, end))
    return np.stack(slots) if slots else np.zeros([0, span], dtype=np.int64)


def splice_image_features(embeds: paddle.Tensor, positions: np.ndarray, features: paddle.Tensor) -> paddle.Tensor:
    """``embeds`` [B, S, H] with rows ``positions`` [n, span] (flat) replaced by ``features`` [n, span, H]."""
    if features.shape[0] != positions.shape[0]:
        raise ValueError(
            f"input_ids contain {positions.shape[0]} image slot(s) but {features.shape[0]} image(s) were given"
        )
    batch, seq_len, hidden = embeds.shape
    index = paddle.to_tensor(positions.reshape([-1]), dtype="int64")
    flat = paddle.scatter(embeds.reshape([-1, hidden]), index, features.reshape([-1, hidden]).astype(embeds.dtype))
    return flat.reshape([batch, seq_len, hidden])


def positions_from_attention_mask(attention_mask: paddle.Tensor) -> paddle.Tensor:
    """Rotary positions [B, L] that count only attended tokens, so a left-padded sample gets the same
    positions as when it is alone (padding positions get 0; they are masked anyway)."""
    mask = attention_mask.astype("int64")
    return paddle.clip(paddle.cumsum(mask, axis=-1) - 1, min=0) * mask


class QWenVLPretrainedModel(QWenPretrainedModel):
    config_class = QWenVLConfig
    base_model_prefix = "transformer"

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """PaddleNLP loading with lazy parameter creation by default, so ``dtype="bfloat16"`` builds the
        model directly in bfloat16; any missing, unexpected or mis-shaped weight is an error."""
        kwargs.setdefault("low_cpu_mem_usage", True)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def _load_pretrained_model(
        cls, model, state_dict, loaded_keys, resolved_archive_file, pretrained_model_name_or_path, **kwargs
    ):
        model, missing, unexpected, mismatched = super()._load_pretrained_model(
            model, state_dict, loaded_keys, resolved_archive_file, pretrained_model_name_or_path, **kwargs
        )
        if missing or unexpected or mismatched:
            raise ValueError(
                f"checkpoint {pretrained_model_name_or_path} does not match {cls.__name__}: "
                f"missing {sorted(missing)}, unexpected {sorted(unexpected)}, wrong shape {mismatched}"
            )
        return model, missing, unexpected, mismatched


class QWenVLModel(QWenVLPretrainedModel, QWenModel):
    """PaddleNLP's QWen decoder (``wte``, ``h``, ``ln_f``) with the vision tower as ``visual``."""

    def __init__(self, config: QWenVLConfig):
        QWenModel.__init__(self, config)
        self.visual = QWenVisionTransformer(config.visual, config.resampler_heads)

    def embed(self, input_ids: paddle.Tensor, images: Optional[paddle.Tensor]) -> paddle.Tensor:
        """Token embeddings [B, S, H] with every image slot holding its image's features."""
        embeds = self.wte(input_ids)  # [B, S, H]
        cfg = self.config
        positions = image_span_positions(input_ids.numpy(), cfg.img_start_id, cfg.img_end_id, cfg.image_span)
        if positions.shape[0] == 0:
            if images is not None and images.shape[0] > 0:
                raise ValueError(f"{images.shape[0]} image(s) given but input_ids contain no <img>...</img> slot")
            return embeds
        if images is None:
            raise ValueError(f"input_ids contain {positions.shape[0]} image slot(s) but no images were given")
        features = self.visual(images)  # [n_images, Q, H]
        return splice_image_features(embeds, positions, features)

    def forward(
        self,
        input_ids=None,
        images=None,
        past_key_values=None,
        attention_mask=None,
        position_ids=None,
        inputs_embeds=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids or inputs_embeds")
            # Images matter only at prefill; later steps read their effect from the KV cache.
            inputs_embeds = self.embed(input_ids, images) if past_key_values is None else self.wte(input_ids)
        batch, seq_len = inputs_embeds.shape[:2]
        if position_ids is None:
            # PaddleNLP's rotary embedding needs explicit positions once a cache exists.
            past_len = 0 if past_key_values is None else past_key_values[0][0].shape[1]
            if attention_mask is not None and attention_mask.ndim == 2:
                position_ids = positions_from_attention_mask(attention_mask)[:, -seq_len:]
            else:
                position_ids = paddle.arange(past_len, past_len + seq_len, dtype="int64").expand([batch, seq_len])
        return QWenModel.forward(
            self,
            input_ids=None,
            past_key_values=past_key_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
        )


class QWenVLForCausalLM(QWenVLPretrainedModel):
    """Qwen-VL(-Chat): ``transformer`` (LLM + vision) and an untied ``lm_head``."""

    def __init__(self, config: QWenVLConfig):
        super().__init__(config)
        self.transformer = QWenVLModel(config)
        self.lm_head = QWenLMHead(config)

    def get_input_embeddings(self):
        return self.transformer.wte

    def set_input_embeddings(self, value):
        self.transformer.wte = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def masked_lm_loss(self, hidden_states: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
        """Mean next-token cross-entropy over labelled positions, with the LM head applied to those
        positions only. hidden_states [B, S, H], labels [B, S] aligned with input_ids."""
        hidden = hidden_states.shape[-1]
        targets = labels[:, 1:].reshape([-1])  # [B*(S-1)]
        keep = paddle.nonzero(targets != IGNORE_INDEX).reshape([-1])  # [n]
        if keep.shape[0] == 0:
            # Nothing to learn from: a zero that still depends on the graph.
            return hidden_states.sum() * 0.0
        states = paddle.gather(hidden_states[:, :-1].reshape([-1, hidden]), keep)  # [n, H]
        return linear_cross_entropy(states, self.lm_head.weight, paddle.gather(targets, keep))

    def forward(
        self,
        input_ids=None,
        images=None,
        attention_mask=None,
        position_ids=None,
        labels=None,
        past_key_values=None,
        use_cache=None,
        inputs_embeds=None,
        return_logits: Optional[bool] = None,
        last_logits_only: bool = False,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        """With ``labels``: ``loss`` and, only if ``return_logits=True``, logits [B, S, V]. Without:
        logits [B, S, V], or [B, 1, V] for the last position if ``last_logits_only`` (generation)."""
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        if use_cache is None and labels is not None:
            use_cache = False  # training never reads the cache; do not hold on to it
        outputs = self.transformer(
            input_ids=input_ids,
            images=images,
            past_key_values=past_key_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden_states = outputs.last_hidden_state  # [B, S, H]
        loss = self.masked_lm_loss(hidden_states, labels) if labels is not None else None
        logits = None
        if return_logits or (return_logits is None and labels is None):
            logits = self.lm_head(hidden_states[:, -1:] if last_logits_only else hidden_states)
        if not return_dict:
            return tuple(v for v in (loss, logits, outputs.past_key_values) if v is not None)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    # ---- generation (PaddleNLP GenerationMixin drives the loop) ----

    @staticmethod
    def prepare_attention_mask_for_generation(input_ids, pad_token_id, eos_token_id):
        # A 2-D mask (PaddleNLP's default is a 4-D additive one). Qwen pads with <|endoftext|>, which is
        # also a stop id, so a left-padded batch must pass its own attention_mask (generate_batch does).
        return paddle.ones_like(input_ids, dtype="int64")

    def generate(self, input_ids=None, generation_config=None, **kwargs):
        """PaddleNLP's ``generate`` (greedy or sampling), honouring ``use_cache=False``: PaddleNLP 2.8.1
        stores that flag on the GenerationConfig, which its decoding loops never read, so it is passed
        on here as the model keyword ``kv_cache``."""
        default = generation_config.use_cache if generation_config is not None else True
        kv_cache = kwargs.pop("use_cache", default)
        return super().generate(input_ids=input_ids, generation_config=generation_config, kv_cache=kv_cache, **kwargs)

    def prepare_inputs_for_generation(
        self,
        input_ids,
        past_key_values=None,
        attention_mask=None,
        position_ids=None,
        images=None,
        use_cache=None,
        kv_cache=True,
        **kwargs,
    ):
        if position_ids is None and attention_mask is not None and attention_mask.ndim == 2:
            position_ids = positions_from_attention_mask(attention_mask)
        if past_key_values is not None:
            input_ids = input_ids[:, -1:]
            position_ids = position_ids[:, -1:] if position_ids is not None else None
            images = None
        return {
            "input_ids": input_ids,
            "images": images,
            "past_key_values": past_key_values,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "use_cache": bool(kv_cache) and use_cache is not False,
            "last_logits_only": True,
        }


def freeze_vision(model: QWenVLForCausalLM, train_resampler: bool = True) -> List[str]:
    """Freeze the vision tower as Qwen-VL's fine-tuning recipe (``fix_vit``) does: every vision
    parameter is frozen, then the whole resampler (``attn_pool``) is made trainable again if
    ``train_resampler``. Upstream re-enables the module as a whole, which includes its sin-cos
    ``pos_embed`` table, so it trains too; ``ln_post`` and ``proj`` sit outside ``attn_pool`` and
    stay frozen. Returns the names of the vision parameters left trainable."""
    trainable = []
    for name, param in model.transformer.visual.named_parameters():
        train = train_resampler and name.startswith("attn_pool.")
        param.stop_gradient = not train
        if train:
            trainable.append(name)
    return trainable


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
    positions = positions_from_attention_mask(attention_mask)  # [B, L]
    out = model(
        input_ids=input_ids,
        images=images,
        attention_mask=attention_mask,
        position_ids=positions,
        use_cache=True,
        last_logits_only=True,
        return_dict=True,
    )
    next_position = positions[:, -1:] + 1  # [B, 1]
    one_column = paddle.ones([batch, 1], dtype=attention_mask.dtype)
    stops = np.asarray(list(stop_ids))
    done = np.zeros(batch, dtype=bool)
    new_ids = []
    for step in range(max_new_tokens):
        logits = model.adjust_logits_during_generation(out.logits[:, -1])  # [B, V]
        token = paddle.argmax(logits, axis=-1).numpy().astype(np.int64)  # [B]
        token[done] = pad_id
        new_ids.append(token)
        done |= np.isin(token, stops)
        if done.all() or step == max_new_tokens - 1:
            break
        attention_mask = paddle.concat([attention_mask, one_column], axis=1)
        out = model(
            input_ids=paddle.to_tensor(token[:, None]),
            attention_mask=attention_mask,
            position_ids=next_position,
            past_key_values=out.past_key_values,
            use_cache=True,
            last_logits_only=True,
            return_dict=True,
        )
        next_position = next_position + 1
    return np.stack(new_ids, axis=1) if new_ids else np.zeros([batch, 0], dtype=np.int64)


@paddle.no_grad()
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

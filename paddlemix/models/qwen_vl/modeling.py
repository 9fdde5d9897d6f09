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

Three of PaddleNLP's decoder operations take a faster CPU road to the same values (to float32
rounding): the RMS norm squares with a multiply instead of ``pow`` and runs as one NumPy operation
(:class:`SquareRMSNorm`), the additive attention mask comes expanded to every head
(:meth:`QWenVLModel.get_masks`; Paddle's CPU ``add`` is several times slower when it broadcasts),
and the attention from the fused projection on (head split, rotary embedding, scores, mask,
softmax, weighted values) runs in NumPy in training (cpu_attention.py).
``benchmarks/bench_lm_head.py step`` times them.
"""

from typing import List, Optional, Tuple

import numpy as np
import paddle
from paddle.autograd import PyLayer
from paddlenlp.transformers.model_outputs import CausalLMOutputWithPast
from paddlenlp.transformers.qwen.modeling import (
    QWenAttention,
    QWenLMHead,
    QWenModel,
    QWenPretrainedModel,
    QWenRMSNorm,
)

from paddlemix.processors.conversation import IGNORE_INDEX

from .configuration import QWenVLConfig
from .cpu_adamw import finish_update
from .cpu_attention import CpuQWenAttention
from .cpu_kernels import as_numpy
from .linear_cross_entropy import linear_cross_entropy
from .vision import QWenVisionTransformer

__all__ = [
    "QWenVLPretrainedModel",
    "QWenVLModel",
    "QWenVLForCausalLM",
    "image_span_positions",
    "splice_image_features",
    "positions_from_attention_mask",
    "SquareRMSNorm",
]


class _NumpyRMSNorm(PyLayer):
    """``x * rsqrt(mean(x * x) + eps) * weight`` over the last axis, and its gradients, in NumPy."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        values, scale = as_numpy(x), as_numpy(weight)
        inverse_rms = 1.0 / np.sqrt((values * values).mean(axis=-1, keepdims=True) + np.float32(eps))
        normed = values * inverse_rms
        ctx.saved = (normed, inverse_rms, scale, x.stop_gradient, weight.stop_gradient)
        return paddle.to_tensor(normed * scale)

    @staticmethod
    def backward(ctx, grad_out):
        normed, inverse_rms, scale, x_frozen, weight_frozen = ctx.saved
        grad = as_numpy(grad_out)
        grad_weight = None if weight_frozen else paddle.to_tensor((grad * normed).reshape(-1, scale.shape[0]).sum(0))
        grad_x = None
        if not x_frozen:
            scaled = grad * scale
            grad_x = paddle.to_tensor(inverse_rms * (scaled - normed * (scaled * normed).mean(axis=-1, keepdims=True)))
        return grad_x, grad_weight


class SquareRMSNorm(QWenRMSNorm):
    """PaddleNLP's ``QWenRMSNorm`` squaring by ``x * x`` instead of ``x.pow(2)``: the same values to
    float32 rounding (the multiply is the correctly rounded square; Paddle's CPU ``pow`` is off by an
    ulp on about 1% of values), where that ``pow`` and its gradient cost about a millisecond each on
    a demo batch's [4, 223, 64] activations and the multiply ~20 us. On CPU in float32 the whole
    norm and its gradients are one NumPy operation (:class:`_NumpyRMSNorm`): Paddle runs it as six
    small kernels and six gradient kernels, 3.1 ms forward + backward on a demo batch's [4, 223, 64]
    against 1.1 ms this way (both with a sum and its gradient around them; 200 calls, 2 threads).
    Without gradients (generation) Paddle's kernels stay: on a decoding step's [B, 1, H] the
    PyLayer's own overhead does not pay (benchmarks/bench_generation.py, tiny preset, batch 1: 82
    and 81 tokens/s with it against 98 and 101 without, in two alternated pairs; pairs of one code
    vary between 80 and 95)."""

    def _norm(self, x):
        return x * paddle.rsqrt((x * x).mean(-1, keepdim=True) + self.eps)

    def forward(self, x):
        if (
            paddle.is_grad_enabled()
            and not (x.stop_gradient and self.weight.stop_gradient)
            and x.place.is_cpu_place()
            and x.dtype == paddle.float32
            and self.weight.dtype == paddle.float32
            and not self.config.use_fused_rms_norm
        ):
            return _NumpyRMSNorm.apply(x, self.weight, self.eps)
        return super().forward(x)


def image_span_positions(input_ids, img_start_id: int, img_end_id: int, span: int) -> paddle.Tensor:
    """Flat positions (row * seq_len + column) of every image slot, image by image in row-major
    order: [n_images, span] int64. Raises on unpaired tags or a slot that is not exactly ``span`` long.

    Computed with paddle ops on ``input_ids``' device (numpy input is converted): a forward pass
    reads back the tag counts and one boolean, not the ids; only a bad batch is copied to the host,
    to name its row."""
    ids = input_ids if isinstance(input_ids, paddle.Tensor) else paddle.to_tensor(np.asarray(input_ids))
    seq_len = ids.shape[-1]
    flat = ids.reshape([-1])
    starts = paddle.nonzero(flat == img_start_id).reshape([-1])  # [n] flat positions of <img>
    ends = paddle.nonzero(flat == img_end_id).reshape([-1])  # [m] flat positions of </img>
    if starts.shape[0] == 0 and ends.shape[0] == 0:
        return paddle.zeros([0, span], dtype="int64")
    # Paired k-th with k-th: each pair in one row, exactly ``span`` ids apart, and the next <img>
    # after this </img>. Together these are the row-by-row rules below.
    if starts.shape[0] == ends.shape[0] and bool(
        paddle.all(starts // seq_len == ends // seq_len)
        & paddle.all(ends - starts - 1 == span)
        & paddle.all(starts[1:] > ends[:-1])
    ):
        return starts.unsqueeze(-1) + 1 + paddle.arange(span, dtype="int64")  # [n, span]
    return paddle.to_tensor(_checked_slot_positions(ids.numpy(), img_start_id, img_end_id, span))


def _checked_slot_positions(ids: np.ndarray, img_start_id: int, img_end_id: int, span: int) -> np.ndarray:
    """The same positions found row by row on the host, raising with the row and columns of the
    first bad slot (what :func:`image_span_positions` runs when its device check fails)."""
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


def splice_image_features(embeds: paddle.Tensor, positions: paddle.Tensor, features: paddle.Tensor) -> paddle.Tensor:
    """``embeds`` [B, S, H] with rows ``positions`` [n, span] (flat) replaced by ``features`` [n, span, H]."""
    if features.shape[0] != positions.shape[0]:
        raise ValueError(
            f"input_ids contain {positions.shape[0]} image slot(s) but {features.shape[0]} image(s) were given"
        )
    batch, seq_len, hidden = embeds.shape
    rows = features.reshape([-1, hidden]).astype(embeds.dtype)  # [n * span, H]
    flat = paddle.scatter(embeds.reshape([-1, hidden]), positions.reshape([-1]), rows)
    return flat.reshape([batch, seq_len, hidden])


def positions_from_attention_mask(attention_mask: paddle.Tensor) -> paddle.Tensor:
    """Rotary positions [B, L] that count only attended tokens, so a left-padded sample gets the same
    positions as when it is alone (padding positions get 0; they are masked anyway). The one source
    of positions: the model derives them from the mask (all ones without one) when none are given."""
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

    # None, or a vision.FrozenFeatureCache the training recipe sets when the whole tower is frozen
    # (``image_feature_cache_mb``); a plain attribute, not a sublayer, so nothing of it is saved.
    image_feature_cache = None

    def __init__(self, config: QWenVLConfig):
        QWenModel.__init__(self, config)
        self.visual = QWenVisionTransformer(config.visual, config.resampler_heads)
        for layer in self.sublayers():  # same parameters, same names, faster CPU roads
            if type(layer) is QWenRMSNorm:  # ln_1, ln_2 of every block and ln_f
                layer.__class__ = SquareRMSNorm
            elif type(layer) is QWenAttention:
                layer.__class__ = CpuQWenAttention

    def get_masks(self, batch_size, seq_length, past_length, padding_mask=None):
        """PaddleNLP's boolean causal-and-padding mask [B, 1, S, past + S], expanded on CPU to
        [B, heads, S, past + S]: every layer adds it to its [B, heads, ...] attention scores, and
        Paddle's CPU ``add`` is about six times slower when it broadcasts the head axis than when
        the shapes match (one expand per forward replaces a broadcast per layer)."""
        mask = QWenModel.get_masks(self, batch_size, seq_length, past_length, padding_mask=padding_mask)
        if not mask.place.is_cpu_place():
            return mask
        return mask.expand([mask.shape[0], self.config.num_attention_heads, mask.shape[2], mask.shape[3]])

    def embed(self, input_ids: paddle.Tensor, images: Optional[paddle.Tensor]) -> paddle.Tensor:
        """Token embeddings [B, S, H] with every image slot holding its image's features."""
        embeds = self.wte(input_ids)  # [B, S, H]
        cfg = self.config
        positions = image_span_positions(input_ids, cfg.img_start_id, cfg.img_end_id, cfg.image_span)
        if positions.shape[0] == 0:
            if images is not None and images.shape[0] > 0:
                raise ValueError(f"{images.shape[0]} image(s) given but input_ids contain no <img>...</img> slot")
            return embeds
        if images is None:
            raise ValueError(f"input_ids contain {positions.shape[0]} image slot(s) but no images were given")
        cache = self.image_feature_cache
        features = self.visual(images) if cache is None else cache(self.visual, images)  # [n_images, Q, H]
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
            mask = attention_mask
            if mask is None or mask.ndim != 2:
                past_len = 0 if past_key_values is None else past_key_values[0][0].shape[1]
                mask = paddle.ones([batch, past_len + seq_len], dtype="int64")
            position_ids = positions_from_attention_mask(mask)[:, -seq_len:]
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

    # Target ids whose positions the loss leaves out (None: every labelled position counts); a tuple
    # of ints, not a tensor, which nn.Layer would register as a buffer and save with the weights. The
    # training recipe's digit curriculum sets it for its first steps (``digit_loss_start_step`` in
    # paddlemix/tools/supervised_finetune.py).
    loss_ignored_ids: Optional[Tuple[int, ...]] = None

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

    def deferrable_parameters(self) -> List[paddle.Tensor]:
        """Parameters whose optimizer update may still be running when a forward pass starts
        (``CpuAdamW.defer``): ``forward`` waits for the LM head's before reading it, after the
        decoder has run, so the update overlaps the decoder."""
        return [self.lm_head.weight]

    def masked_lm_loss(self, hidden_states: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
        """Mean next-token cross-entropy over labelled positions, with the LM head applied to those
        positions only. hidden_states [B, S, H], labels [B, S] aligned with input_ids."""
        hidden = hidden_states.shape[-1]
        targets = labels[:, 1:].reshape([-1])  # [B*(S-1)]
        labelled = targets != IGNORE_INDEX
        if self.loss_ignored_ids is not None:
            labelled = labelled & ~paddle.isin(targets, paddle.to_tensor(self.loss_ignored_ids, dtype=targets.dtype))
        keep = paddle.nonzero(labelled).reshape([-1])  # [n]
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
        logits_to_keep: Optional[int] = None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        """``loss`` if ``labels`` are given, and logits of the positions ``logits_to_keep`` names, as in
        Hugging Face: 0 every position [B, S, V], k the last k [B, k, V] (generation keeps 1). The
        default, None, is every position without ``labels`` and none with them: the loss does not
        need the full logits, which at 151,936 columns are most of a small model's memory."""
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
        finish_update(self.lm_head.weight)  # a deferred optimizer update of the head (CpuAdamW.defer)
        loss = self.masked_lm_loss(hidden_states, labels) if labels is not None else None
        logits = None
        if logits_to_keep is None:
            logits_to_keep = 0 if labels is None else None
        if logits_to_keep is not None:
            logits = self.lm_head(hidden_states[:, -logits_to_keep:] if logits_to_keep else hidden_states)
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
        # Without position_ids, forward derives them from attention_mask for the ids it is given.
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
            "logits_to_keep": 1,
        }

"""Qwen-VL's special tokens, their strings and ids, stated once for the tokenizer, the chat template and the model.

The vocabulary is Qwen's byte-level BPE (151,643 ranks) followed by these tokens in exactly the order
of :data:`SPECIAL_TOKENS`, so the ids are the published ones: ``<|endoftext|>`` 151643,
``<|im_start|>`` 151644, ``<|im_end|>`` 151645, ``<|extra_0..204|>``, then ``<ref>`` 151851 …
``<imgpad>`` 151859. The tokenizer checks the vocabulary file it reads has that many ranks.
"""

from typing import Dict, Tuple

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
NUM_EXTRA = 205
REF_START, REF_END = "<ref>", "</ref>"
BOX_START, BOX_END = "<box>", "</box>"
QUAD_START, QUAD_END = "<quad>", "</quad>"
IMG_START, IMG_END, IMG_PAD = "<img>", "</img>", "<imgpad>"

SPECIAL_TOKENS: Tuple[str, ...] = (
    (ENDOFTEXT, IM_START, IM_END)
    + tuple(f"<|extra_{i}|>" for i in range(NUM_EXTRA))
    + (REF_START, REF_END, BOX_START, BOX_END, QUAD_START, QUAD_END, IMG_START, IMG_END, IMG_PAD)
)
# Markup that is part of the model's output language: kept by decode(skip_special_tokens=True).
MARKUP_TOKENS = frozenset({REF_START, REF_END, BOX_START, BOX_END, QUAD_START, QUAD_END})
# The only special tokens message content may contain (Qwen-VL's IMAGE_ST).
CONTENT_SPECIAL_TOKENS = MARKUP_TOKENS | {IMG_START, IMG_END, IMG_PAD}

BPE_RANKS = 151643  # ranks in qwen.tiktoken; the special tokens' ids start here
SPECIAL_TOKEN_IDS: Dict[str, int] = {token: BPE_RANKS + i for i, token in enumerate(SPECIAL_TOKENS)}

ENDOFTEXT_ID = SPECIAL_TOKEN_IDS[ENDOFTEXT]  # also the padding id
IMG_START_ID = SPECIAL_TOKEN_IDS[IMG_START]  # </img> and <imgpad> follow it
# Where generation stops, as Qwen-VL-Chat's chat(): its stop words <|im_end|> and <|im_start|>
# (qwen_generation_utils.get_stop_words_ids, "chatml") and its generation_config's eos <|endoftext|>.
CHAT_STOP_IDS = (SPECIAL_TOKEN_IDS[IM_END], SPECIAL_TOKEN_IDS[IM_START], ENDOFTEXT_ID)

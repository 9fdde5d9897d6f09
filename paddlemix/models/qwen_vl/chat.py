"""One chat turn with Qwen-VL-Chat: ChatML prompt, the image(s) it names, greedy or sampled reply.

The prompt ids come from :func:`paddlemix.processors.conversation.encode_prompt`, the encoding
training uses, so inference sees exactly the tokens the model was fine-tuned on (and, as Qwen-VL-Chat's
``make_context``, a question cannot close its own turn with a literal ``<|im_end|>``).
"""

from typing import List, Optional, Sequence, Tuple

from paddlemix.bird.image_tag import with_image
from paddlemix.processors.chat_template import DEFAULT_SYSTEM
from paddlemix.processors.conversation import encode_prompt

from .generation import generate_batch
from .modeling import QWenVLForCausalLM

__all__ = ["chat"]


def chat(
    model: QWenVLForCausalLM,
    tokenizer,
    image_processor,
    image_path: Optional[str],
    query: str,
    history: Optional[Sequence[Tuple[str, str]]] = None,
    system: str = DEFAULT_SYSTEM,
    max_new_tokens: int = 512,
    **generate_kwargs,
) -> Tuple[str, List[Tuple[str, str]]]:
    """Answer ``query`` about ``image_path``; returns ``(response, history)``.

    The first turn carries the image (``Picture 1: <img>path</img>``); later turns pass the returned
    ``history`` and ``image_path=None``. Every image named in the prompt is loaded with
    ``image_processor`` in order. ``generate_kwargs`` go to ``generate`` (e.g.
    ``decode_strategy="sampling", top_p=0.8``).
    """
    history = list(history or [])
    if tokenizer.image_span != model.config.image_span:
        raise ValueError(
            f"tokenizer.image_span ({tokenizer.image_span}) differs from the model's visual.n_queries "
            f"({model.config.image_span}); build the tokenizer with image_span={model.config.image_span}"
        )
    question = with_image(query, image_path) if image_path is not None else query
    ids = encode_prompt(tokenizer, question, history, system)
    paths = tokenizer.image_paths(ids)
    images = image_processor.to_tensor(paths) if paths else None
    new_ids = generate_batch(model, tokenizer, [ids], images, max_new_tokens=max_new_tokens, **generate_kwargs)[0]
    response = tokenizer.decode(new_ids, skip_special_tokens=True)
    return response, history + [(question, response)]

